"""Crash drills for the model registry (issue #20): SIGKILL ``streamrec update`` at every crash point.

For each point of ``streamrec.faults.CRASH_POINTS``, ``--kills`` times: copy a small trained home,
run ``streamrec update`` with ``STREAMREC_CRASH_AT`` set to the point, and check that it died by
SIGKILL, that it left the trace of a kill at that point (so the drill reached the write), that the
registry is consistent once opened, and that the next update runs to the end and keeps it so::

    .venv/bin/python scripts/crash_drill.py --kills 20 --out results/crash-drill.json

``tests/test_registry_crash.py`` runs the same functions with one kill per point. A fresh copy per
kill, because a promoted update leaves fewer new events for the next one. The update after each
kill runs in a child process like the killed one; ``--in-process`` runs it in this process instead
(the same ``run_update``, without a second torch import per kill: about half the drill's time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from streamrec.config import Settings, UpdateSettings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.faults import CRASH_AT, CRASH_POINTS
from streamrec.home import MODELS_DIR, Home
from streamrec.items import validate_item
from streamrec.models.sasrec import NETWORK_FILE, SASRec, SASRecConfig
from streamrec.registry import ITEMS_FILE, LIVE_FILE, VERSION_FILE, Registry
from streamrec.store import open_store
from streamrec.training.continual import run_update, train_and_register

STREAM = StreamConfig(users=80, items=120, events=4000, seed=11)
FIRST = 2500  # events in the log when the live version trains; the rest are the update's to learn
MODEL = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=3, batch_size=64)
SETTINGS = Settings(update=UpdateSettings(epochs=1, replay_users=20, full_epochs=2, min_events=10))
# keep_versions = 1: every update prunes; guardrail_epsilon = 1: every candidate is promoted,
# so each update reaches all four points.
TOML = "keep_versions = 1\n\n[update]\nepochs = 1\nmin_events = 10\nguardrail_epsilon = 1.0\n"
FILLERS = 2  # rejected versions beside the live one, for prune to delete
UPDATE_TIMEOUT = 300


def build_home(path: Path) -> Path:
    """A home: v0001 live (first FIRST events), FILLERS rejected versions, new events to learn."""
    stream = generate(STREAM)
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    with open_store(path) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append(events[:FIRST])
    train_and_register(Home(path, SETTINGS), MODEL, text_model="unused", progress=False)
    registry = Registry(path / MODELS_DIR)
    live = SASRec.load(registry.path("v0001"))
    for _ in range(FILLERS):
        info = {"status": "rejected", "trained_through_offset": FIRST, "notes": "crash drill filler"}
        registry.add(live.save, registry.items("v0001"), info)
    with open_store(path) as store:
        store.log.append(events[FIRST:])
    (path / "streamrec.toml").write_text(TOML)
    return path


def update(home: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """``streamrec update`` in a child process, killed at ``crash_at`` if given."""
    env = {key: value for key, value in os.environ.items() if key != CRASH_AT}
    env["OMP_NUM_THREADS"] = "1"  # tiny model, 2-core box: one thread is fastest
    if crash_at:
        env[CRASH_AT] = crash_at
    command = [sys.executable, "-m", "streamrec.cli", "update", "--home", str(home), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=UPDATE_TIMEOUT)


def next_update(home: Path, *, in_process: bool = False) -> str | None:
    """The update after a crash: None when it ran to the end, else what went wrong."""
    if in_process:
        try:
            run_update(Home.open(home), progress=False)
        except Exception as error:  # any failure is the finding
            return repr(error)
        return None
    done = update(home)
    return None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-2000:]}"


def _stored_statuses(models: Path) -> dict[str, str]:
    """Each version's status as its version.json says, read without opening (and repairing) the registry."""
    return {
        meta.parent.name: json.loads(meta.read_text())["status"]
        for meta in sorted(models.glob(f"v[0-9]*/{VERSION_FILE}"))
    }


def _pointer(models: Path) -> dict[str, Any]:
    return json.loads((models / LIVE_FILE).read_text())


def left_a_trace(point: str, models: Path, before: list[str]) -> bool:
    """Whether the registry, not yet reopened, shows the kill at ``point`` (the drill reached it)."""
    statuses = _stored_statuses(models)
    if point == "after-training":  # nothing written yet
        return list(statuses) == before and not list(models.glob(".staging-*"))
    if point == "add-mid-copy":  # a staging folder with weights but no version.json, no new version
        staged = list(models.glob(".staging-*"))
        return list(statuses) == before and len(staged) == 1 and not (staged[0] / VERSION_FILE).exists()
    if point == "promote-after-pointer":  # the pointer names the new version, still a candidate
        live = _pointer(models)["version"]
        return live not in before and statuses[live] == "candidate"
    if point == "prune-mid-delete":  # one old version gone, another still there
        return len(set(before) - set(statuses)) == 1
    raise ValueError(f"unknown crash point {point!r} (known: {', '.join(CRASH_POINTS)})")


