"""A refit's cost from a fit's pace: training cells, seconds per cell, and the estimate it gives."""

import copy

import numpy as np
import pytest
import torch

from chains import N_ITEMS, TINY, chain_data
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.cost import REFIT_PACE, RefitCost, Rows, training_cells
from streamrec.training.loop import Distillation, step_seconds


def test_training_cells_count_each_users_newest_max_len_targets_padded_as_batched() -> None:
    sequences = [np.arange(3), np.arange(1), np.arange(30)]  # 2 targets, none, 29 cut to 10
    data = TrainingData(sequences, 30)
    assert training_cells(data, SASRecConfig(max_len=10, batch_size=1)) == 2 + 0 + 10
    # In one batch the short row is padded to the long one's width.
    assert training_cells(data, SASRecConfig(max_len=10, batch_size=2)) == 2 * 10


def test_a_refit_estimate_scales_with_cells_and_epochs_and_matches_the_fit_it_was_timed_on() -> None:
    data = chain_data(users=60, seed=0)
    config = SASRecConfig(item_tower="id", **{**TINY, "epochs": 4})
    model = SASRec(config).fit(data, progress=False)
    cost = RefitCost.timed(model, data)
    assert cost.seconds_per_cell > 0
    once = cost.seconds(data, config, 1)
    assert cost.seconds(data, config, 4) == pytest.approx(4 * once)
    doubled = TrainingData(data.sequences * 2, N_ITEMS)  # twice the rows, batched as alike
    assert cost.seconds(doubled, config, 1) == pytest.approx(2 * once, rel=0.1)
    # The median epoch stands for every epoch: the estimate of the fit itself lands near its
    # real training time (loosely: the first epoch also warms up).
    assert model.training_log is not None
    assert 0.3 < cost.seconds(data, config, 4) / model.training_log.seconds < 3


def test_an_unfitted_model_cannot_time_a_refit() -> None:
    with pytest.raises(ValueError, match="fit it first"):
        RefitCost.timed(SASRec(SASRecConfig(item_tower="id", **TINY)), chain_data(users=10, seed=0))


def test_a_fits_pace_splits_into_a_part_per_cell_and_a_fixed_part_per_step() -> None:
    data = chain_data(users=60, seed=0)
    model = SASRec(SASRecConfig(item_tower="id", **{**TINY, "epochs": 3})).fit(data, progress=False)
    cost = RefitCost.timed(model, data)
    assert cost.seconds_per_cell > 0 and cost.seconds_per_step > 0
    assert RefitCost.from_timings(cost.timings()) == cost
    assert RefitCost.from_timings({REFIT_PACE: 2.0}) == RefitCost(2.0)  # recorded before steps or targets
    assert RefitCost.from_timings({"train_seconds": 3.0}) is None


def test_affordable_steps_take_the_share_of_a_refit_at_the_pace_of_the_updates_own_steps() -> None:
    rows = Rows.of(TrainingData([np.arange(11)] * 8, 11), max_len=10)
    # 8 rows of 10 targets, 4 to a step: two steps of 40 cells, each 40 + 10 seconds at this pace.
    cost = RefitCost(seconds_per_cell=1.0, seconds_per_step=10.0)
    assert cost.epoch_seconds(rows, 4) == 2 * 50
    assert cost.affordable_steps(0.1, refit=1000.0, rows=rows, batch_size=4) == 2  # 100 s / 50
    assert cost.affordable_steps(0.1, refit=1000.0, rows=rows, batch_size=8) == 1  # 100 s / 90
    assert cost.affordable_steps(1e-9, refit=1000.0, rows=rows, batch_size=4) == 1  # never none


def test_positions_read_only_as_context_cost_their_cells_but_no_target() -> None:
    learn = [np.arange(11) >= 9] * 8  # the last two events are new: 2 of each row's 10 targets learned
    rows = Rows.of(TrainingData([np.arange(11)] * 8, 11, learn=learn), max_len=10)
    assert rows.lengths.tolist() == [10] * 8 and rows.learned.tolist() == [2] * 8
    cost = RefitCost(seconds_per_cell=1.0, seconds_per_step=10.0, seconds_per_target=3.0)
    assert cost.epoch_seconds(rows, 4) == 2 * (40 + 3 * 8 + 10)
    every = Rows.of(TrainingData([np.arange(11)] * 8, 11), max_len=10)
    assert cost.epoch_seconds(every, 4) == 2 * (40 + 3 * 40 + 10)
    # A step that learns a fifth of its positions affords more steps in the same share.
    assert cost.affordable_steps(0.1, 10_000.0, rows, 4) > cost.affordable_steps(0.1, 10_000.0, every, 4)


