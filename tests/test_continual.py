"""Guarded incremental updates on a real home: offsets, guardrail, drift, crashes, registry, worker, HTTP."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.registry import ITEMS_FILE, VERSION_FILE, Registry
from streamrec.serving.app import create_app
from streamrec.store import open_store
from streamrec.training import continual
from streamrec.training.continual import UpdateInProgress, run_update, update_lock
from streamrec.training.cost import REFIT_PACE
from streamrec.training.fit import MODELS_DIR, prepare, train_and_register
from streamrec.training.tuning import UPDATE_GRID, choose
from streamrec.training.worker import Trigger

STREAM = StreamConfig(users=80, items=120, events=4000, seed=11)
FIRST = 2500  # events in the log when the first version trains
MODEL = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=3, batch_size=64)
SETTINGS = Settings(update_epochs=1, replay_users=20, full_refit_epochs=2, update_min_events=10)
KEY = "k"


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose live version learned the first FIRST events; the rest arrived after it."""
    home = tmp_path_factory.mktemp("continual-home")
    stream = generate(STREAM)
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append(events[:FIRST])
        train_and_register(store, home, MODEL, text_model="unused", progress=False)
        store.log.append(events[FIRST:])
    return home


def registry_of(home: Path) -> Registry:
    return Registry(home / MODELS_DIR)


def test_update_learns_only_the_events_after_the_live_offset(home: Path, monkeypatch) -> None:
    seen = {}
    real_update = continual.update

    def spy(model, data, config, **kwargs):
        seen["learned"] = int(sum(int(m.sum()) for m in data.learn))
        seen["events"] = int(sum(len(s) for s in data.sequences))
        return real_update(model, data, config, **kwargs)

    monkeypatch.setattr(continual, "update", spy)
    with open_store(home) as store:
        outcome = run_update(store, home, SETTINGS, strategy="finetune", progress=False)
    version = outcome.version
    assert version is not None
    holdout = int((STREAM.events - FIRST) * SETTINGS.holdout_fraction)
    assert version.parent == "v0001"
    assert version.trained_from_offset == FIRST
    assert version.trained_through_offset == STREAM.events - holdout
    assert seen == {"learned": STREAM.events - holdout - FIRST, "events": STREAM.events - holdout}
    assert version.guardrail["examples"] > 0
    assert version.guardrail["holdout_offsets"] == [STREAM.events - holdout + 1, STREAM.events]
    assert 0 < version.update["changed_fraction"] <= 1


def test_an_earlier_cut_of_the_prepared_log_equals_preparing_it_again(home: Path) -> None:
    cut, start = FIRST + 1000, FIRST
    with open_store(home) as store:
        whole = prepare(store, learn_after=cut)
        reread = prepare(store, cut, vocabulary=whole.items, learn_after=start)
    sliced = whole.through(cut, learn_after=start)
    assert (sliced.users, sliced.items, sliced.through_offset) == (reread.users, reread.items, cut)
    for field in ("sequences", "timestamps", "event_types", "values", "learn"):
        left, right = getattr(sliced.data, field), getattr(reread.data, field)
        assert len(left) == len(right) and all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(left, right, strict=True)
        ), field
    assert sum(int(m.sum()) for m in sliced.data.learn) == cut - start


def test_a_passing_candidate_goes_live_and_the_next_update_starts_from_it(home: Path) -> None:
    relaxed = dataclasses.replace(SETTINGS, guardrail_epsilon=1.0)  # any candidate passes
    with open_store(home) as store:
        first = run_update(store, home, relaxed, strategy="replay-distill", progress=False)
        assert first.promoted and registry_of(home).live() == first.version.version
        second = run_update(store, home, relaxed, strategy="adapter", progress=False)
    assert second.version.parent == first.version.version
    assert second.version.trained_from_offset == first.version.trained_through_offset
    assert second.version.update["trainable_fraction"] < 1.0


def test_a_rejected_candidate_never_becomes_live(home: Path) -> None:
    strict = dataclasses.replace(SETTINGS, guardrail_epsilon=-1.0)  # must beat live by 1.0 NDCG: impossible
    with open_store(home) as store:
        outcome = run_update(store, home, strict, strategy="finetune", progress=False)
    registry = registry_of(home)
    assert not outcome.promoted
    assert outcome.version.status == "rejected" and "worse than live" in outcome.version.notes
    assert registry.live() == "v0001"
    assert registry.get("v0001").status == "live"


