"""A user's data rights: forget (gone from every file of the home, crash-safe) and export, by CLI and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streamrec.cli import main
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import Event, EventSchema
from streamrec.faults import CRASH_AT, FORGET_CRASH_POINT
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving.app import create_app
from streamrec.store import Impression, open_store
from streamrec.training.continual import train_and_register

KEY = "privacy-test-key"
ADMIN = {"X-API-Key": KEY}
USER = "forget-me-7f3a9c"  # distinctive, so a byte search of the home's files finds nothing else


def planted_events(user: str, n: int = 6) -> list[Event]:
    return [
        Event(user, f"item-{i}", "view", 1.7e9 + i, None, f"{user}-event-{i}", {"page": "home"})
        for i in range(n)
    ]


def make_home(folder: Path, user: str = USER) -> Path:
    stream = generate(StreamConfig(users=30, items=40, events=900, seed=3))
    schema = EventSchema()
    with open_store(folder) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
        store.log.append(planted_events(user))
        store.impressions.append(
            [Impression(f"{user}-shown", 1.7e9, user, "v0001", "recommend", ("item-1",))]
        )
    return folder


def files_holding(home: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_forget_leaves_no_trace_in_any_file_and_export_shows_what_was_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = make_home(tmp_path / "home")
    assert main(["export-user", USER, "--home", str(home)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["kind"] for line in lines] == ["event"] * 6 + ["derived"]
    assert lines[0]["event_id"] == f"{USER}-event-0" and lines[0]["context"] == {"page": "home"}
    derived = lines[-1]
    assert derived["events"] == 6 and derived["event_types"] == {"view": 6}
    assert derived["recent_items"][0] == "item-5" and derived["top_categories"]
    assert files_holding(home, USER.encode())  # before: the store file holds them

    assert main(["forget", USER, "--home", str(home), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["events"], record["impressions"]) == (6, 1) and record["versions"] == []
    assert record["requested_by"].startswith("cli:")
    # Searched by user id and by event id (which embeds it) in every file of the home, WAL included.
    assert files_holding(home, USER.encode()) == []
    assert files_holding(home, b"-event-3") == []
    with open_store(home) as store:
        assert store.log.user_events(USER) == [] and store.impressions.get(f"{USER}-shown") is None
        assert (store.log.last_offset(), store.stats()["events"]) == (906, 900)
        assert [r.request_id for r in store.log.forget_records()] == [record["request_id"]]
        assert store.database.query("PRAGMA integrity_check") == [("ok",)]  # type: ignore[attr-defined]
    assert main(["export-user", USER, "--home", str(home)]) == 2
    assert "no events of user" in capsys.readouterr().err


def test_a_forget_killed_inside_its_transaction_leaves_the_before_state(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    command = [sys.executable, "-m", "streamrec.cli", "forget", USER, "--home", str(home)]
    killed = subprocess.run(command, env={**os.environ, CRASH_AT: FORGET_CRASH_POINT}, capture_output=True)
    assert killed.returncode == -9, (
        killed.stderr
    )  # SIGKILL at the point: the events were deleted, uncommitted
    with open_store(home) as store:
        assert len(store.log.user_events(USER)) == 6 and store.impressions.get(f"{USER}-shown") is not None
        assert store.log.forget_records() == []
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0 and "forgot" in done.stdout, done.stderr
    with open_store(home) as store:
        assert store.log.user_events(USER) == [] and len(store.log.forget_records()) == 1


def test_the_api_forgets_and_exports_and_names_the_versions_trained_on_them(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    live = train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    with TestClient(create_app(home, api_key=KEY)) as client:
        assert client.get(f"/recommend/{USER}").json()["source"] == "model"
        exported = client.get(f"/admin/users/{USER}/export", headers=ADMIN)
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in exported.text.splitlines()]
        assert len(lines) == 7 and lines[-1]["kind"] == "derived"
        assert client.delete(f"/admin/users/{USER}").status_code == 401  # admin only
        record = client.delete(f"/admin/users/{USER}", headers=ADMIN).json()
        assert record["events"] == 6 and record["versions"] == [live.version]
        assert client.get(f"/admin/users/{USER}/export", headers=ADMIN).status_code == 404
        # Their next request starts from nothing: no history, so the popular items.
        assert client.get(f"/recommend/{USER}").json()["source"] == "trending"


def test_unlearn_refits_without_them_and_erases_every_version_that_saw_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = make_home(tmp_path / "home")
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    settings = Home(home, Settings())
    first = train_and_register(settings, config, text_model="all-MiniLM-L6-v2", progress=False)
    second = train_and_register(settings, config, text_model="all-MiniLM-L6-v2", progress=False)
    assert main(["forget", USER, "--home", str(home), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == [first.version, second.version]

    assert main(["unlearn", "--home", str(home), "--quiet"]) == 0
    assert "erased v0001, v0002" in capsys.readouterr().out
    registry = settings.registry
    assert [v.version for v in registry.versions()] == ["v0003"] and registry.live() == "v0003"
    assert registry.get("v0003").trained_through_offset == 900  # the newest event left in the log
    with pytest.raises(LookupError):
        registry.rollback()  # nothing that saw them can come back
    assert main(["unlearn", "--home", str(home)]) == 0
    assert "no stored model version holds" in capsys.readouterr().out