def test_a_steps_parts_come_from_steps_of_two_sizes_timed_side_by_side(monkeypatch) -> None:
    data = chain_data(users=60, seed=0)
    config = SASRecConfig(item_tower="id", **{**TINY, "epochs": 2})
    model = SASRec(config).fit(data, progress=False)
    # Planted (seconds per cell, seconds per step) of each kind of step: a plain step's fixed
    # part costs as much as 20 cells; distillation's cells cost 1.5 times as much, and its
    # fixed part 60 plain cells' worth. Every kind's learned target costs 3 cells more.
    planted = {"plain": (1e-5, 2e-4), "replay-distill": (1.5e-5, 6e-4), "adapter": (1e-5, 3e-4)}
    target = 3e-5

    def timed(steps, data, config, sizes, width, context_kinds=()):
        assert set(steps) == {*planted, "context"} and context_kinds == ("context",)
        seconds = {
            kind: [(cell + target) * size * width + step for size in sizes]
            for kind, (cell, step) in planted.items()
        }
        cell, step = planted["plain"]  # rows that learn their last position only
        return seconds | {"context": [(cell * width + target) * size + step for size in sizes]}

    monkeypatch.setattr("streamrec.training.cost.step_seconds", timed)
    cost = RefitCost.timed(model, data)
    assert cost.seconds_per_step / cost.seconds_per_cell == pytest.approx(20)
    assert cost.seconds_per_target / cost.seconds_per_cell == pytest.approx(3)
    distill = cost.for_strategy("replay-distill")
    assert distill.seconds_per_cell / cost.seconds_per_cell == pytest.approx(1.5)
    assert distill.seconds_per_step / cost.seconds_per_cell == pytest.approx(60)
    assert distill.seconds_per_target == cost.seconds_per_target
    assert cost.for_strategy("adapter").seconds_per_step / cost.seconds_per_cell == pytest.approx(30)
    plain = RefitCost(cost.seconds_per_cell, cost.seconds_per_step, cost.seconds_per_target)
    assert cost.for_strategy("replay") == plain
    assert RefitCost.from_timings(cost.timings()) == cost
    # The parts' level is the fit's: priced on what it fitted, an epoch takes its median epoch.
    assert model.training_log is not None
    epochs = [record["seconds"] for record in model.training_log.history]
    assert cost.seconds(data, config, 1) == pytest.approx(float(np.median(epochs)))
    # Noise that makes the larger step no dearer than the smaller shows no parts to tell apart,
    # and leaves one pace per cell for every strategy.
    monkeypatch.setattr(
        "streamrec.training.cost.step_seconds",
        lambda steps, data, config, sizes, width, context_kinds=(): {kind: [1.0, 1.0] for kind in steps},
    )
    noisy = RefitCost.timed(model, data)
    assert noisy.seconds_per_step == noisy.seconds_per_target == 0
    assert noisy.for_strategy("replay-distill") == noisy.for_strategy("replay")


def test_training_steps_of_each_kind_and_size_are_timed_on_copies_of_the_network() -> None:
    data = chain_data(users=60, seed=0)
    model = SASRec(SASRecConfig(item_tower="id", **{**TINY, "epochs": 1})).fit(data, progress=False)
    assert model.net is not None
    before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
    teacher = Distillation(copy.deepcopy(model.net).eval().requires_grad_(False))
    kinds = {"plain": (model.net, None), "context": (model.net, None), "distilled": (model.net, teacher)}
    seconds = step_seconds(kinds, data, model.config, (2, 8), width=5, repeats=2, context_kinds=("context",))
    assert set(seconds) == set(kinds)
    assert all(len(times) == 2 and all(s > 0 for s in times) for times in seconds.values())
    assert all(torch.equal(p, before[name]) for name, p in model.net.named_parameters())
    with pytest.raises(ValueError, match="no training row is 500 positions long"):
        step_seconds({"plain": (model.net, None)}, data, model.config, (2,), width=500)


def test_a_pace_recorded_before_strategies_had_their_own_prices_them_all_at_the_plain_pace() -> None:
    old = RefitCost.from_timings({REFIT_PACE: 2e-5, "refit_seconds_per_step": 1e-3})
    assert old is not None and old.for_strategy("adapter") == old


def test_training_data_of_some_users_keeps_every_aligned_array_in_their_order() -> None:
    data = TrainingData(
        [np.arange(3), np.arange(5), np.arange(2)],
        N_ITEMS,
        timestamps=[np.arange(3) * 10, np.arange(5) * 10, np.arange(2) * 10],
        type_names=["click"],
        learn=[np.ones(3, bool), np.zeros(5, bool), np.ones(2, bool)],
    )
    picked = data.of_users([2, 0])
    assert [len(s) for s in picked.sequences] == [2, 3]
    assert picked.timestamps is not None and [len(t) for t in picked.timestamps] == [2, 3]
    assert picked.learn is not None and [len(m) for m in picked.learn] == [2, 3]
    assert picked.event_types is None and picked.type_names == ["click"] and picked.n_items == N_ITEMS