def test_an_update_budget_caps_the_update_at_a_share_of_a_refits_time(home: Path) -> None:
    pace = registry_of(home).get("v0001").timings[REFIT_PACE]  # recorded by the first fit
    assert pace > 0
    tiny = dataclasses.replace(SETTINGS, update_epochs=3, update_budget=1e-9)  # no time for a 2nd epoch
    with open_store(home) as store:
        outcome = run_update(store, home, tiny, strategy="replay", progress=False)
    assert outcome.version.update["epochs"] == 1
    assert outcome.version.timings[REFIT_PACE] == pace  # carried along, so pruning never loses it


def test_an_update_budget_needs_a_timed_fit_and_a_share(home: Path) -> None:
    meta = home / MODELS_DIR / "v0001" / VERSION_FILE
    info = json.loads(meta.read_text())
    del info["timings"][REFIT_PACE]  # as a registry written before the pace was recorded
    meta.write_text(json.dumps(info))
    budgeted = dataclasses.replace(SETTINGS, update_budget=0.2)
    with open_store(home) as store, pytest.raises(ValueError, match=r"^update_budget: no fit"):
        run_update(store, home, budgeted, progress=False)
    with pytest.raises(ValueError, match=r"^update_budget: must be in \(0, 1\]"):
        Settings(update_budget=2.0)


def test_an_unknown_update_schedule_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"^update_lr_schedule: unknown 'linear'"):
        Settings(update_lr_schedule="linear")


def test_nothing_to_learn_below_the_minimum(home: Path) -> None:
    with open_store(home) as store:
        outcome = run_update(store, home, dataclasses.replace(SETTINGS, update_min_events=10**6))
    assert outcome.version is None and "new events" in outcome.reason
    assert [v.version for v in registry_of(home).versions()] == ["v0001"]


def test_drift_turns_the_update_into_a_full_refit(home: Path) -> None:
    registry = registry_of(home)
    # a trailing level no model reaches: the live model's accuracy now reads as a collapse
    live = SASRec.load(registry.path("v0001"))
    for _ in range(2):
        registry.add(
            live.save,
            registry.items("v0001"),
            {"status": "retired", "trained_through_offset": FIRST, "guardrail": {"live_ndcg@10": 0.99}},
        )
    drifty = dataclasses.replace(SETTINGS, drift_min_examples=1)
    with open_store(home) as store:
        outcome = run_update(store, home, drifty, strategy="finetune", progress=False)
    assert outcome.version.strategy == "full"
    assert outcome.version.update["drift"] is True
    assert "drift" in outcome.reason


def test_one_update_at_a_time(home: Path) -> None:
    with update_lock(home), open_store(home) as store, pytest.raises(UpdateInProgress):
        run_update(store, home, SETTINGS, progress=False)


def _consistent(registry: Registry) -> None:
    live = registry.live()
    assert live is not None and registry.get(live).status == "live"
    for info in registry.versions():
        folder = registry.root / info.version
        for name in (VERSION_FILE, ITEMS_FILE, "model.safetensors", "network.json"):
            assert (folder / name).exists(), f"{info.version} lacks {name}"
        SASRec.load(folder)  # every version on disk loads
    assert [v.version for v in registry.versions() if v.status == "live"] == [live]


def test_a_process_killed_mid_update_leaves_the_registry_consistent(home: Path) -> None:
    settings = home / "streamrec.toml"
    settings.write_text("update_epochs = 100000\nupdate_min_events = 10\n")  # far longer than the kills
    command = [sys.executable, "-m", "streamrec.cli", "update", "--home", str(home), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.5, 2.0, 4.0):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL  # killed, not finished
        registry = registry_of(home)
        _consistent(registry)
        assert registry.live() == "v0001"
    # the lock died with the process: the next update runs to the end
    settings.write_text("update_epochs = 1\nupdate_min_events = 10\n")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    _consistent(registry_of(home))


def test_rollback_walks_back_the_promotions_and_prune_keeps_what_matters(home: Path) -> None:
    registry = registry_of(home)
    live = SASRec.load(registry.path("v0001"))
    for _ in range(4):
        info = registry.add(
            live.save, registry.items("v0001"), {"status": "candidate", "trained_through_offset": 1}
        )
        registry.promote(info.version)
    assert registry.live() == "v0005"
    assert registry.rollback().version == "v0004"
    assert registry.rollback().version == "v0003"
    assert registry.get("v0004").status == "retired" and "rolled back" in registry.get("v0004").notes
    removed = registry.prune(keep=1)
    # kept: the newest (v0005), the live one (v0003) and its rollback target (v0002)
    assert set(removed) == {"v0001", "v0004"}
    assert [v.version for v in registry.versions()] == ["v0002", "v0003", "v0005"]
    assert registry.rollback().version == "v0002"
    with pytest.raises(LookupError):
        registry.rollback()


