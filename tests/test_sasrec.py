"""SASRec learns sequential structure, saves/loads exactly, and scores cold items from text."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from chains import N_ITEMS, TINY, chain_data
from streamrec.evaluation.offline import evaluate, leave_one_out
from streamrec.models.base import top_k
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.loop import TrainingBatches, sequence_loss


def test_learns_sequential_structure_far_above_popularity() -> None:
    split = leave_one_out(chain_data())
    model = SASRec(SASRecConfig(item_tower="id", epochs=40, **TINY)).fit(
        split.train, valid=(split.valid_histories, split.valid_targets), progress=False
    )
    metrics = evaluate(model, split.test_histories, split.test_targets)
    popularity = np.bincount(np.concatenate(split.train.sequences), minlength=N_ITEMS).astype(np.float32)
    ranks = [(popularity > popularity[t]).sum() for t in split.test_targets]
    popular_hr = float(np.mean(np.array(ranks) < 10))
    assert metrics["hr@10"] > 0.7
    assert metrics["hr@10"] > 2 * popular_hr
    log = model.training_log
    assert log.history[-1]["loss"] < log.history[0]["loss"]


def test_save_and_load_give_identical_scores(tmp_path: Path) -> None:
    data = chain_data(40)
    text = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    model = SASRec(SASRecConfig(item_tower="hybrid", epochs=2, **TINY), text).fit(data, progress=False)
    model.save(tmp_path / "v")
    loaded = SASRec.load(tmp_path / "v")
    histories = data.sequences[:5]
    np.testing.assert_allclose(model.score(histories), loaded.score(histories), rtol=1e-5, atol=1e-5)


def test_text_tower_requires_embeddings_of_the_right_shape() -> None:
    with pytest.raises(ValueError, match="one row per item"):
        SASRec(SASRecConfig(item_tower="text", **TINY), np.zeros((3, 8), np.float32)).fit(
            chain_data(5), progress=False
        )


def test_unseen_items_have_zero_id_rows_and_score_from_text() -> None:
    data = chain_data(40)
    data.n_items = N_ITEMS + 5  # five catalogue items nobody has touched yet
    text = np.random.default_rng(2).normal(size=(N_ITEMS + 5, 16)).astype(np.float32)
    model = SASRec(SASRecConfig(item_tower="hybrid", epochs=2, **TINY), text).fit(data, progress=False)
    assert model.net is not None
    cold = model.net.id_trained[N_ITEMS + 1 :]
    assert torch.all(cold == 0) and torch.all(model.net.id_trained[1 : N_ITEMS + 1] == 1)
    assert np.all(np.isfinite(model.score(data.sequences[:3])[:, N_ITEMS:]))


def test_event_type_weights_and_auxiliary_heads_shape_the_loss() -> None:
    data = chain_data(30)
    data.type_names = ["view", "purchase"]
    data.event_types = [(np.arange(len(s)) % 2).astype(np.int64) for s in data.sequences]
    data.values = [np.full(len(s), 4.0, dtype=np.float32) for s in data.sequences]
    config = SASRecConfig(
        item_tower="id",
        epochs=1,
        type_weights={"purchase": 3.0},
        aux_event_type_weight=0.5,
        aux_value_weight=0.5,
        **TINY,
    )
    batches = TrainingBatches.from_data(data, config)
    kinds = batches.event_types[batches.targets > 0]
    assert set(np.unique(batches.weights[batches.targets > 0][kinds == 1])) == {3.0}
    model = SASRec(config)
    net = model.build(N_ITEMS, data.type_names)
    batch = batches.batch(np.arange(len(batches.lengths)), batches.inputs.shape[1], torch.device("cpu"))
    loss, parts = sequence_loss(net, batch, config, None)
    assert set(parts) == {"next_item", "event_type", "value"}
    expected = parts["next_item"] + 0.5 * parts["event_type"] + 0.5 * parts["value"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_zero_weighted_context_positions_do_not_count_in_the_loss() -> None:
    """An update's context positions weigh 0; skipping them must give the fully scored weighted mean."""
    data = chain_data(20)
    data.learn = [np.arange(len(s)) >= len(s) - 3 for s in data.sequences]  # the last 2 targets learn
    config = SASRecConfig(item_tower="id", **TINY)
    batches = TrainingBatches.from_data(data, config)
    net = SASRec(config).build(N_ITEMS, [])
    batch = batches.batch(np.arange(len(batches.lengths)), batches.inputs.shape[1], torch.device("cpu"))
    real = batch["targets"] > 0
    assert 0 < int((batch["weights"] > 0).sum()) < int(real.sum())
    loss, _ = sequence_loss(net, batch, config, None)
    table = net.item_table()
    per_position = torch.nn.functional.cross_entropy(  # every real position scored, weights multiplied in
        net.encode(batch["inputs"], table)[real] @ table[1:].T, batch["targets"][real] - 1, reduction="none"
    )
    weights = batch["weights"][real]
    expected = (per_position * weights).sum() / weights.sum()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4)


def test_sampled_softmax_also_learns() -> None:
    split = leave_one_out(chain_data())
    config = SASRecConfig(item_tower="id", epochs=30, loss="sampled", negatives=20, **TINY)
    model = SASRec(config).fit(
        split.train, valid=(split.valid_histories, split.valid_targets), progress=False
    )
    assert evaluate(model, split.test_histories, split.test_targets)["hr@10"] > 0.5


def test_top_k_excludes_and_orders() -> None:
    codes, scores = top_k(np.array([0.1, 0.9, 0.5, 0.7]), 2, exclude=np.array([1]))
    assert codes.tolist() == [3, 2]
    assert scores.tolist() == pytest.approx([0.7, 0.5])


@pytest.mark.parametrize(("schedule", "last"), [("constant", 1.0), ("cosine", 0.0)])
def test_the_learning_rate_schedule_ends_where_it_says(schedule: str, last: float) -> None:
    config = SASRecConfig(**{**TINY, "item_tower": "id", "epochs": 4, "lr": 2e-3, "lr_schedule": schedule})
    rates = [r["lr"] for r in SASRec(config).fit(chain_data(40), progress=False).training_log.history]
    assert rates[-1] == pytest.approx(last * 2e-3, abs=1e-12)
    if schedule == "cosine":
        assert all(a > b for a, b in itertools.pairwise(rates))  # decays every epoch
