"""Guarded incremental updates on a real home: offsets, guardrail, drift, crashes, registry, worker, HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from streamrec.config import (
    SETTINGS_FILE,
    Settings,
    UpdateSettings,
    load_settings,
    settings_from,
    update_settings_with,
)
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import MODELS_DIR, Home, UpdateInProgress
from streamrec.items import validate_item
from streamrec.models.sasrec import NETWORK_FILE, SASRec, SASRecConfig
from streamrec.registry import ITEMS_FILE, VERSION_FILE, Registry
from streamrec.serving.app import create_app
from streamrec.store import open_store
from streamrec.training import guard
from streamrec.training.continual import UpdateOutcome, run_update, train_and_register
from streamrec.training.fit import prepare
from streamrec.training.guard import guarded_update
from streamrec.training.worker import Trigger, run_worker

STREAM = StreamConfig(users=80, items=120, events=4000, seed=11)
FIRST = 2500  # events in the log when the first version trains
MODEL = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=3, batch_size=64)
SETTINGS = Settings(update=UpdateSettings(epochs=1, replay_users=20, full_epochs=2, min_events=10))
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
    train_and_register(Home(home, SETTINGS), MODEL, text_model="unused", progress=False)
    with open_store(home) as store:
        store.log.append(events[FIRST:])
    return home


def registry_of(home: Path) -> Registry:
    return Registry(home / MODELS_DIR)


def with_update(settings: Settings, **changes: object) -> Settings:
    """``settings`` with these ``[update]`` settings changed (validated)."""
    return settings.model_copy(update={"update": update_settings_with(settings.update, changes)})


def update_home(home: Path, settings: Settings = SETTINGS, **options) -> UpdateOutcome:
    return run_update(Home(home, settings), progress=False, **options)


def test_update_learns_only_the_events_after_the_live_offset(home: Path, monkeypatch) -> None:
    seen = {}
    real_update = guard.update

    def spy(model, data, config, **kwargs):
        seen["learned"] = int(sum(int(m.sum()) for m in data.learn))
        seen["events"] = int(sum(len(s) for s in data.sequences))
        return real_update(model, data, config, **kwargs)

    monkeypatch.setattr(guard, "update", spy)
    outcome = update_home(home, strategy="finetune")
    version = outcome.version
    assert version is not None
    holdout = int((STREAM.events - FIRST) * SETTINGS.update.holdout_fraction)
    assert version.parent == "v0001"
    assert version.trained_from_offset == FIRST
    assert version.trained_through_offset == STREAM.events - holdout
    assert seen == {"learned": STREAM.events - holdout - FIRST, "events": STREAM.events - holdout}
    assert version.guardrail["examples"] > 0
    assert version.guardrail["holdout_offsets"] == [STREAM.events - holdout + 1, STREAM.events]
    assert 0 < version.update["changed_fraction"] <= 1
    assert version.update["new_events"] == STREAM.events - holdout - FIRST
    assert version.update["steps"] >= 1 and version.update["work"] > 0  # counted, not timed
    assert set(version.timings) == {"update_seconds", "total_seconds"}  # no pricing keys


def test_guarded_update_judges_a_candidate_on_the_newest_events_and_writes_nothing(home: Path) -> None:
    registry = registry_of(home)
    live = SASRec.load(registry.path("v0001"))
    assert live.net is not None
    before = {name: tensor.clone() for name, tensor in live.net.state_dict().items()}
    with open_store(home) as store:
        prepared = prepare(store, vocabulary=registry.items("v0001"), type_names=live.type_names)
    settings = SETTINGS.update.model_copy(update={"strategy": "finetune"})
    verdict = guarded_update(live, prepared.data, prepared.offsets, FIRST, settings, trailing=[])
    holdout = int((STREAM.events - FIRST) * settings.holdout_fraction)
    assert (verdict.trained_from, verdict.trained_through, verdict.last) == (
        FIRST,
        STREAM.events - holdout,
        STREAM.events,
    )
    assert verdict.strategy == "finetune" and not verdict.drift and verdict.examples > 0
    assert verdict.candidate is not live and verdict.summary["strategy"] == "finetune"
    # the rule: promoted unless the candidate is worse than live by more than ε
    assert verdict.promoted == (verdict.candidate_ndcg >= verdict.live_ndcg - settings.guardrail_epsilon)
    assert verdict.record()["live_ndcg@10"] == round(verdict.live_ndcg, 5)
    # a trailing level the live model still holds is no drift
    level = guarded_update(
        live, prepared.data, prepared.offsets, FIRST, settings, trailing=[verdict.live_ndcg] * 3
    )
    assert not level.drift and level.strategy == "finetune"
    # pure: the live model and the home are as they were
    assert all(torch.equal(before[name], tensor) for name, tensor in live.net.state_dict().items())
    assert [v.version for v in registry.versions()] == ["v0001"]
    with pytest.raises(ValueError, match="nothing to learn"):
        guarded_update(live, prepared.data, prepared.offsets, STREAM.events, settings, trailing=[])


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
    relaxed = with_update(SETTINGS, guardrail_epsilon=1.0)  # any candidate passes
    first = update_home(home, relaxed, strategy="replay-distill")
    assert first.promoted and registry_of(home).live() == first.version.version
    second = update_home(home, relaxed, strategy="adapter")
    assert second.version.parent == first.version.version
    assert second.version.trained_from_offset == first.version.trained_through_offset
    assert second.version.update["trainable_fraction"] < 1.0


def test_a_rejected_candidate_never_becomes_live(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ε cannot be negative, so the judge marks the candidate down by 1.0 NDCG: worse than any ε allows
    candidates = []
    real_update, real_ndcg = guard.update, guard.ndcg_at_10

    def spy(*args, **kwargs):
        result = real_update(*args, **kwargs)
        candidates.append(result.model)
        return result

    def judge(model, histories, targets):
        return real_ndcg(model, histories, targets) - (1.0 if any(model is c for c in candidates) else 0.0)

    monkeypatch.setattr(guard, "update", spy)
    monkeypatch.setattr(guard, "ndcg_at_10", judge)
    outcome = update_home(home, strategy="finetune")
    registry = registry_of(home)
    assert len(candidates) == 1 and not outcome.promoted
    assert outcome.version.guardrail["candidate_ndcg@10"] < outcome.version.guardrail["live_ndcg@10"] - 0.5
    assert outcome.version.status == "rejected" and "worse than live" in outcome.version.notes
    assert registry.live() == "v0001"
    assert registry.get("v0001").status == "live"


def test_an_update_budget_caps_the_update_at_a_counted_share_of_a_refit(home: Path) -> None:
    """The same budget always takes the same steps (no clock); without one, the epochs bound it."""
    assert SASRec.load(registry_of(home).path("v0001")).fit_epochs == MODEL.epochs  # the refit counted
    tiny = with_update(SETTINGS, epochs=3, budget=1e-9)
    unbounded = with_update(SETTINGS, epochs=3, budget=None)
    runs = [update_home(home, s, strategy="replay", promote=False).version for s in (tiny, tiny, unbounded)]
    capped, again, free = runs
    assert (capped.update["epochs"], capped.update["steps"]) == (1, 1)  # at least one step, mid-epoch
    assert (again.update["steps"], again.update["work"]) == (capped.update["steps"], capped.update["work"])
    assert free.update["epochs"] == 3 and free.update["steps"] > capped.update["steps"]
    assert free.update["work"] > capped.update["work"]
    assert registry_of(home).live() == "v0001"  # promotion off: all three started from the same live model
    assert all(v.parent == "v0001" and v.trained_from_offset == FIRST for v in runs)
    assert all(set(v.timings) == {"update_seconds", "total_seconds"} for v in runs)
    assert "refit_seconds" not in json.dumps([v.to_dict() for v in runs])  # nothing priced, nothing carried


def test_the_budget_counts_the_epochs_the_live_models_fit_ran(home: Path) -> None:
    """A refit's work is the live fit's epochs over the data; a model saved before they were
    recorded counts its config's epochs."""
    network = registry_of(home).path("v0001") / NETWORK_FILE
    meta = json.loads(network.read_text())
    share = with_update(SETTINGS, epochs=50, budget=0.5)  # the budget binds long before 50 epochs

    def steps() -> int:
        return update_home(home, share, strategy="replay", promote=False).version.update["steps"]

    recorded = steps()
    network.write_text(json.dumps({**meta, "fit_epochs": 2 * meta["fit_epochs"]}))
    doubled = steps()
    del meta["fit_epochs"]  # as written before streamrec recorded it
    network.write_text(json.dumps(meta))
    unrecorded = steps()
    assert recorded >= 2 and abs(doubled - 2 * recorded) <= 1
    assert unrecorded == recorded  # MODEL ran all its epochs, so its config counts the same


