"""A fit from scratch picks the update settings itself, on the newest events of the log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.config import Settings, UpdateSettings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import MODELS_DIR, Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.registry import Registry
from streamrec.store import open_store
from streamrec.training import guard
from streamrec.training.continual import run_update, train_and_register
from streamrec.training.fit import PreparedData, prepare
from streamrec.training.guard import TUNING_GRID, fit_and_tune, with_tuned

STREAM = StreamConfig(users=80, items=120, events=4000, seed=3)
FIRST = 3000
MODEL = SASRecConfig(item_tower="id", hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
# Small enough that 3,000 events leave candidates enough held-out events to be judged on.
TUNING = UpdateSettings(epochs=2, replay_users=10, budget=None, tune_min_examples=20, min_events=10)


def stream_events() -> list:
    return [EventSchema().validate(event) for event in generate(STREAM).events()]


def first_events(home: Path) -> Path:
    """A store with the first FIRST events of the stream and its catalogue."""
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in generate(STREAM).items)
        store.log.append(stream_events()[:FIRST])
    return home


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return first_events(tmp_path_factory.mktemp("tuning-log"))


def prepared_log(home: Path) -> PreparedData:
    with open_store(home) as store:
        return prepare(store)


def test_a_fit_tries_every_candidate_on_the_newest_events_and_keeps_the_best(log: Path) -> None:
    prepared = prepared_log(log)
    fitted = fit_and_tune(prepared.data, prepared.offsets, MODEL, TUNING, None)
    tuning = fitted.tuning
    fresh = int(FIRST * TUNING.tune_share)
    holdout = int(fresh * TUNING.holdout_fraction)
    assert tuning["fit_through"] == FIRST - fresh  # the base model never saw the newest events
    assert [{k: c[k] for k in TUNING_GRID[0]} for c in tuning["candidates"]] == list(TUNING_GRID)
    scores = [c["ndcg@10"] for c in tuning["candidates"]]
    assert fitted.tuned == dict(TUNING_GRID[scores.index(max(scores))])  # the first of the best
    assert fitted.metrics["ndcg@10"] == max(scores)
    # candidates with a smaller batch take more optimiser steps over the same rows
    steps = {(c["batch_size"], c["lr"]): c["steps"] for c in tuning["candidates"]}
    assert steps[(32, 2e-3)] > steps[(None, 2e-3)]
    # the result learned up to its update's holdout: the next update learns the rest
    assert fitted.trained_through == FIRST - holdout and tuning["examples"] > 0
    assert fitted.model.n_items == prepared.data.n_items


def test_settings_the_user_set_are_never_tuned(log: Path) -> None:
    prepared = prepared_log(log)
    fixed_lr = UpdateSettings.model_validate({**TUNING.model_dump(exclude_unset=True), "lr": 1e-3})
    fitted = fit_and_tune(prepared.data, prepared.offsets, MODEL, fixed_lr, None)
    assert [c["batch_size"] for c in fitted.tuning["candidates"]] == [None, 32]  # lr is not a candidate
    assert set(fitted.tuned) == {"batch_size"}
    assert with_tuned(fixed_lr, {"lr": 4e-3, "batch_size": 32}).lr == 1e-3

    both = fixed_lr.model_copy(update={"batch_size": 64})
    plain = fit_and_tune(prepared.data, prepared.offsets, MODEL, both, None)
    assert plain.tuning == {"skipped": "every tuned setting is set explicitly"}
    assert plain.tuned == {} and plain.trained_through == FIRST  # a plain refit of every event


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        (UpdateSettings(), "fewer than update.tune_min_examples"),
        (TUNING.model_copy(update={"tune": False}), "update.tune is off"),
        (TUNING.model_copy(update={"strategy": "full"}), "the update strategy is full"),
    ],
)
def test_a_fit_refits_plainly_when_tuning_cannot_or_need_not_run(
    log: Path, settings: UpdateSettings, why: str
) -> None:
    prepared = prepared_log(log)
    fitted = fit_and_tune(prepared.data, prepared.offsets, MODEL, settings, None)
    assert why in fitted.tuning["skipped"]
    assert fitted.trained_through == FIRST and "hr@10" in fitted.metrics


def test_tuned_values_do_not_count_as_set_so_the_next_fit_tunes_them_again() -> None:
    tuned = with_tuned(TUNING, {"lr": 4e-3, "batch_size": 32})
    assert (tuned.lr, tuned.batch_size) == (4e-3, 32)
    assert tuned.model_fields_set == TUNING.model_fields_set


def test_updates_run_with_the_settings_their_live_version_was_tuned_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(first_events(tmp_path), Settings(update=TUNING))
    trained = train_and_register(home, MODEL, text_model="unused", progress=False)
    assert trained.tuned and trained.update["tuning"]["chosen"] == trained.tuned
    with open_store(tmp_path) as store:
        store.log.append(stream_events()[FIRST:])

    seen = []
    real_update = guard.update

    def spy(model, data, settings, **kwargs):
        seen.append({key: getattr(settings, key) for key in trained.tuned})
        return real_update(model, data, settings, **kwargs)

    monkeypatch.setattr(guard, "update", spy)
    outcome = run_update(home, progress=False)
    assert seen == [trained.tuned]
    assert outcome.version is not None and outcome.version.tuned == trained.tuned  # carried forward
    assert Registry(tmp_path / MODELS_DIR).get(outcome.version.version).tuned == trained.tuned
    assert outcome.version.trained_from_offset == trained.trained_through_offset
    assert np.isfinite(outcome.version.guardrail["candidate_ndcg@10"])


def test_a_drift_refit_tunes_again(log: Path) -> None:
    prepared = prepared_log(log)
    first = fit_and_tune(
        prepared.data, prepared.offsets, MODEL, TUNING.model_copy(update={"tune": False}), None
    )
    drifty = TUNING.model_copy(update={"drift_min_examples": 1})
    start = FIRST // 2  # the live model, as if it had learned only the first half
    verdict = guard.guarded_update(
        first.model, prepared.data, prepared.offsets, start, drifty, trailing=[0.99] * 3
    )
    assert verdict.drift and verdict.strategy == "full"
    assert verdict.tuned == verdict.summary["tuning"]["chosen"] != {}
    # the refit learned up to its own tuning update's holdout, before the guardrail's holdout
    assert verdict.trained_through < FIRST - int((FIRST - start) * drifty.holdout_fraction)
