"""Incremental updates: growing the item table, each strategy's contract, and that updates learn."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from chains import N_ITEMS, TINY, chain_data
from streamrec.config import UpdateSettings, update_settings_with
from streamrec.evaluation.offline import evaluate
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import NETWORK_FILE, SASRec, SASRecConfig, SASRecNet
from streamrec.training.loop import TrainingBatches
from streamrec.training.strategies import (
    RefitCost,
    UpdateResult,
    affordable_steps,
    refit_cost,
    step_work,
    update,
    with_replay,
)

NEW = 5  # items the catalogue gains after the first fit
ITEM_ROWS = ("id_embedding.weight", "text_embeddings", "id_trained")  # tensors with one row per item
INCREMENTAL = ("finetune", "replay", "replay-distill", "adapter")
TEXT = np.random.default_rng(1).normal(size=(N_ITEMS + NEW, 16)).astype(np.float32)
NEW_EVENT_USERS = 30  # users who touch a new item in the update's data


def settings(**options) -> UpdateSettings:
    """Update settings with no budget unless one is given: then only ``epochs`` bounds an update."""
    return UpdateSettings(**{"budget": None, **options})


def snapshot(model: SASRec) -> dict[str, torch.Tensor]:
    assert model.net is not None
    return {name: tensor.detach().clone() for name, tensor in model.net.state_dict().items()}


def assert_same_state(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


@pytest.fixture(scope="module")
def old_data() -> TrainingData:
    return chain_data(60)


@pytest.fixture(scope="module")
def hybrid(old_data: TrainingData) -> SASRec:
    config = SASRecConfig(item_tower="hybrid", epochs=2, **TINY)
    return SASRec(config, TEXT[:N_ITEMS]).fit(old_data, progress=False)


@pytest.fixture(scope="module")
def id_model(old_data: TrainingData) -> SASRec:
    return SASRec(SASRecConfig(item_tower="id", epochs=2, **TINY)).fit(old_data, progress=False)


@pytest.fixture(scope="module")
def new_data(old_data: TrainingData) -> TrainingData:
    """The first 30 users each touch one new item; ``learn`` marks exactly those events."""
    sequences, learn = [], []
    for user, sequence in enumerate(old_data.sequences):
        if user < NEW_EVENT_USERS:
            sequences.append(np.append(sequence, N_ITEMS + user % NEW))
            learn.append(np.r_[np.zeros(len(sequence), bool), True])
        else:
            sequences.append(sequence)
            learn.append(np.zeros(len(sequence), bool))
    return TrainingData(sequences, N_ITEMS + NEW, learn=learn)


@pytest.fixture(scope="module")
def updates(hybrid: SASRec, new_data: TrainingData) -> dict[str, tuple[UpdateResult, bool]]:
    """Every incremental strategy once from ``hybrid``; the flag says the input stayed unchanged."""
    results = {}
    for strategy in INCREMENTAL:
        before = snapshot(hybrid)
        config = settings(strategy=strategy, epochs=1, replay_users=10)
        result = update(hybrid, new_data, config, text_embeddings=TEXT)
        after = snapshot(hybrid)
        unchanged = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        results[strategy] = (result, unchanged and hybrid.n_items == N_ITEMS)
    return results


def test_grow_keeps_every_weight_and_appends_zero_id_rows(hybrid: SASRec) -> None:
    before = snapshot(hybrid)
    grown = hybrid.grow(N_ITEMS + NEW, TEXT)
    assert_same_state(before, snapshot(hybrid))  # growing copies
    assert grown.n_items == N_ITEMS + NEW and grown.net is not None and grown.net.n_items == N_ITEMS + NEW
    state = snapshot(grown)
    assert state.keys() == before.keys()
    for name, old in before.items():
        if name in ITEM_ROWS:
            assert state[name].shape[0] == N_ITEMS + NEW + 1, name
            assert torch.equal(state[name][: N_ITEMS + 1], old), name
        else:
            assert torch.equal(state[name], old), name
    new_rows = slice(N_ITEMS + 1, None)
    assert torch.equal(state["id_embedding.weight"][new_rows], torch.zeros(NEW, TINY["hidden"]))
    assert torch.equal(state["id_trained"][new_rows], torch.zeros(NEW))
    assert torch.equal(state["text_embeddings"][new_rows], torch.from_numpy(TEXT[N_ITEMS:]))
    with torch.no_grad():
        grown.net.eval()
        table = grown.net.item_table()
        text_part = grown.net.text_projection(grown.net.text_embeddings)
    assert torch.equal(table[new_rows], text_part[new_rows])  # a new item is its text's projection
    histories = [s[:-1] for s in chain_data(5, seed=3).sequences]
    assert np.all(np.isfinite(grown.score(histories)))
    # the known items score as before
    np.testing.assert_allclose(grown.score(histories)[:, :N_ITEMS], hybrid.score(histories), rtol=1e-6)


def test_grow_refuses_to_shrink_and_needs_text_for_every_item(hybrid: SASRec, id_model: SASRec) -> None:
    with pytest.raises(ValueError, match="shrink"):
        hybrid.grow(N_ITEMS - 1, TEXT)
    with pytest.raises(ValueError, match="cover all"):
        hybrid.grow(N_ITEMS + NEW)
    with pytest.raises(ValueError, match="cover all"):
        hybrid.grow(N_ITEMS + NEW, TEXT[: N_ITEMS + 2])
    same = hybrid.grow(N_ITEMS, TEXT[:N_ITEMS])
    assert_same_state(snapshot(hybrid), snapshot(same))
    # the ID tower needs no text; its new rows stay masked until trained
    grown = id_model.grow(N_ITEMS + NEW)
    assert grown.net is not None
    assert torch.equal(grown.net.id_trained[N_ITEMS + 1 :], torch.zeros(NEW))
    assert_same_state(
        {k: v[: N_ITEMS + 1] if k in ITEM_ROWS else v for k, v in snapshot(grown).items()}, snapshot(id_model)
    )


def test_new_item_with_an_existing_items_text_gets_that_items_text_embedding(hybrid: SASRec) -> None:
    twin = 3  # the new item N_ITEMS copies item 3's text
    text = TEXT.copy()
    text[N_ITEMS] = text[twin]
    grown = hybrid.grow(N_ITEMS + NEW, text)
    assert grown.net is not None
    net = grown.net.eval()
    with torch.no_grad():
        table = net.item_table()
        text_part = net.text_projection(net.text_embeddings)
        twin_id = net.id_embedding.weight[twin + 1] * net.id_trained[twin + 1]
    assert torch.equal(text_part[N_ITEMS + 1], text_part[twin + 1])
    assert torch.equal(table[N_ITEMS + 1], text_part[twin + 1])
    torch.testing.assert_close(table[N_ITEMS + 1], table[twin + 1] - twin_id)
    # a text-only tower cannot tell the twins apart at all
    text_model = SASRec(SASRecConfig(item_tower="text", **TINY), TEXT[:N_ITEMS])
    text_model.net = text_model.build(N_ITEMS, [])
    scores = text_model.grow(N_ITEMS + NEW, text).score([np.array([0, 1, 2]), np.array([7])])
    np.testing.assert_allclose(scores[:, N_ITEMS], scores[:, twin], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", INCREMENTAL)
def test_update_leaves_the_input_untouched_and_covers_every_item(
    strategy: str, updates: dict[str, tuple[UpdateResult, bool]], new_data: TrainingData
) -> None:
    result, input_unchanged = updates[strategy]
    assert input_unchanged
    assert result.strategy == strategy
    assert result.model.n_items == new_data.n_items
    assert result.model.net is not None and result.model.net.n_items == new_data.n_items
    assert not result.model.net.training
    scores = result.model.score([np.array([0, 1, N_ITEMS])])
    assert scores.shape == (1, new_data.n_items) and np.all(np.isfinite(scores))
    # the new items the update trained on are no longer masked
    assert torch.equal(result.model.net.id_trained[N_ITEMS + 1 :], torch.ones(NEW))
    assert 0 < result.stats.changed_fraction <= 1


def test_finetune_learns_exactly_the_marked_events(updates: dict[str, tuple[UpdateResult, bool]]) -> None:
    result, _ = updates["finetune"]
    assert result.stats.trained_users == NEW_EVENT_USERS
    assert result.stats.learned_events == NEW_EVENT_USERS
    assert result.stats.trainable_fraction == 1.0


def marked(data: TrainingData) -> tuple[int, int]:
    """Users with a target to learn, and the targets: what an update trains on."""
    assert data.learn is not None
    targets = [int(m[1:].sum()) for m in data.learn]
    return sum(1 for t in targets if t), sum(targets)


def test_replay_adds_at_most_replay_users_whole_sequences(
    hybrid: SASRec, new_data: TrainingData, updates: dict[str, tuple[UpdateResult, bool]]
) -> None:
    finetune, _ = updates["finetune"]
    assert with_replay(new_data, settings(strategy="finetune", replay_users=10)) is new_data
    users, targets = marked(new_data)
    longest = max(len(s) - 1 for s in new_data.sequences)
    for strategy in ("replay", "replay-distill", "adapter"):
        train = with_replay(new_data, settings(strategy=strategy, replay_users=10))
        replayed_users, replayed_targets = marked(train)
        assert users <= replayed_users <= users + 10
        # a replayed user contributes a whole sequence: at most that many targets each
        assert targets < replayed_targets <= targets + 10 * longest
        for old, new in zip(new_data.learn, train.learn, strict=True):
            assert new.all() or np.array_equal(old, new)  # whole sequences, or the marks as they were
        # the update trained on exactly that: one epoch of its steps' work, more than finetune's
        replayed, _ = updates[strategy]
        assert replayed.stats.work == int(step_work(train, TINY["max_len"], TINY["batch_size"]).sum())
        assert replayed.stats.work > finetune.stats.work
        # its stats count the new events it learned, replayed or not
        assert (replayed.stats.trained_users, replayed.stats.learned_events) == (users, targets)
    none = update(
        hybrid, new_data, settings(strategy="replay", epochs=1, replay_users=0), text_embeddings=TEXT
    )
    assert marked(with_replay(new_data, settings(strategy="replay", replay_users=0))) == (users, targets)
    assert none.stats.work == finetune.stats.work
    assert (none.stats.trained_users, none.stats.learned_events) == (
        finetune.stats.trained_users,
        finetune.stats.learned_events,
    )


def test_replay_share_replays_that_share_of_past_users(hybrid: SASRec, new_data: TrainingData) -> None:
    # Every user has past events (a new-event user's older ones are unmarked), so all can be drawn.
    users = len(new_data.sequences)
    for share in (0.25, 1.0):
        config = settings(strategy="replay", epochs=1, replay_share=share)
        train = with_replay(new_data, config)
        trained, _ = marked(train)
        drawn = round(share * users)
        assert max(NEW_EVENT_USERS, drawn) <= trained <= NEW_EVENT_USERS + drawn
        again = with_replay(new_data, config).learn  # seeded: the same users every time
        assert all(np.array_equal(a, b) for a, b in zip(again, train.learn, strict=True))
        work = update(hybrid, new_data, config, text_embeddings=TEXT).stats.work
        assert work == int(step_work(train, TINY["max_len"], TINY["batch_size"]).sum())
    assert trained == users  # share 1: everyone


def test_adapter_freezes_known_weights_trains_new_rows_and_merges_back(
    hybrid: SASRec, updates: dict[str, tuple[UpdateResult, bool]], tmp_path: Path
) -> None:
    result, _ = updates["adapter"]
    net = result.model.net
    assert type(net) is SASRecNet
    assert not any("lora" in name.lower() for name, _ in net.named_modules())
    assert not any("peft" in type(module).__module__ for module in net.modules())
    old = snapshot(hybrid)
    state = snapshot(result.model)
    assert state.keys() == old.keys()  # plain SASRecNet keys, nothing left of the adapters
    id_rows = state["id_embedding.weight"]
    assert torch.equal(id_rows[: N_ITEMS + 1], old["id_embedding.weight"])  # known items: bit-identical
    assert not torch.equal(id_rows[N_ITEMS + 1 :], torch.zeros(NEW, TINY["hidden"]))  # new items learned
    assert torch.all(id_rows[N_ITEMS + 1 :].abs().sum(dim=1) > 0)
    # modules LoRA does not adapt stay frozen
    for name in ("position_embedding.weight", "value_head.weight", "encoder.norm.weight"):
        assert torch.equal(state[name], old[name]), name
    # the adapted ones changed (merged LoRA deltas)
    assert not torch.equal(state["text_projection.weight"], old["text_projection.weight"])
    assert 0 < result.stats.trainable_fraction < 0.5
    result.model.save(tmp_path / "adapted")
    loaded = SASRec.load(tmp_path / "adapted")
    histories = [np.array([0, 1, 2]), np.array([5, N_ITEMS + 1])]
    np.testing.assert_allclose(loaded.score(histories), result.model.score(histories), rtol=1e-5, atol=1e-5)


def test_adapter_trains_new_items_of_an_already_grown_model(hybrid: SASRec, new_data: TrainingData) -> None:
    grown = hybrid.grow(N_ITEMS + NEW, TEXT)
    result = update(grown, new_data, settings(strategy="adapter", epochs=1, replay_users=10))
    assert result.model.net is not None and grown.net is not None
    assert not torch.equal(
        result.model.net.id_embedding.weight[N_ITEMS + 1 :], grown.net.id_embedding.weight[N_ITEMS + 1 :]
    )


def test_training_batches_weigh_only_marked_targets_and_drop_users_with_nothing_to_learn() -> None:
    sequences = [np.arange(5), np.arange(10, 14), np.arange(20, 26), np.array([30])]
    learn = [
        np.array([0, 0, 0, 1, 1], bool),  # the last two events are new
        np.zeros(4, bool),  # nothing new: context only, no row
        np.array([0, 1, 0, 0, 0, 1], bool),
        np.ones(1, bool),  # a single event predicts nothing
    ]
    data = TrainingData(sequences, 40, learn=learn)
    batches = TrainingBatches.from_data(data, SASRecConfig(**TINY))
    assert batches.lengths.tolist() == [4, 5]
    assert batches.inputs[0, :4].tolist() == [1, 2, 3, 4]  # the whole history is read as context
    assert batches.weights[0, :4].tolist() == [0, 0, 1, 1]
    assert batches.weights[1, :5].tolist() == [1, 0, 0, 0, 1]
    assert batches.weights[:, 5:].sum() == 0 and batches.weights[0, 4] == 0
    unmasked = TrainingBatches.from_data(replace(data, learn=None), SASRecConfig(**TINY))
    assert unmasked.lengths.tolist() == [4, 3, 5]
    # a window longer than max_len: only the newest max_len targets, with their own marks
    long = TrainingData([np.arange(30)], 40, learn=[np.arange(30) >= 25])
    window = TrainingBatches.from_data(long, SASRecConfig(**TINY))
    assert window.targets[0].tolist() == list(range(11, 31))
    assert window.weights[0].tolist() == [0.0] * 15 + [1.0] * 5
    nothing_recent = TrainingData([np.arange(30)], 40, learn=[np.arange(30) < 5])
    assert len(TrainingBatches.from_data(nothing_recent, SASRecConfig(**TINY)).lengths) == 0


def test_a_marked_first_event_alone_gives_no_training_row() -> None:
    data = TrainingData([np.arange(4)], 10, learn=[np.array([1, 0, 0, 0], bool)])
    assert len(TrainingBatches.from_data(data, SASRecConfig(**TINY)).lengths) == 0


def test_an_update_with_nothing_marked_changes_nothing(hybrid: SASRec, old_data: TrainingData) -> None:
    nothing = replace(old_data, learn=[np.zeros(len(s), bool) for s in old_data.sequences])
    result = update(hybrid, nothing, settings(strategy="finetune", epochs=1))
    assert (result.stats.trained_users, result.stats.learned_events, result.stats.changed_fraction) == (
        0,
        0,
        0.0,
    )
    assert_same_state(snapshot(hybrid), snapshot(result.model))
    with pytest.raises(ValueError, match="learn"):
        update(hybrid, replace(old_data, learn=None), settings(strategy="finetune"))


def test_full_refits_from_scratch_over_every_item(
    hybrid: SASRec, new_data: TrainingData, old_data: TrainingData
) -> None:
    result = update(hybrid, new_data, settings(strategy="full", full_epochs=1, seed=1), text_embeddings=TEXT)
    assert (
        result.strategy == "full"
        and result.stats.changed_fraction == 1.0
        and result.stats.trainable_fraction == 1.0
    )
    assert result.model is not hybrid and result.model.n_items == N_ITEMS + NEW
    assert result.model.config.epochs == 1 and result.model.config.seed == 1
    assert result.stats.learned_events == sum(len(s) - 1 for s in new_data.sequences)
    assert result.stats.trained_users == len(new_data.sequences)
    assert result.model.net is not None and hybrid.net is not None
    # fresh weights, not the old ones fine-tuned
    assert not torch.equal(result.model.net.position_embedding.weight, hybrid.net.position_embedding.weight)
    assert torch.equal(result.model.net.id_trained[1:], torch.ones(N_ITEMS + NEW))
    assert result.stats.epochs == 1 and result.stats.steps > 0
    assert result.stats.work == refit_cost(new_data, result.model.config, 1).work
    assert result.model.fit_epochs == 1
    with pytest.raises(ValidationError):
        UpdateSettings(strategy="refit")


def test_id_only_models_rank_untrained_items_last_text_aware_models_score_them(
    id_model: SASRec, hybrid: SASRec
) -> None:
    histories = [np.array([0, 1, 2]), np.array([9])]
    grown = id_model.grow(N_ITEMS + NEW)
    scores = grown.score(histories)
    assert np.all(np.isneginf(scores[:, N_ITEMS:]))
    assert np.all(np.isfinite(scores[:, :N_ITEMS]))
    assert np.all(np.isfinite(hybrid.grow(N_ITEMS + NEW, TEXT).score(histories)))
    data = chain_data(20)
    data.n_items = N_ITEMS + NEW  # catalogue items nobody touched
    fitted = SASRec(SASRecConfig(item_tower="id", epochs=1, **TINY)).fit(data, progress=False)
    assert np.all(np.isneginf(fitted.score(histories)[:, N_ITEMS:]))


def shifted_chains(users: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Old events walk i → i+1, new ones (marked in the mask) i → i+2; 10 % random jumps."""
    rng = np.random.default_rng(seed)

    def walk(step: int) -> list[int]:
        item, items = int(rng.integers(N_ITEMS)), []
        for _ in range(int(rng.integers(6, 10))):
            items.append(item)
            item = (item + step) % N_ITEMS if rng.random() < 0.9 else int(rng.integers(N_ITEMS))
        return items

    sequences, learn = [], []
    for _ in range(users):
        old, new = walk(1), walk(2)
        sequences.append(np.array(old + new, dtype=np.int64))
        learn.append(np.r_[np.zeros(len(old), bool), np.ones(len(new), bool)])
    return sequences, learn


