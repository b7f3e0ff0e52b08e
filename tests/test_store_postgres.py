"""A home whose store is PostgreSQL: chosen by setting or ``--store``, and a server killed after a 200.

The contract itself is tested in ``test_store.py`` (one suite, every backend); these tests are
about the rest of streamrec finding and trusting a PostgreSQL store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from streamrec.cli import main
from streamrec.cli.common import STORE_VARIABLE
from streamrec.config import Settings, UpdateSettings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import MODELS_DIR, Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.registry import LIVE_FILE
from streamrec.store import open_store
from streamrec.store.postgres import scratch_schema
from streamrec.training.continual import train_and_register

KEY = "pg-drill-key"
STREAM = StreamConfig(users=40, items=60, events=1500, seed=3)
MODEL = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)


@pytest.fixture
def store_url(pg_url: str) -> Iterator[str]:
    with scratch_schema(pg_url, f"home_{uuid.uuid4().hex[:12]}") as url:
        yield url


def test_the_store_setting_and_the_store_option_put_a_homes_events_in_postgresql(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(STORE_VARIABLE, "")  # recorded, so the value --store sets is undone afterwards
    monkeypatch.delenv(STORE_VARIABLE)
    events = tmp_path / "events.jsonl"
    records = [
        {"user_id": f"u{i % 3}", "item_id": f"i{i}", "event_type": "view", "timestamp": 1_700_000_000 + i}
        for i in range(10)
    ]
    events.write_text("".join(json.dumps(record) + "\n" for record in records))
    home = tmp_path / "home"
    assert main(["ingest", str(events), "--home", str(home), "--store", store_url, "--quiet"]) == 0
    assert os.environ[STORE_VARIABLE] == store_url
    assert not (home / "streamrec.sqlite").exists()
    with open_store(store_url) as store:
        assert store.log.last_offset() == 10
    assert Home.open(home).settings.store == store_url  # the environment variable is the setting
    capsys.readouterr()
    assert main(["stats", "--home", str(home), "--store", store_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 10

    monkeypatch.delenv(STORE_VARIABLE)
    (home / "streamrec.toml").write_text(f'store = "{store_url}"\n')  # the same, from the home's file
    with Home.open(home).open_store() as store:
        assert store.stats()["users"] == 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_events_acknowledged_with_200_are_in_postgresql_once_after_the_server_is_killed(
    store_url: str, tmp_path: Path
) -> None:
    stream = generate(STREAM)
    schema = EventSchema()
    home = tmp_path / "home"
    with open_store(store_url) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    settings = Settings(store=store_url, update=UpdateSettings(tune=False))
    train_and_register(Home(home, settings), MODEL, text_model="unused", progress=False)
    assert not (home / "streamrec.sqlite").exists()

    port = _free_port()
    env = {**os.environ, "STREAMREC_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    env.pop(STORE_VARIABLE, None)
    command = [sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--store", store_url]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--port", str(port), "--no-worker"],
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
             "timestamp": 1_800_000_000 + i, "event_id": f"pg-drill-{i}"}
            for i in range(300)
        ]  # fmt: skip
        refused = httpx.post(  # what PostgreSQL cannot hold is a 422 naming it, not a 500
            f"http://127.0.0.1:{port}/events",
            json=[{"user_id": "nul\x00user", "item_id": "i1", "event_type": "click"}],
            headers={"X-API-Key": KEY},
            timeout=30,
        )
        assert refused.status_code == 422 and "NUL" in refused.json()["errors"][0]["problem"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/events", json=batch, headers={"X-API-Key": KEY}, timeout=30
        )
        server.send_signal(signal.SIGKILL)  # right after the 200: nothing after the response runs
        assert answer.status_code == 200, answer.text
        assert server.wait(30) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    acknowledged = answer.json()
    assert acknowledged["accepted"] == len(batch)
    sent = [event["event_id"] for event in batch]
    with open_store(store_url) as store:
        logged = store.log.read_after(acknowledged["first_offset"] - 1)
        assert [entry.event.event_id for entry in logged] == sent  # all of it, in order, nothing after
        assert [entry.offset for entry in logged] == list(
            range(acknowledged["first_offset"], acknowledged["last_offset"] + 1)
        )
        everything = store.log.read_after(0)
        assert sum(entry.event.event_id in set(sent) for entry in everything) == len(sent)  # once each
        resent = store.log.append([schema.validate(event) for event in batch])  # a client's retry
        assert (resent.accepted, resent.duplicates) == (0, len(batch))
    assert (home / MODELS_DIR / LIVE_FILE).exists()
    assert not (home / "streamrec.sqlite").exists()  # the server wrote to PostgreSQL only


def test_the_ingest_benchmark_reports_postgresql_beside_sqlite(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ingest.json"
    arguments = ["bench", "ingest", "--events", "3000", "--repeats", "1", "--out", str(out)]
    assert main([*arguments, "--store", pg_url]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads(out.read_text())
    assert result["command"].endswith(f"--store {pg_url}")
    assert printed["sqlite"] == result["summary"]  # SQLite's numbers stay where they always were
    assert printed["postgresql"] == result["postgresql"]["summary"]
    assert result["postgresql"]["synchronous_commit"] == "on"
    assert result["postgresql"]["summary"]["append_events_per_s"] > 0
    assert out.with_suffix(".png").exists()
    with psycopg.connect(pg_url) as conn:  # its scratch schemas are gone
        schemas = [row[0] for row in conn.execute("SELECT schema_name FROM information_schema.schemata")]
    assert not [name for name in schemas if name.startswith("streamrec_bench_")]
