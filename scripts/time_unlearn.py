"""Time unlearning on a copy of a home whose live version is a fit: a user arrives, an update learns
them, they ask to be forgotten, and ``unlearn`` takes its cheaper exact path (the fit goes live and
the update is redone from it without them).

    python scripts/time_unlearn.py /path/to/ml1m-home > results/unlearn-ml-1m.json

New events: ``--arrivals`` events of existing users (a random sample of the log's items, each
given to a random user, with new ids and times after the newest), and the arriving user's,
copied from a random existing user's history. The update that learns them is promoted whatever
the guardrail says (a margin of 1.0), so that the user is in the live version. The copy is made
in a temporary folder; the home itself is not touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamrec.events import Event
from streamrec.home import Home
from streamrec.privacy import forget_user, unlearn
from streamrec.training.continual import run_update

USER = "arriving-user"


def new_events(home: Home, arrivals: int, seed: int) -> tuple[list[Event], int]:
    rng = np.random.default_rng(seed)
    with home.open_store() as store:
        logged = store.log.read_after(0)
    now = max(entry.event.timestamp for entry in logged) + 1
    users = sorted({entry.event.user_id for entry in logged})
    copied = [e.event for e in logged if e.event.user_id == users[rng.integers(len(users))]]
    theirs = [
        replace(e, user_id=USER, event_id=f"{USER}-{n}", timestamp=now + n) for n, e in enumerate(copied)
    ]
    others = [  # an item someone clicked, now clicked by another existing user
        replace(
            logged[i].event,
            user_id=users[rng.integers(len(users))],
            event_id=f"again-{n}",
            timestamp=now + len(theirs) + n,
        )
        for n, i in enumerate(rng.choice(len(logged), size=arrivals, replace=False))
    ]
    return [*theirs, *others], len(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--arrivals", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamrec-unlearn-") as scratch:
        copy = Path(scratch) / "home"
        shutil.copytree(args.home, copy)
        opened = Home.open(copy)
        home = replace(opened, settings=opened.settings.model_copy(
            update={"update": opened.settings.update.model_copy(update={"guardrail_epsilon": 1.0})}
        ))  # fmt: skip
        fit = home.registry.live()
        info = home.registry.get(fit)
        fit_record = {
            "seconds": info.timings.get("train_seconds"),
            "best_epoch": info.metrics.get("best_epoch"),
        }
        events, theirs = new_events(home, args.arrivals, args.seed)
        with home.open_store() as store:
            store.log.append(events)
        started = time.perf_counter()
        learned = run_update(home, progress=False)
        update_seconds = time.perf_counter() - started
        started = time.perf_counter()
        record = forget_user(home, USER, requested_by="scripts/time_unlearn.py")
        forget_seconds = time.perf_counter() - started
        done = unlearn(home)
        with home.open_store() as store:
            stats = store.stats()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "home_events": stats["events"],
        "live_before": fit,
        "live_before_fit": fit_record,  # what a refit of this home costs, for comparison
        "new_events": len(events),
        "arriving_user_events": theirs,
        "update_that_learned_them": {
            "version": learned.version.version if learned.version else None,
            "promoted": learned.promoted,
            "seconds": round(update_seconds, 1),
        },
        "forget": {
            "seconds": round(forget_seconds, 3),
            "events": record.events,
            "versions": list(record.versions),
        },
        "unlearn": {"live": done.live, "how": done.how, "erased": done.erased, "seconds": done.seconds},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
