"""A user's data rights: forget (gone from every file of the home, crash-safe) and export, by CLI and HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
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
from streamrec.privacy import forget_user, pending, purge_expired, unlearn
from streamrec.serving.app import create_app
from streamrec.store import Impression, open_store
from streamrec.training.continual import run_update, train_and_register

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


def test_unlearn_redoes_the_newest_update_from_its_clean_parent_instead_of_refitting(tmp_path: Path) -> None:
    home_path = tmp_path / "home"
    stream = generate(StreamConfig(users=30, items=40, events=900, seed=3))
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    with open_store(home_path) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append(events[:800])
    # Every update is promoted (the guardrail's margin is wide), so the update that learns them goes live.
    home = Home(home_path, Settings(update={"tune": False, "min_events": 10, "guardrail_epsilon": 1.0}))
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    first = train_and_register(home, config, text_model="all-MiniLM-L6-v2", progress=False)
    with open_store(home_path) as store:
        store.log.append([*planted_events(USER), *events[800:]])  # the newest offsets are the guardrail's
    second = run_update(home, progress=False)
    assert second.promoted and second.version is not None and second.version.parent == first.version
    record = forget_user(home, USER, requested_by="test")
    assert record.versions == (second.version.version,)  # the fit never saw them

    done = unlearn(home)
    registry = home.registry
    assert done.how.startswith(f"an update from {first.version}") and done.erased == [second.version.version]
    assert registry.live() == done.live and registry.get(done.live).parent == first.version
    assert [v.version for v in registry.versions()] == [first.version, done.live]
    assert registry.get(done.live).trained_from_offset == first.trained_through_offset


PSEUDONYM_KEY = "a-test-key-for-pseudonyms-0123456789"


def test_a_pseudonymised_home_never_stores_a_user_id_yet_answers_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, sim = tmp_path / "home", tmp_path / "sim"
    home.mkdir()
    (home / "streamrec.toml").write_text('[privacy]\npseudonymise_users = true\ncontext_fields = ["page"]\n')
    monkeypatch.setenv("STREAMREC_PRIVACY__PSEUDONYM_KEY", PSEUDONYM_KEY)
    assert main(["simulate", "--out", str(sim), "--users", "30", "--items", "40", "--events", "900"]) == 0
    with (sim / "events.jsonl").open("a") as events:  # the file path in: ingest
        for event in planted_events(USER):
            record = {
                **asdict(event),
                "event_id": f"e{event.timestamp}",
                "context": {"page": "home", "ip": "10.77.1.2"},
            }
            events.write(json.dumps(record) + "\n")
    assert main(["ingest", str(sim), "--home", str(home), "--quiet"]) == 0
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    train_and_register(Home.open(home), config, text_model="all-MiniLM-L6-v2", progress=False)
    with TestClient(create_app(home, api_key=KEY)) as client:
        later = {"user_id": USER, "item_id": "item-9", "event_type": "click", "context": {"ip": "10.77.1.2"}}
        assert client.post("/events", json=[later], headers=ADMIN).status_code == 200  # the HTTP path in
        answer = client.get(f"/recommend/{USER}").json()
        assert answer["source"] == "model" and answer["user_id"] == USER  # their history, by their id
        assert client.get(f"/users/{USER}/profile").json()["events_read"] == 7
        assert client.get("/search", params={"q": "item", "user_id": USER}).status_code == 200
        exported = [
            json.loads(line)
            for line in client.get(f"/admin/users/{USER}/export", headers=ADMIN).text.splitlines()
        ]
        events = exported[:-1]
        assert len(events) == 7 and {e["user_id"] for e in events} == {
            Home.open(home).settings.privacy.user_key()(USER)
        }
        assert events[0]["context"] == {"page": "home"} and events[-1]["context"] is None  # ip never kept
        client.app.state.impressions.flush()
        # Nothing of the home holds the id or the dropped context: not the log, impressions, models.
        assert files_holding(home, USER.encode()) == [] and files_holding(home, b"10.77.1.2") == []
        record = client.delete(f"/admin/users/{USER}", headers=ADMIN).json()
        assert record["events"] == 7 and record["impressions"] >= 2  # the answers shown above

    monkeypatch.setenv("STREAMREC_PRIVACY__PSEUDONYM_KEY", "another-key-of-enough-characters")
    with pytest.raises(ValueError, match="not the key this store's user ids were pseudonymised with"):
        Home.open(home).open_store()
    monkeypatch.delenv("STREAMREC_PRIVACY__PSEUDONYM_KEY")
    (home / "streamrec.toml").write_text("")
    with pytest.raises(ValueError, match="this store's user ids are pseudonymised"):
        Home.open(home).open_store()
    with pytest.raises(ValueError, match="pseudonym_key: required when pseudonymise_users"):
        Settings(privacy={"pseudonymise_users": True})
    plain = make_home(tmp_path / "plain")  # events stored under plain ids: switching on would split them
    (plain / "streamrec.toml").write_text("[privacy]\npseudonymise_users = true\n")
    monkeypatch.setenv("STREAMREC_PRIVACY__PSEUDONYM_KEY", PSEUDONYM_KEY)
    assert main(["stats", "--home", str(plain)]) == 2


def test_retention_purges_expired_events_and_impressions_and_asks_no_unlearning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = make_home(tmp_path / "home")
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    live = train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    assert main(["purge", "--home", str(home)]) == 2  # neither --days nor retention_days: what expires?
    (home / "streamrec.toml").write_text("[privacy]\nretention_days = 30\n")
    cutoff = 1.7e9 + 3  # planted events 0, 1, 2 are older
    with open_store(home) as store:
        expired = [e for e in store.log.read_after(0) if e.event.timestamp < cutoff]
        kept = [e.offset for e in store.log.read_after(0) if e.event.timestamp >= cutoff]
    assert len(expired) >= 3

    record = purge_expired(Home.open(home), now=cutoff + 30 * 86_400)
    assert record is not None and record.requested_by == "retention"
    assert (record.events, record.impressions, record.versions) == (len(expired), 1, (live.version,))
    with open_store(home) as store:
        assert [e.offset for e in store.log.read_after(0)] == kept  # the others keep their offsets
        assert [r.request_id for r in store.log.forget_records()] == [record.request_id]
        assert pending(store, Home.open(home).registry) == ([], None)  # a purge erases no version
    assert purge_expired(Home.open(home), now=cutoff + 30 * 86_400) is None  # nothing more had expired
    assert main(["purge", "--home", str(home)]) == 0  # now: every event is years older than 30 days
    assert f"purged {len(kept):,} events" in capsys.readouterr().out


def test_a_version_whose_reranker_read_its_holdout_counts_as_trained_on_it() -> None:
    from streamrec.registry import VersionInfo

    plain = VersionInfo("v0001", 0.0, "live", 40)
    shipped = VersionInfo("v0002", 0.0, "live", 40, reranker={"enabled": True, "read_through_offset": 55})
    unshipped = VersionInfo("v0003", 0.0, "live", 40, reranker={"enabled": False, "read_through_offset": 55})
    older = VersionInfo("v0004", 0.0, "live", 40, reranker={"enabled": True})  # no span noted: any
    assert [v.learned_through_offset for v in (plain, shipped, unshipped)] == [40, 55, 40]
    assert older.learned_through_offset > 10**15
