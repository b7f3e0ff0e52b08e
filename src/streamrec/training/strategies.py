"""Incremental update strategies: learn the newest events from a trained network at a fraction of a refit.

Every strategy learns the events ``TrainingData.learn`` marks, with each user's
older events read as context (see :class:`~streamrec.config.UpdateSettings`):

* ``finetune``: the new events only (cheapest; forgets what they do not repeat);
* ``replay``: plus a uniform sample of past users' whole sequences;
* ``replay-distill``: plus a KL term pulling the next-item distribution towards
  the network's own before the update (knowledge distillation, as in ADER and IncCTR);
* ``adapter``: the replay data, but only LoRA adapters (peft) on the transformer
  and text projection, and new items' ID rows, learn; merged back afterwards.

An update's cost is *counted*, not timed: a step's work is the padded positions
the transformer reads plus the targets the softmax scores against the catalogue
(a learned position costs about twice a position read as context), and every step
also pays a price that no batch size changes (the whole item table's pass, every
weight's optimiser update). A refit's cost is the same count over every event for
as many epochs as the model's last fit ran (:class:`RefitCost`). ``budget`` caps an
update at that share of a refit's work *and* of its steps, so an update with small
batches cannot spend its share on step overhead: deterministic, and the same on a
busy machine as on an idle one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from streamrec.config import UpdateSettings
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.sasrec_net import SASRecConfig, SASRecNet
from streamrec.training.loop import (
    Distillation,
    TrainingLog,
    length_bucketed_batches,
    row_targets,
    train_network,
)

# Modules LoRA adapts: attention (peft wraps nn.MultiheadAttention), feed-forward, text projection.
ADAPTER_TARGETS = ["self_attn", "linear1", "linear2", "text_projection"]


@dataclass
class IncrementStats:
    """What one incremental update read and changed."""

    trained_users: int  # users with new events the update learned
    learned_events: int  # new next-item targets it trained on
    trainable_fraction: float  # weights allowed to change / all weights
    changed_fraction: float  # weights that did change / all weights (new items' rows count as changed)
    epochs: int  # passes begun: fewer than planned when the budget stopped it (the last may be partial)
    steps: int  # optimiser steps taken
    work: int  # positions read plus targets learned, over every step taken


@dataclass
class UpdateResult:
    """An updated copy of a model and what the update did."""

    model: Any  # the updated Recommender
    strategy: str
    seconds: float
    stats: IncrementStats

    def summary(self) -> dict[str, float | int | str]:
        stats = self.stats
        return {
            "strategy": self.strategy,
            "seconds": round(self.seconds, 3),
            "trained_users": stats.trained_users,
            "learned_events": stats.learned_events,
            "trainable_fraction": round(stats.trainable_fraction, 5),
            "changed_fraction": round(stats.changed_fraction, 5),
            "epochs": stats.epochs,
            "steps": stats.steps,
            "work": stats.work,
        }


def update(
    model: Recommender,
    data: TrainingData,
    settings: UpdateSettings,
    *,
    text_embeddings: np.ndarray | None = None,
    item_texts: Sequence[str] | None = None,
    progress: bool = False,
) -> UpdateResult:
    """``model``'s ``partial_fit`` on a copy, timed: ``model`` itself is left untouched."""
    started = time.perf_counter()
    student = copy.deepcopy(model).partial_fit(
        data, settings, text_embeddings=text_embeddings, item_texts=item_texts, progress=progress
    )
    return UpdateResult(student, settings.strategy, time.perf_counter() - started, student.last_update)


def step_work(data: TrainingData, max_len: int, batch_size: int) -> np.ndarray:
    """Each step's work in one epoch over ``data``'s training rows: padded positions + learned targets.

    Batched as the training loop batches them (the widths barely move between
    epochs, since rows are bucketed by length), with a fixed seed.
    """
    lengths, learned = row_targets(data, max_len)
    batches = length_bucketed_batches(lengths, batch_size, np.random.default_rng(0))
    return np.array(
        [len(rows) * int(lengths[rows].max()) + int(learned[rows].sum()) for rows in batches], dtype=np.int64
    )


@dataclass(frozen=True)
class RefitCost:
    """A refit's counted cost: its work (positions and targets) and its optimiser steps."""

    work: int
    steps: int


def refit_cost(data: TrainingData, config: SASRecConfig, epochs: int) -> RefitCost:
    """The cost of a refit on ``data``: every event learned, ``epochs`` times, in the model's batches."""
    per_step = step_work(replace(data, learn=None), config.max_len, config.batch_size)
    return RefitCost(epochs * int(per_step.sum()), epochs * len(per_step))


def affordable_steps(budget: float, refit: RefitCost, per_step: np.ndarray) -> int:
    """Steps of an update within ``budget`` of a refit's work and of its steps; at least one."""
    if not len(per_step):
        return 0
    by_work = math.floor(budget * refit.work / float(per_step.mean()))
    return max(1, min(by_work, math.floor(budget * refit.steps)))


