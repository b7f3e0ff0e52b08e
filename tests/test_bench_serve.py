"""``bench serve`` end to end on a tiny home: a real server process, real HTTP, one second per phase."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamrec.bench.serve import run_serve_benchmark
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.continual import train_and_register


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bench-serve-home")
    stream = generate(StreamConfig(users=30, items=40, events=600, seed=3))
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    config = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=10, epochs=1)
    train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    return home


def test_home_without_model_is_a_clear_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "home"):
        pass
    with pytest.raises(ValueError, match="streamrec train"):
        run_serve_benchmark(tmp_path / "home", duration=1, concurrency=1, out=tmp_path / "serve.json")


def test_serve_benchmark_smoke(tiny_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "serve.json"
    with open_store(tiny_home) as store:
        events_before = store.stats()["events"]
    result = run_serve_benchmark(
        tiny_home, duration=1.0, concurrency=4, out=out, event_batch=50, freshness_probes=5, command="test"
    )
    written = json.loads(out.read_text())
    assert written == result
    assert out.with_suffix(".png").stat().st_size > 0
    for key in (
        "benchmark",
        "command",
        "home_stats",
        "model_version",
        "duration_s",
        "concurrency",
        "recommend",
        "events",
        "freshness_ms_p50",
        "freshness_ms_p95",
        "client_cpu_seconds",
        "client_cpu_note",
        "machine",
    ):
        assert key in result, key
    assert result["home_stats"]["events"] == events_before
    assert result["model_version"] == "v0001"
    rec, ev = result["recommend"], result["events"]
    assert rec["errors"] == 0 and rec["requests"] > 0 and rec["rps"] > 0, rec
    assert rec["p50_ms"] <= rec["p95_ms"] <= rec["p99_ms"]
    assert ev["errors"] == 0 and ev["batches"] > 0 and ev["events_per_s"] > 0, ev
    fresh = result["freshness"]
    assert fresh["probes"] == 5 and fresh["errors"] == 0 and fresh["unreflected"] == 0, fresh
    assert 0 < result["freshness_ms_p50"] <= result["freshness_ms_p95"]
    assert set(result["client_cpu_seconds"]) == {"recommend", "events", "freshness"}
    # The server process is gone and the real home's log is untouched (the run used a copy).
    assert result["server"]["stopped"]
    assert result["server"]["pid"] is not None
    with pytest.raises(ProcessLookupError):
        os.kill(result["server"]["pid"], 0)
    with open_store(tiny_home) as store:
        assert store.stats()["events"] == events_before
