"""``bench serve`` end to end on a tiny home: a real server process, real HTTP, 1–2 s per phase.

Once with the Python client (as on a machine without wrk), once with wrk, two server processes
and a promotion during the load; each run must report every phase with no error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamrec.bench.load_wrk import wrk_binary
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


PHASE_FIELDS = (
    "requests_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "errors_non_2xx",
    "errors_socket",
    "requests",
    "seconds",
    "server_cpu_seconds",
    "server_cpu_cores",
    "generator_cpu_seconds",
    "generator_cpu_cores",
    "cache_hits",
    "cache_misses",
)


def check_result(result: dict, out: Path, *, generator: str, workers: int) -> None:
    """What every run must report: the generator, the workers, each phase's figures, no errors."""
    assert json.loads(out.read_text()) == result
    assert out.with_suffix(".png").stat().st_size > 0
    assert result["load_generator"] == generator
    assert result["workers"] == result["server"]["workers"] == workers
    assert result["server"]["processes"] >= workers
    assert result["model_version"] == "v0001"
    for name in ("mixed", "fresh", "events"):
        phase = result[name]
        for key in PHASE_FIELDS:
            assert phase[key] is not None, (name, key)
        assert phase["errors"] == 0 and phase["requests"] > 0 and phase["requests_per_s"] > 0, (name, phase)
        assert phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"], (name, phase)
        assert phase["server_cpu_seconds"] > 0 and phase["generator_cpu_seconds"] > 0, (name, phase)
    assert result["mixed"]["after_event_share"] == 0.1 and result["fresh"]["after_event_share"] == 1.0
    # Every fresh GET follows an accepted event of its user: the result cache never answers one.
    fresh = result["fresh"]
    assert fresh["cache_hits"] == 0 and fresh["cache_misses"] >= fresh["requests"], fresh
    assert fresh["events_posted"] >= fresh["requests"], fresh
    assert result["events"]["events_per_s"] > 0 and result["events"]["batch_size"] == 50
    probes = result["freshness"]
    assert probes["probes"] == 5 and probes["errors"] == 0 and probes["unreflected"] == 0, probes
    assert 0 < result["freshness_ms_p50"] <= result["freshness_ms_p95"]
    # The server's processes are gone.
    assert result["server"]["stopped"]
    with pytest.raises(ProcessLookupError):
        os.kill(result["server"]["pid"], 0)


def test_serve_benchmark_python_generator(
    tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamrec.bench.serve.wrk_binary", lambda: None)  # as if wrk were absent
    out = tmp_path / "results" / "serve.json"
    with open_store(tiny_home) as store:
        events_before = store.stats()["events"]
    result = run_serve_benchmark(
        tiny_home,
        duration=1.0,
        concurrency=4,
        out=out,
        event_batch=50,
        freshness_probes=5,
        profile=True,
        command="test",
    )
    check_result(result, out, generator="python", workers=1)
    # py-spy sampled the server in both recommend phases; its stacks sort into stages.
    for phase in ("mixed", "fresh"):
        profile = result[phase]["profile"]
        assert profile["samples"] > 0 and abs(sum(profile["stages"].values()) - 1) < 0.01, profile
        assert {"model", "runtime", "store", "top-k"} & set(profile["stages"]), profile
    assert "profile" not in result["events"]
    assert "no wrk binary" in result["load_generator_note"]
    assert result["home_stats"]["events"] == events_before
    assert result["promotion"] is None
    # The real home's log is untouched (the run used a copy).
    with open_store(tiny_home) as store:
        assert store.stats()["events"] == events_before


@pytest.mark.slow  # most of its ~35 s is two server processes starting on a busy 2-core box
@pytest.mark.skipif(
    wrk_binary() is None, reason="no wrk binary on PATH (scripts/install_servers.sh installs it: apt-get)"
)
def test_serve_benchmark_wrk_two_workers_promotion(tiny_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    # wrk's keep-alive connections may all sit on the worker the promotion did not reach; that one
    # follows the live pointer within its 1 s poll plus a model load, so the phase runs 4 s with
    # the promotion at 2 s (a 2 s phase once ended on a busy CI machine before any new answer).
    result = run_serve_benchmark(
        tiny_home,
        duration=4.0,
        concurrency=4,
        out=out,
        event_batch=50,
        freshness_probes=5,
        workers=2,
        promote_during=True,
        command="test",
    )
    check_result(result, out, generator="wrk", workers=2)
    assert result["load_generator_note"] is None
    assert result["load_generator_detail"].startswith("wrk")
    # A copy of v0001 was promoted halfway through the mixed phase; no request failed.
    promotion = result["promotion"]
    assert promotion["version"] == "v0002" and promotion["previous"] == "v0001", promotion
    assert promotion["status"] == 200 and promotion["failed_requests"] == 0, promotion
    assert promotion["every_worker_serves_it"], promotion
    assert promotion["first_new_answer_after_s"] is not None, promotion
    with pytest.raises(KeyError):  # the copy went into the temporary home only
        Home(tiny_home, Settings()).registry.get("v0002")


def test_wrk_asked_but_missing_is_a_clear_error(
    tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamrec.bench.serve.wrk_binary", lambda: None)
    with pytest.raises(ValueError, match="apt-get install wrk"):
        run_serve_benchmark(
            tiny_home, duration=1, concurrency=1, out=tmp_path / "s.json", load_generator="wrk"
        )