def test_trigger_fires_on_events_or_time_whichever_first() -> None:
    trigger = Trigger(every_events=100, every_seconds=60, min_events=10, last_attempt_time=1000.0)
    assert trigger.due(live_offset=500, last_offset=599, now=1001) is None
    assert "100 new events" in trigger.due(live_offset=500, last_offset=600, now=1001)
    assert trigger.due(live_offset=500, last_offset=505, now=2000) is None  # too few for a timed update
    assert "s since the last update" in trigger.due(live_offset=500, last_offset=520, now=1061)
    trigger.attempted(last_offset=600, now=1100)  # rejected: wait for fresh events, not the same ones
    assert trigger.due(live_offset=500, last_offset=650, now=1101) is None
    assert trigger.due(live_offset=500, last_offset=700, now=1101) is not None


def test_admin_update_over_http(home: Path) -> None:
    (home / "streamrec.toml").write_text(
        "update_epochs = 1\nupdate_min_events = 10\nguardrail_epsilon = 1.0\n"
    )
    with TestClient(create_app(home, api_key=KEY)) as client:
        assert client.post("/admin/update").status_code == 401
        started = client.post("/admin/update", params={"strategy": "finetune"}, headers={"X-API-Key": KEY})
        assert started.status_code == 202, started.text
        assert client.post("/admin/update", headers={"X-API-Key": KEY}).status_code == 409
        deadline = time.monotonic() + 120
        while (status := client.get("/admin/update", headers={"X-API-Key": KEY}).json())["running"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["exit_code"] == 0, status["output"]
        assert registry_of(home).live() == "v0002"
        deadline = time.monotonic() + 10
        while client.get("/health").json()["model_version"] != "v0002":  # the watcher hot-swaps it in
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert np.isfinite(registry_of(home).get("v0002").guardrail["candidate_ndcg@10"])


def test_models_and_update_commands(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamrec.cli import main

    (home / "streamrec.toml").write_text(
        "update_epochs = 1\nupdate_min_events = 10\nguardrail_epsilon = 1.0\n"
    )
    assert main(["models", "rollback", "--home", str(home)]) == 2
    assert "no earlier live version" in capsys.readouterr().err
    assert main(["update", "--home", str(home), "--strategy", "replay", "--quiet"]) == 0
    assert "v0002 (replay): promoted, now live" in capsys.readouterr().out
    assert main(["models", "list", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert "v0001    retired" in listing and "v0002    live" in listing
    assert main(["models", "show", "--home", str(home)]) == 0
    assert '"parent": "v0001"' in capsys.readouterr().out
    assert main(["models", "promote", "v0009", "--home", str(home)]) == 2
    assert "no model version 'v0009'" in capsys.readouterr().err
    assert main(["models", "rollback", "--home", str(home)]) == 0
    assert registry_of(home).live() == "v0001"


def test_tune_update_command_suggests_the_best_settings(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.cli import main

    (home / "streamrec.toml").write_text("update_epochs = 1\nreplay_users = 20\nfull_refit_epochs = 2\n")
    assert main(["tune-update", "--home", str(home), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    decided, first_close = choose(summary["candidates"], tolerance=0.01)  # the rule, on what it printed
    assert summary["decided"] == decided
    assert summary["chosen"] == first_close["settings"] and len(summary["candidates"]) == len(UPDATE_GRID)
    assert summary["tolerance"] == 0.01
    assert main(["tune-update", "--home", str(home)]) == 0
    printed = capsys.readouterr().out
    assert "within 1% of the best" in printed
    assert "learned per update (the worker's: 10,000)" in printed  # a short log: sixths of it
    toml_keys = ("update_epochs", "update_lr", "update_batch_size", "new_item_lr_scale", "replay_share")
    for key in toml_keys:
        assert f"\n{key} = " in printed, key
    assert main(["tune-update", "--home", str(home), "--budget", "0.2"]) == 0
    assert "an update takes about 20% of a refit's compute" in capsys.readouterr().out
    assert main(["tune-update", "--home", str(home), "--budget", "2"]) == 2
    assert "budget: must be in (0, 1]" in capsys.readouterr().err
    assert main(["tune-update", "--home", str(home / "missing")]) == 2
    assert "no streamrec home" in capsys.readouterr().err