def test_update_settings_live_in_an_update_table_and_bad_ones_are_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"^settings: update\.lr_schedule: "):
        settings_from({"update": {"lr_schedule": "linear"}})
    with pytest.raises(ValueError, match=r"^settings: update\.budget: "):
        settings_from({"update": {"budget": 2.0}})
    with pytest.raises(ValidationError):
        Settings(update={"budget": 0.0})
    assert settings_from({"update": {"budget": 1.0}}).update.budget == 1.0
    (tmp_path / SETTINGS_FILE).write_text('keep_versions = 3\n[update]\nstrategy = "finetune"\nepochs = 2\n')
    loaded = load_settings(tmp_path)
    assert (loaded.keep_versions, loaded.update.strategy, loaded.update.epochs) == (3, "finetune", 2)
    assert loaded.update.budget == UpdateSettings().budget  # the rest keep their defaults
    # a flat key from before the [update] table is refused, naming it
    (tmp_path / SETTINGS_FILE).write_text("update_epochs = 1\n")
    with pytest.raises(ValueError, match=r"streamrec\.toml: update_epochs: "):
        load_settings(tmp_path)
    (tmp_path / SETTINGS_FILE).write_text('[update]\nlr_schedule = "linear"\n')
    with pytest.raises(ValueError, match=r"streamrec\.toml: update\.lr_schedule: "):
        load_settings(tmp_path)


