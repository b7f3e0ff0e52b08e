"""Crash drills: ``streamrec update`` killed at every registry write, the server killed after a 200.

The kills land on named crash points (``streamrec.faults``), not at guessed times, so each drill
reaches the write it is about; ``scripts/crash_drill.py`` runs the same drill many times.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streamrec.faults import CRASH_POINTS
from streamrec.home import MODELS_DIR
from streamrec.registry import LIVE_FILE, VERSION_FILE, Registry
from streamrec.store import open_store

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crash_drill.py"
_spec = importlib.util.spec_from_file_location("crash_drill", SCRIPT)
assert _spec and _spec.loader
crash_drill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_drill)

KEY = "crash-drill-key"


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The drill's home: v0001 live, two rejected versions for prune, new events for an update."""
    return crash_drill.build_home(tmp_path_factory.mktemp("crash-home"))


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_an_update_killed_at_a_crash_point_leaves_a_registry_that_recovers(
    point: str, built_home: Path, tmp_path: Path
) -> None:
    outcome = crash_drill.drill_once(built_home, tmp_path, point)  # the next update: `streamrec update`
    assert outcome["killed"], outcome  # returncode -9: died at the point, did not finish
    assert outcome["reached"], outcome  # the registry shows the kill at that write
    assert outcome["after_crash"] == [], outcome  # once opened: one live version, the pointer's, ...
    assert outcome["next_update_ok"], outcome  # `streamrec update` exits 0 afterwards
    assert outcome["after_next_update"] == [], outcome
    assert outcome["consistent"]


def _fake_version(folder: Path) -> None:
    (folder / "weights").write_text("w")


def _stored(models: Path, version: str) -> dict:
    return json.loads((models / version / VERSION_FILE).read_text())


def test_opening_repairs_what_a_crashed_writer_left_and_prune_keeps_the_pointers_versions(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path)
    for _ in range(4):
        registry.add(_fake_version, ["i1"], {"status": "candidate", "trained_through_offset": 1})
    registry.promote("v0001")
    registry.promote("v0002")
    # a kill between promote's pointer and its statuses: live.json names v0003, v0002 is marked live
    (tmp_path / LIVE_FILE).write_text(json.dumps({"version": "v0003", "previous": ["v0001", "v0002"]}))
    # a kill mid-add and one mid-prune
    (tmp_path / ".staging-dead").mkdir()
    (tmp_path / ".deleting-v0009-dead").mkdir()
    # readers follow the pointer before anything is repaired
    assert [(v.version, v.status) for v in registry.versions()][1:3] == [
        ("v0002", "retired"),
        ("v0003", "live"),
    ]
    assert _stored(tmp_path, "v0002")["status"] == "live"

    with (tmp_path / ".lock").open("w") as lock:  # a live writer holds the lock: its folder stays
        fcntl.flock(lock, fcntl.LOCK_EX)
        Registry(tmp_path)
        assert (tmp_path / ".staging-dead").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    Registry(tmp_path)
    assert not list(tmp_path.glob(".staging-*")) and not list(tmp_path.glob(".deleting-*"))
    stored = {v: _stored(tmp_path, v)["status"] for v in ("v0001", "v0002", "v0003", "v0004")}
    assert stored == {"v0001": "retired", "v0002": "retired", "v0003": "live", "v0004": "candidate"}
    assert "recovery" in _stored(tmp_path, "v0002")["notes"]

    assert set(registry.prune(keep=1)) == {"v0001"}  # v0003 live, v0002 its rollback target, v0004 newest
    assert registry.rollback().version == "v0002"
    with pytest.raises(ValueError, match="promote"):
        registry.set_status("v0004", "live")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_events_acknowledged_with_200_survive_a_server_killed_right_after(home: Path) -> None:
    port = _free_port()
    env = {**os.environ, "STREAMREC_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)]
    log = home.parent / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--no-worker"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"serve exited {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"serve not healthy in 120 s:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        batch = [
            {"user_id": f"drill-u{i % 7}", "item_id": f"i{i % 50}", "event_type": "click",
             "timestamp": 1_700_000_000 + i, "event_id": f"crash-drill-{i}"}
            for i in range(300)
        ]  # fmt: skip
        answer = httpx.post(
            f"http://127.0.0.1:{port}/events", json=batch, headers={"X-API-Key": KEY}, timeout=30
        )
        server.send_signal(signal.SIGKILL)  # right after the 200: nothing after the response runs
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == len(batch)
        assert server.wait(30) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    with open_store(home) as store:
        logged = store.log.read_after(answer.json()["first_offset"] - 1)
    assert [entry.event.event_id for entry in logged] == [event["event_id"] for event in batch]
    assert (home / MODELS_DIR / LIVE_FILE).exists()
