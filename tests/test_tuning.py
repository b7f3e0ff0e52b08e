"""Tuning an update's settings on past events: it keeps the setting that predicts the held-out slices best."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chains import N_ITEMS, TINY
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRecConfig
from streamrec.training.tuning import UPDATE_GRID, choose, tune_update
from streamrec.training.update import UpdateConfig, update

BASE = UpdateConfig(epochs=4, replay_users=20, full_epochs=20)


def drifting_chains(users: int = 200, seed: int = 0) -> TrainingData:
    """Users arrive one after another and walk a chain; the later half walks it backwards."""
    rng = np.random.default_rng(seed)
    sequences, timestamps = [], []
    for user in range(users):
        step = 1 if user < users // 2 else -1
        item = int(rng.integers(N_ITEMS))
        walk = []
        for _ in range(int(rng.integers(8, 14))):
            walk.append(item)
            item = (item + step) % N_ITEMS
        sequences.append(np.array(walk, dtype=np.int64))
        timestamps.append(user * 1000 + np.arange(len(walk)))
    return TrainingData(sequences, N_ITEMS, timestamps=timestamps)


def test_the_setting_that_learns_the_drift_wins() -> None:
    grid = ({"lr": 0.0}, {"lr": 5e-3})
    result = tune_update(drifting_chains(), SASRecConfig(item_tower="id", **TINY), BASE, grid=grid)
    frozen, learning = (c["ndcg@10_mean"] for c in result.candidates)
    assert learning > frozen + 0.05
    assert result.chosen.lr == 5e-3
    assert (result.chosen.epochs, result.chosen.replay_users) == (4, 20)  # the rest stays the base's
    assert result.summary()["chosen"] == {"lr": 5e-3, "epochs": 4}


def test_a_later_setting_must_beat_the_earlier_ones_by_more_than_the_tolerance() -> None:
    grid = ({"lr": 0.0}, {"lr": 5e-3})
    config = SASRecConfig(item_tower="id", **TINY)
    lenient = tune_update(drifting_chains(), config, BASE, grid=grid, tolerance=0.9)
    frozen, learning = (c["ndcg@10_mean"] for c in lenient.candidates)
    assert frozen >= 0.1 * learning  # within 90 % of the best, so the first (gentler) setting stays
    assert lenient.chosen.lr == 0.0


def test_equal_scores_keep_the_first_setting() -> None:
    grid = ({"lr": 0.0, "batch_size": 8}, {"lr": 0.0, "batch_size": 16})  # neither moves the model
    result = tune_update(drifting_chains(100), SASRecConfig(item_tower="id", **TINY), BASE, grid=grid)
    assert result.candidates[0]["ndcg@10_mean"] == result.candidates[1]["ndcg@10_mean"]
    assert result.chosen.batch_size == 8


def test_smaller_batches_get_fewer_epochs_for_the_same_compute() -> None:
    grid = ({"batch_size": 64}, {"batch_size": 2})  # 32 times the optimiser steps per epoch
    result = tune_update(drifting_chains(100), SASRecConfig(item_tower="id", **TINY), BASE, grid=grid)
    large, small = (c["settings"]["epochs"] for c in result.candidates)
    assert large == BASE.epochs and 1 <= small < large


def test_replaying_more_users_gets_fewer_epochs_for_the_same_compute() -> None:
    grid = ({"replay_share": 0.1}, {"replay_share": 1.0})
    base = replace(BASE, replay_users=None)  # a count would override the share
    result = tune_update(drifting_chains(100), SASRecConfig(item_tower="id", **TINY), base, grid=grid)
    few, all_past = (c["settings"]["epochs"] for c in result.candidates)
    assert few == BASE.epochs and 1 <= all_past < few


def test_a_budget_sets_the_epochs_from_the_refit_time() -> None:
    grid = ({"batch_size": 64},)
    config = SASRecConfig(item_tower="id", **TINY)
    tight, generous = (
        tune_update(drifting_chains(100), config, BASE, grid=grid, budget=budget) for budget in (0.02, 0.8)
    )
    assert tight.refit_seconds > 0 and generous.summary()["budget"] == 0.8
    # 40 times the allowance: many more passes (the fit and update timings are noisy, not 40× noisy)
    assert 1 <= tight.chosen.epochs < generous.chosen.epochs
    assert generous.chosen.epochs > BASE.epochs


def test_slices_are_as_large_as_a_real_update_when_the_history_is_long_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamrec.training import tuning

    learned: list[int] = []

    def counting_update(model, data, config, **options):  # type: ignore[no-untyped-def]
        learned.append(int(sum(m.sum() for m in data.learn)))
        return update(model, data, config, **options)

    monkeypatch.setattr(tuning, "update", counting_update)
    history = drifting_chains()  # about 2,200 events: equal sixths would hold about 370
    grid = ({"lr": 5e-3},)
    config = SASRecConfig(item_tower="id", **TINY)
    small = tune_update(history, config, BASE, grid=grid, update_events=100)
    assert small.slice_events == 100 and all(95 <= n <= 105 for n in learned), learned
    learned.clear()
    large = tune_update(history, config, BASE, grid=grid, update_events=10_000)  # more than a sixth
    events = sum(len(s) for s in history.sequences)
    assert large.slice_events == round(events / 6) and all(abs(n - events / 6) <= 5 for n in learned)
    with pytest.raises(ValueError, match="update_events: must be at least 1"):
        tune_update(history, config, BASE, grid=grid, update_events=0)


def scored(scores: dict[tuple[float, float], float]) -> list[dict[str, Any]]:
    """Candidates over lr × new_item_lr_scale with these mean NDCG@10s, gentlest first."""
    return [
        {"settings": {"lr": lr, "new_item_lr_scale": scale, "epochs": 4}, "ndcg@10_mean": score}
        for (lr, scale), score in scores.items()
    ]


def test_a_value_that_wins_every_like_for_like_comparison_is_kept_whatever_the_tolerance() -> None:
    # 8x beats 1x at both rates, by less than the tolerance; the rates split their two comparisons.
    candidates = scored({(1e-3, 1.0): 0.300, (1e-3, 8.0): 0.304, (2e-3, 1.0): 0.302, (2e-3, 8.0): 0.303})
    decided, chosen = choose(candidates, tolerance=0.02)
    assert decided == {"new_item_lr_scale": 8.0}
    # The tolerance alone would keep the gentlest, (1e-3, 1x): 0.300 is within 2 % of 0.304.
    assert chosen["settings"] == {"lr": 1e-3, "new_item_lr_scale": 8.0, "epochs": 4}


def test_split_comparisons_decide_nothing() -> None:
    # 8x wins at 1e-3 and loses at 2e-3: the tolerance decides, gentlest first.
    candidates = scored({(1e-3, 1.0): 0.300, (1e-3, 8.0): 0.301, (2e-3, 1.0): 0.302, (2e-3, 8.0): 0.299})
    decided, chosen = choose(candidates, tolerance=0.02)
    assert decided == {}
    assert chosen["settings"] == {"lr": 1e-3, "new_item_lr_scale": 1.0, "epochs": 4}


def test_a_single_comparison_is_left_to_the_tolerance() -> None:
    candidates = scored({(1e-3, 1.0): 0.300, (1e-3, 8.0): 0.301})
    decided, chosen = choose(candidates, tolerance=0.02)
    assert decided == {} and chosen["settings"]["new_item_lr_scale"] == 1.0


def test_the_default_grid_puts_the_gentlest_setting_first() -> None:
    first = UPDATE_GRID[0]
    keys = ("lr", "new_item_lr_scale", "replay_share")
    assert all(first[key] <= setting[key] for setting in UPDATE_GRID for key in keys)
    assert all(first["batch_size"] >= setting["batch_size"] for setting in UPDATE_GRID)


def test_bad_input_is_refused_naming_the_problem() -> None:
    config = SASRecConfig(item_tower="id", **TINY)
    data = drifting_chains(40)
    with pytest.raises(ValueError, match="timestamps"):
        tune_update(TrainingData(data.sequences, N_ITEMS), config, BASE)
    with pytest.raises(ValueError, match="slices: must be at least 4"):
        tune_update(data, config, BASE, slices=3)
    with pytest.raises(ValueError, match="grid"):
        tune_update(data, config, BASE, grid=())
    with pytest.raises(ValueError, match=r"tolerance: must be in \[0, 1\)"):
        tune_update(data, config, BASE, tolerance=1.0)
    with pytest.raises(ValueError, match=r"budget: must be in \(0, 1\]"):
        tune_update(data, config, BASE, budget=0.0)


def test_stream_benchmark_tunes_on_period_zero(tiny_stream: dict[str, Any], tmp_path: Path) -> None:
    from streamrec.bench.stream import run_stream_benchmark

    run_stream_benchmark(**tiny_stream, strategies=("replay",), tune=True)
    written = json.loads((tmp_path / "stream.json").read_text())
    tuning = written["update_tuning"]
    assert len(tuning["candidates"]) == len(UPDATE_GRID)
    best = max(c["ndcg@10_mean"] for c in tuning["candidates"])
    first_close = next(c for c in tuning["candidates"] if c["ndcg@10_mean"] >= 0.99 * best)
    assert tuning["chosen"] == first_close["settings"]
    assert {key: written["update_config"][key] for key in tuning["chosen"]} == tuning["chosen"]
    assert "Update settings tuned on period 0" in (tmp_path / "stream.md").read_text()


def test_stream_benchmark_caps_each_update_at_the_budget(tiny_stream: dict[str, Any], tmp_path: Path) -> None:
    from streamrec.bench.stream import run_stream_benchmark

    options = {**tiny_stream, "update_config": UpdateConfig(epochs=3, full_epochs=2, replay_users=10)}
    # A millionth of a refit's compute affords one step: every update stops after its first.
    result = run_stream_benchmark(**options, strategies=("full", "replay"), update_budget=1e-6)
    replay = result["strategies"]["replay"]
    assert [u["epochs"] for u in replay["updates"]] == [1] and replay["epochs_median"] == 1
    assert result["strategies"]["full"]["epochs_median"] == 2  # a refit is never capped
    assert replay["updates"][0]["steps"] == 1
    assert result["update_budget"] == 1e-6 and result["refit_pace"]["id"]["refit_seconds_per_cell"] > 0
    assert "past 0% of a refit's compute" in (tmp_path / "stream.md").read_text()
    with pytest.raises(ValueError, match=r"^--update-budget: must be in \(0, 1\]"):
        run_stream_benchmark(**options, update_budget=1.5)
