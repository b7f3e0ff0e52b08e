"""Named crash points: a drill sets ``STREAMREC_CRASH_AT`` and the process dies right there.

A timed SIGKILL mostly lands in training, so it never tests the registry's
writes; these points put the kill exactly between two writes, where a crash
hurts most. ``scripts/crash_drill.py`` and ``tests/test_registry_crash.py``
kill ``streamrec update`` at each of them and check what the registry recovers to.

>>> crash_point("after-training")  # STREAMREC_CRASH_AT unset: nothing happens
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "STREAMREC_CRASH_AT"

CRASH_POINTS = (
    "after-training",  # run_update: the candidate is trained, nothing written yet
    "add-mid-copy",  # Registry.add: weights in the staging folder, items and version.json not
    "promote-after-pointer",  # Registry.promote: live.json names the new version, statuses still old
    "prune-mid-delete",  # Registry.prune: the first old version deleted, the rest not yet
)

# privacy.forget_in: the user's events deleted in the open transaction, impressions and record not yet
FORGET_CRASH_POINT = "forget-mid-transaction"


def crash_point(name: str) -> None:
    """SIGKILL this process if ``STREAMREC_CRASH_AT`` names this point (one env lookup otherwise).

    SIGKILL, not an exception: no ``finally`` or ``except`` cleanup runs, as in a real crash.
    """
    if os.environ.get(CRASH_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