def test_nothing_to_learn_below_the_minimum(home: Path) -> None:
    outcome = update_home(home, with_update(SETTINGS, min_events=10**6))
    assert (
        outcome.version is None and "new events" in outcome.reason and "update.min_events" in outcome.reason
    )
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
    drifty = with_update(SETTINGS, drift_min_examples=1)
    outcome = update_home(home, drifty, strategy="finetune")
    assert outcome.version.strategy == "full"
    assert outcome.version.update["drift"] is True
    assert 1 <= outcome.version.update["epochs"] <= SETTINGS.update.full_epochs  # a refit of full_epochs
    assert "drift" in outcome.reason


def test_one_update_at_a_time(home: Path) -> None:
    with Home(home, SETTINGS).update_lock(), pytest.raises(UpdateInProgress):
        update_home(home)


def test_the_worker_updates_with_the_homes_settings_and_waits_out_a_running_update(home: Path) -> None:
    relaxed = Home(home, with_update(SETTINGS, strategy="finetune", guardrail_epsilon=1.0))
    with relaxed.update_lock():
        assert run_worker(relaxed, once=True) == []  # another update holds the home: nothing done
    assert registry_of(home).live() == "v0001"
    (outcome,) = run_worker(relaxed, once=True)
    assert outcome.version.strategy == "finetune" and outcome.promoted  # the home's settings' strategy
    assert registry_of(home).live() == outcome.version.version


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
    settings.write_text("[update]\nepochs = 100000\nmin_events = 10\n")  # far longer than the kills …
    command = [sys.executable, "-m", "streamrec.cli", "update", "--home", str(home), "--quiet"]
    unbudgeted = [*command, "--set", "budget=none"]  # … with no budget to end it sooner
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.5, 2.0, 4.0):
        process = subprocess.Popen(unbudgeted, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL  # killed, not finished
        registry = registry_of(home)
        _consistent(registry)
        assert registry.live() == "v0001"
    # the lock died with the process: the next update runs to the end
    settings.write_text("[update]\nepochs = 1\nmin_events = 10\n")
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
    configured = Trigger.from_settings(with_update(SETTINGS, every_events=100, every_seconds=60).update)
    assert (configured.every_events, configured.every_seconds, configured.min_events) == (100, 60, 10)


def test_admin_update_over_http(home: Path) -> None:
    (home / "streamrec.toml").write_text("[update]\nepochs = 1\nmin_events = 10\nguardrail_epsilon = 1.0\n")
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

    (home / "streamrec.toml").write_text("[update]\nepochs = 1\nmin_events = 10\nguardrail_epsilon = 1.0\n")
    assert main(["models", "rollback", "--home", str(home)]) == 2
    assert "no earlier live version" in capsys.readouterr().err
    assert main(["update", "--home", str(home), "--set", "epoch=2", "--quiet"]) == 2  # a typo: refused
    assert "epoch" in capsys.readouterr().err and len(registry_of(home).versions()) == 1
    # the command line overrides the home's [update] settings for this run
    update = ["update", "--home", str(home), "--strategy", "replay", "--set", "epochs=2", "--budget", "1"]
    assert main([*update, "--quiet"]) == 0
    assert "v0002 (replay): promoted, now live" in capsys.readouterr().out
    assert registry_of(home).get("v0002").update["epochs"] == 2
    assert main(["models", "list", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert "v0001    retired" in listing and "v0002    live" in listing
    assert main(["models", "show", "--home", str(home)]) == 0
    assert '"parent": "v0001"' in capsys.readouterr().out
    assert main(["models", "promote", "v0009", "--home", str(home)]) == 2
    assert "no model version 'v0009'" in capsys.readouterr().err
    assert main(["models", "rollback", "--home", str(home)]) == 0
    assert registry_of(home).live() == "v0001"