def learn_increment(
    net: SASRecNet,
    data: TrainingData,
    settings: UpdateSettings,
    model_config: SASRecConfig,
    *,
    refit: RefitCost | None = None,
    progress: bool = False,
) -> tuple[SASRecNet, IncrementStats]:
    """Train ``net`` (already grown to ``data.n_items``) on ``data``'s marked events with the strategy.

    ``refit``: the cost of a refit, which ``settings.budget`` takes its share of.
    Returns the trained network (an adapter update merges into a new module) and its stats.
    """
    if data.learn is None:
        raise ValueError("data.learn must mark the new events an update learns")
    if settings.strategy == "full":
        raise ValueError("strategy 'full' is a refit: call fit, not partial_fit")
    train = with_replay(data, settings)
    learned = np.concatenate(
        [s[1:][m[1:]] for s, m in zip(data.sequences, data.learn, strict=True)] or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    distillation = None
    if settings.strategy == "replay-distill":  # the network before the update, frozen
        distillation = Distillation.frozen_copy_of(net, settings.distill_weight, settings.distill_temperature)
    untrained = net.id_trained == 0  # ID rows no fit or update has trained yet
    net.id_trained[1 + np.unique(learned)] = 1.0  # new items' ID rows join in
    untrained &= net.id_trained > 0  # exactly the rows this update trains first
    train_config = replace(
        model_config,
        epochs=settings.epochs,
        lr=settings.lr,
        lr_schedule=settings.lr_schedule,
        batch_size=settings.batch_size or model_config.batch_size,
        seed=settings.seed,
    )
    per_step = step_work(train, train_config.max_len, train_config.batch_size)
    max_steps = None
    if settings.budget is not None and refit is not None:
        max_steps = affordable_steps(settings.budget, refit, per_step)
    with _faster_rows(net, untrained, settings.new_item_lr_scale):
        if settings.strategy == "adapter":
            net, trainable, log = _train_adapters(
                net, train, train_config, settings, untrained, max_steps, progress
            )
        else:
            log = train_network(
                net, train, train_config, progress=progress, distillation=distillation, max_steps=max_steps
            )
            trainable = sum(p.numel() for p in net.parameters())
    net.eval()
    total = sum(p.numel() for p in net.parameters())
    changed = sum(int((p.detach() != before[name]).sum()) for name, p in net.named_parameters())
    users = sum(1 for s, m in zip(data.sequences, data.learn, strict=True) if len(s) >= 2 and m[1:].any())
    work = int(np.resize(per_step, log.steps).sum()) if len(per_step) else 0  # epochs repeat the steps
    stats = IncrementStats(
        users, len(learned), trainable / total, changed / total, log.epochs, log.steps, work
    )
    return net, stats


def with_replay(data: TrainingData, settings: UpdateSettings) -> TrainingData:
    """What an update learns: ``data`` with the strategy's replayed whole sequences marked too (seeded).

    Replayed are uniformly drawn past users: ``replay_users`` of them when set, else
    ``replay_share`` of them, so the work grows with the audience.
    """
    assert data.learn is not None
    if settings.strategy == "finetune":
        return data
    past = [
        u
        for u, (s, m) in enumerate(zip(data.sequences, data.learn, strict=True))
        if len(s) >= 2 and not m[1:].all()
    ]
    size = (
        settings.replay_users
        if settings.replay_users is not None
        else round(settings.replay_share * len(past))
    )
    rng = np.random.default_rng(settings.seed)
    chosen = rng.choice(past, size=min(size, len(past)), replace=False) if past else []
    marked = list(data.learn)
    for user in chosen:
        marked[user] = np.ones(len(data.sequences[user]), dtype=bool)
    return replace(data, learn=marked)


@contextmanager
def _faster_rows(net: SASRecNet, rows: torch.Tensor, scale: float) -> Iterator[None]:
    """Train ID ``rows`` as ``scale × w`` (through the ``id_trained`` multiplier), then fold it back.

    Adam moves every weight by about the learning rate per step whatever its
    gradient's size, so this reparametrisation makes exactly these rows move
    ``scale`` times faster; the item table itself is unchanged at entry and exit.
    """
    embedding = net.id_embedding
    if embedding is None or scale == 1.0 or not bool(rows.any()):
        yield
        return
    with torch.no_grad():
        embedding.weight[rows] /= scale
        net.id_trained[rows] = scale
    try:
        yield
    finally:
        with torch.no_grad():
            embedding.weight[rows] *= scale
            net.id_trained[rows] = 1.0


def with_lora(net: SASRecNet, rank: int = 8, alpha: int = 16) -> Any:
    """Wrap ``net`` in place with LoRA adapters on the targets it has; only the adapters stay trainable.

    Returns peft's wrapper, whose ``merge_and_unload()`` folds the adapters back into ``net``.
    """
    import peft

    targets = [t for t in ADAPTER_TARGETS if any(name.endswith(t) for name, _ in net.named_modules())]
    lora = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0)
    return peft.get_peft_model(net, lora)


def _train_adapters(
    net: SASRecNet,
    data: TrainingData,
    train_config: SASRecConfig,
    settings: UpdateSettings,
    untrained: torch.Tensor,
    max_steps: int | None,
    progress: bool,
) -> tuple[SASRecNet, int, TrainingLog]:
    """LoRA on the transformer and text projection plus new items' ID rows; merged back.

    Returns the merged network, how many weights were trainable, and the training log.
    """
    wrapped = with_lora(net, settings.lora_rank, settings.lora_alpha)  # freezes the base weights
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    hook = None
    new_rows = int(untrained.sum())
    if net.id_embedding is not None and new_rows > 0:
        weight = net.id_embedding.weight
        weight.requires_grad_(True)
        only_new = untrained.to(weight.dtype)[:, None]
        hook = weight.register_hook(lambda grad: grad * only_new)
        trainable += new_rows * weight.shape[1]
    log = train_network(
        net, data, replace(train_config, weight_decay=0.0), progress=progress, max_steps=max_steps
    )
    if hook is not None:
        hook.remove()
    return wrapped.merge_and_unload().requires_grad_(True), trainable, log
