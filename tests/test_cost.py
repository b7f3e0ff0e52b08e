"""A refit's cost from a fit's pace: training cells, seconds per cell, and the estimate it gives."""

import numpy as np
import pytest

from chains import N_ITEMS, TINY, chain_data
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.cost import RefitCost, training_cells


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