def problems(models: Path) -> list[str]:
    """What is wrong with the registry once opened (opening repairs a crash); empty when consistent."""
    registry = Registry(models)
    found = [f"left behind: {path.name}" for path in models.glob(".*-*") if path.is_dir()]
    pointer = _pointer(models)
    statuses = _stored_statuses(models)
    marked_live = [version for version, status in statuses.items() if status == "live"]
    if marked_live != [pointer["version"]]:
        found.append(f"{LIVE_FILE} names {pointer['version']}, version.json files mark {marked_live} live")
    if [(v.version, v.status) for v in registry.versions()] != list(statuses.items()):
        found.append("Registry.versions() disagrees with the version.json files")
    stack = pointer.get("previous", [])
    if stack and stack[-1] not in statuses:
        found.append(f"the rollback target {stack[-1]} was deleted")
    for folder in sorted(models.glob("v[0-9]*")):
        missing = [name for name in (VERSION_FILE, ITEMS_FILE, NETWORK_FILE) if not (folder / name).exists()]
        if missing:
            found.append(f"{folder.name} lacks {', '.join(missing)}")
            continue
        try:
            SASRec.load(folder)
        except Exception as error:  # any failure to load is the finding
            found.append(f"{folder.name} does not load: {error!r}")
    return found


def drill_once(template: Path, scratch: Path, point: str, *, in_process: bool = False) -> dict[str, Any]:
    """Kill one update of a fresh copy of ``template`` at ``point``; what happened and what is wrong."""
    home = scratch / f"home-{point}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home, ignore=shutil.ignore_patterns("*-shm"))
    models = home / MODELS_DIR
    before = list(_stored_statuses(models))
    crashed = update(home, point)
    outcome: dict[str, Any] = {
        "killed": crashed.returncode == -signal.SIGKILL,
        "reached": left_a_trace(point, models, before),
        "after_crash": problems(models),
    }
    failure = next_update(home, in_process=in_process)
    outcome["next_update_ok"] = failure is None
    outcome["after_next_update"] = problems(models)
    outcome["consistent"] = (
        outcome["killed"]
        and outcome["reached"]
        and outcome["next_update_ok"]
        and not outcome["after_crash"]
        and not outcome["after_next_update"]
    )
    if not outcome["killed"]:
        outcome["crash_run"] = f"exit {crashed.returncode}: {crashed.stderr[-2000:]}"
    if failure:
        outcome["next_run"] = failure
    shutil.rmtree(home, ignore_errors=True)
    return outcome


def drill(template: Path, scratch: Path, kills: int, *, in_process: bool = False) -> dict[str, Any]:
    """``kills`` kills at each point: per point, how many were killed, reached, consistent, recovered."""
    summary: dict[str, Any] = {}
    for point in CRASH_POINTS:
        outcomes = [drill_once(template, scratch, point, in_process=in_process) for _ in range(kills)]
        summary[point] = {
            "kills": kills,
            "killed_by_sigkill": sum(o["killed"] for o in outcomes),
            "reached_the_point": sum(o["reached"] for o in outcomes),
            "consistent_after_crash": sum(not o["after_crash"] for o in outcomes),
            "next_update_ran_to_the_end": sum(o["next_update_ok"] for o in outcomes),
            "consistent_after_next_update": sum(not o["after_next_update"] for o in outcomes),
            "consistent": sum(o["consistent"] for o in outcomes),
            "failures": [o for o in outcomes if not o["consistent"]][:3],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per crash point")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    parser.add_argument(
        "--in-process", action="store_true", help="run the update after each kill in this process"
    )
    args = parser.parse_args()
    os.environ.pop(CRASH_AT, None)  # only the killed children get it
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crash-drill-") as scratch:
        template = build_home(Path(scratch) / "template")
        points = drill(template, Path(scratch), args.kills, in_process=args.in_process)
    result = {
        "command": "python " + " ".join(sys.argv),
        "kills_per_point": args.kills,
        "next_update": "run_update in this process" if args.in_process else "`streamrec update` child",
        "all_consistent": all(p["consistent"] == args.kills for p in points.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "points": points,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    if not result["all_consistent"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
