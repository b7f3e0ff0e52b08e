"""Time ``streamrec forget`` on a copy of a home: the heaviest, a median and the lightest users.

    python scripts/time_forget.py /path/to/ml1m-home > results/forget-ml-1m.json

The copy is made in a temporary folder; the home itself is not touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from streamrec.home import Home
from streamrec.privacy import forget_user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamrec-forget-") as scratch:
        copy = Path(scratch) / "home"
        shutil.copytree(args.home, copy)
        home = Home.open(copy)
        with home.open_store() as store:
            stats = store.stats()
            users = store.log.sequences().users
            counts = sorted(((len(store.log.user_events(user)), user) for user in users), reverse=True)
        picks = [counts[0], counts[1], counts[2], counts[len(counts) // 2], counts[-1]]
        timed = []
        for events, user in picks:
            started = time.perf_counter()
            record = forget_user(home, user, requested_by="scripts/time_forget.py")
            seconds = time.perf_counter() - started
            timed.append({"events": events, "seconds": round(seconds, 4), "versions": list(record.versions)})
    command = " ".join(["python", *sys.argv])
    result = {
        "command": command,
        "home_events": stats["events"],
        "home_users": stats["users"],
        "forgets": timed,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