def test_finetune_learns_a_changed_pattern() -> None:
    """Seeds 0-3 all give old ≈ 0.42-0.44 → updated ≈ 0.68-0.76 NDCG@10 on the new pattern."""
    sequences, learn = shifted_chains(100, seed=0)
    old = TrainingData([s[~m] for s, m in zip(sequences, learn, strict=True)], N_ITEMS)
    model = SASRec(SASRecConfig(item_tower="id", epochs=10, **TINY)).fit(old, progress=False)
    new = TrainingData([s[:-1] for s in sequences], N_ITEMS, learn=[m[:-1] for m in learn])
    updated = update(model, new, settings(strategy="finetune", epochs=3, lr=5e-3)).model
    histories, targets = [s[:-1] for s in sequences], np.array([s[-1] for s in sequences])
    before = evaluate(model, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"]
    after = evaluate(updated, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"]
    assert after > before + 0.15


def test_update_batch_size_overrides_the_models_for_the_update_only(
    hybrid: SASRec, new_data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamrec.training.strategies as update_module

    seen: list[int] = []
    real_train_network = update_module.train_network

    def spy(net, data, config, **options):
        seen.append(config.batch_size)
        return real_train_network(net, data, config, **options)

    monkeypatch.setattr(update_module, "train_network", spy)
    for batch_size in (None, 4):
        config = settings(strategy="finetune", epochs=1, batch_size=batch_size)
        result = update(hybrid, new_data, config, text_embeddings=TEXT)
    assert seen == [hybrid.config.batch_size, 4]
    assert result.model.config.batch_size == hybrid.config.batch_size  # the saved config is the model's


def new_item_rows(model: SASRec) -> torch.Tensor:
    assert model.net is not None and model.net.id_embedding is not None
    return model.net.id_embedding.weight.detach()[1 + N_ITEMS :].clone()


def test_new_item_lr_scale_moves_only_new_rows_faster_and_folds_back(
    hybrid: SASRec, new_data: TrainingData
) -> None:
    grown = hybrid.grow(N_ITEMS + NEW, TEXT)
    assert grown.net is not None
    table = grown.net.item_table().detach()
    still = update(
        hybrid,
        new_data,
        settings(strategy="finetune", epochs=1, lr=1e-12, new_item_lr_scale=8.0),
        text_embeddings=TEXT,
    )
    assert still.model.net is not None
    assert torch.allclose(still.model.net.item_table().detach(), table, atol=1e-6)  # ~no learning, no change
    assert bool((still.model.net.id_trained[1 + N_ITEMS :] == 1.0).all())  # the multiplier is folded back
    moved = {}
    for scale in (1.0, 8.0):
        config = settings(strategy="finetune", epochs=2, new_item_lr_scale=scale)
        result = update(hybrid, new_data, config, text_embeddings=TEXT)
        moved[scale] = float(new_item_rows(result.model).norm())
    assert moved[8.0] > 3 * moved[1.0] > 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"new_item_lr_scale": 0.0}, "new_item_lr_scale"),
        ({"replay_share": 0.0}, "replay_share"),
        ({"replay_share": 1.5}, "replay_share"),
        ({"replay_users": -1}, "replay_users"),
        ({"budget": 0.0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"strategy": "refit"}, "strategy"),
        ({"lr": 0.0}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"full_epochs": 0}, "full_epochs"),
        ({"guardrail_epsilon": -1.0}, "guardrail_epsilon"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_update_settings_name_the_bad_field(options: dict, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        UpdateSettings(**options)
    assert [e["loc"] for e in error.value.errors()] == [(field,)]
    with pytest.raises(ValueError, match=f"^update settings: {field}:"):
        update_settings_with(UpdateSettings(), options)


def test_update_settings_are_frozen_and_changed_by_copy() -> None:
    base = UpdateSettings()
    with pytest.raises(ValidationError):
        base.epochs = 3  # type: ignore[misc]
    changed = update_settings_with(base, {"epochs": "3", "budget": None})  # as the toml or --set give them
    assert (changed.epochs, changed.budget) == (3, None)
    assert (base.epochs, base.budget) == (20, UpdateSettings().budget)  # the base is untouched


def test_step_work_counts_padded_positions_plus_learned_targets() -> None:
    sequences = [np.arange(5), np.arange(10, 14), np.arange(20, 26), np.array([30])]
    learn = [
        np.array([0, 0, 0, 1, 1], bool),  # a row of 4 positions, 2 of them learned
        np.zeros(4, bool),  # nothing to learn: no row
        np.array([0, 1, 0, 0, 0, 1], bool),  # 5 positions, 2 learned (the first event predicts nothing)
        np.ones(1, bool),  # a single event: no row
    ]
    data = TrainingData(sequences, 40, learn=learn)
    # One batch: both rows padded to the longer one's 5 positions, plus 4 learned targets.
    assert step_work(data, max_len=20, batch_size=32).tolist() == [2 * 5 + 4]
    assert sorted(step_work(data, max_len=20, batch_size=1).tolist()) == [4 + 2, 5 + 2]
    assert step_work(data, max_len=3, batch_size=32).tolist() == [2 * 3 + 2 + 1]  # the newest 3 targets only
    # A refit learns every event of every row (3 rows: 4, 3 and 5 targets), once per epoch.
    config = SASRecConfig(**{**TINY, "max_len": 20, "batch_size": 32})
    assert refit_cost(data, config, epochs=3) == RefitCost(3 * (3 * 5 + 4 + 3 + 5), 3 * 1)
    assert affordable_steps(0.5, RefitCost(100, 10), np.array([10, 30])) == 2  # floor(0.5 × 100 / 20)
    assert affordable_steps(1e-9, RefitCost(100, 10), np.array([10, 30])) == 1  # at least one step
    assert affordable_steps(0.5, RefitCost(100, 10), np.array([], dtype=np.int64)) == 0  # nothing to learn
    # Small batches: the share of the refit's steps binds first (each step pays a fixed price too).
    assert affordable_steps(0.5, RefitCost(1000, 6), np.array([1, 3])) == 3  # not floor(0.5 × 1000 / 2)


def test_a_budget_ends_the_update_at_its_counted_share_of_a_refits_work(
    hybrid: SASRec, new_data: TrainingData
) -> None:
    unbounded = update(hybrid, new_data, settings(epochs=4, replay_users=10), text_embeddings=TEXT)
    assert unbounded.stats.epochs == 4 and unbounded.summary()["steps"] == unbounded.stats.steps > 4
    # What the budget counts: a refit's work over all the data for the epochs the last fit ran …
    refit = refit_cost(new_data, hybrid.config, hybrid.fit_epochs)
    assert hybrid.fit_epochs == 2 and refit.work > 0
    # … against the steps of the update's own data (the new events and the replayed sequences).
    per_step = step_work(
        with_replay(new_data, settings(replay_users=10)), hybrid.config.max_len, hybrid.config.batch_size
    )
    assert unbounded.stats.work == 4 * int(per_step.sum())  # four whole epochs
    # A millionth of a refit affords one step, and the update stops there, mid-epoch.
    tiny = settings(epochs=4, replay_users=10, budget=1e-6)
    capped = update(hybrid, new_data, tiny, text_embeddings=TEXT)
    assert (capped.stats.epochs, capped.stats.steps) == (1, 1)
    adapter = update(hybrid, new_data, tiny.model_copy(update={"strategy": "adapter"}), text_embeddings=TEXT)
    assert adapter.stats.steps == 1
    # A share is a count, not a time: of the refit's work and of its steps, every time.
    share = tiny.model_copy(update={"budget": 0.5})
    steps = update(hybrid, new_data, share, text_embeddings=TEXT).stats.steps
    assert steps == min(int(np.floor(0.5 * refit.work / per_step.mean())), int(np.floor(0.5 * refit.steps)))
    assert 1 < steps < unbounded.stats.steps
    assert update(hybrid, new_data, share, text_embeddings=TEXT).stats.steps == steps  # deterministic
    # A larger budget never takes fewer steps; the whole refit's share allows its steps, no more.
    taken = [
        update(hybrid, new_data, tiny.model_copy(update={"budget": b}), text_embeddings=TEXT).stats.steps
        for b in (1e-6, 0.25, 0.5, 0.75, 1.0)
    ]
    assert taken == sorted(taken) and taken[2] == steps
    assert taken[-1] == min(refit.steps, unbounded.stats.steps)
    assert taken[0] < unbounded.stats.steps


def test_the_budget_counts_the_same_work_for_every_strategy_and_the_last_fits_epochs(
    hybrid: SASRec, new_data: TrainingData
) -> None:
    """No strategy is priced dearer: the same data and share take the same steps; a longer fit, more."""
    share = settings(epochs=4, replay_users=10, budget=0.6)
    steps = {
        strategy: update(
            hybrid, new_data, share.model_copy(update={"strategy": strategy}), text_embeddings=TEXT
        ).stats.steps
        for strategy in ("replay", "replay-distill", "adapter")
    }
    assert len(set(steps.values())) == 1 and steps["replay"] > 1, steps
    # full_epochs bounds a refit the update might turn into, not the refit the share is of.
    longer = share.model_copy(update={"full_epochs": 300})
    assert update(hybrid, new_data, longer, text_embeddings=TEXT).stats.steps == steps["replay"]
    # A model whose last fit ran twice the epochs affords (about) twice the steps.
    patient = copy.deepcopy(hybrid)
    patient.fit_epochs = 2 * hybrid.fit_epochs
    doubled = update(patient, new_data, share, text_embeddings=TEXT).stats.steps
    assert abs(doubled - 2 * steps["replay"]) <= 1


def test_partial_fit_updates_in_place_and_fit_epochs_is_saved(
    hybrid: SASRec, new_data: TrainingData, tmp_path: Path
) -> None:
    model = copy.deepcopy(hybrid)
    config = settings(strategy="finetune", epochs=1)
    assert model.last_update is None
    assert model.partial_fit(new_data, config, text_embeddings=TEXT) is model
    assert model.n_items == N_ITEMS + NEW and model.last_update is not None
    assert model.last_update.learned_events == NEW_EVENT_USERS
    # update() is partial_fit on a copy: the same settings give the same network
    copied = update(hybrid, new_data, config, text_embeddings=TEXT)
    assert copied.stats == model.last_update
    assert_same_state(snapshot(model), snapshot(copied.model))
    with pytest.raises(RuntimeError, match="fitted"):
        SASRec(SASRecConfig(**TINY)).partial_fit(new_data, config)
    # the epochs the fit ran travel with the saved model (a budget's refit is counted in them)
    model.save(tmp_path / "saved")
    assert SASRec.load(tmp_path / "saved").fit_epochs == hybrid.fit_epochs == 2
    meta = json.loads((tmp_path / "saved" / NETWORK_FILE).read_text())
    del meta["fit_epochs"]  # a model saved before it was recorded counts its config's epochs
    (tmp_path / "saved" / NETWORK_FILE).write_text(json.dumps(meta))
    assert SASRec.load(tmp_path / "saved").fit_epochs == model.config.epochs
