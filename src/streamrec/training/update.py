"""Incremental updates: learn the newest events from the live model at a fraction of a refit's cost.

Every strategy starts from the previous version, grown to the current item
vocabulary (:meth:`SASRec.grow`), and learns the events marked in
``TrainingData.learn`` with each user's older events as context:

* ``finetune``: the new events only (cheapest; forgets what they do not repeat);
* ``replay``: plus a uniform sample of past users' whole sequences, a fixed
  share of them (a third by default), so the budget grows with the audience;
* ``replay-distill``: plus a KL term pulling the next-item distribution
  towards the previous version's (knowledge distillation, as in ADER and IncCTR);
* ``adapter``: the replay data, but only LoRA adapters (peft) on the
  transformer and text projection, and the ID rows of new items, learn; the
  adapters are merged back afterwards, so the result is a plain model;
* ``full``: a refit from scratch on everything, the reference the others are
  measured against.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from streamrec.config import LR_SCHEDULES
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig, SASRecNet
from streamrec.training.adapters import LORA_ALPHA, LORA_RANK, with_lora
from streamrec.training.cost import RefitCost, Rows
from streamrec.training.loop import Distillation, TrainingLog, train_network

Strategy = Literal["finetune", "replay", "replay-distill", "adapter", "full"]
STRATEGIES: tuple[str, ...] = ("finetune", "replay", "replay-distill", "adapter", "full")


@dataclass
class UpdateConfig:
    """How an incremental update learns; ``full`` only reads ``full_epochs`` and ``seed``."""

    strategy: str = "replay"
    epochs: int = 5  # passes over the new events (and the replayed sequences); the most, with budget
    lr: float = 1e-3
    # "cosine": decay the rate to 0 by the last step (the budget's, if that comes first), so a
    # capped update still ends on small steps; "constant": the same rate throughout.
    lr_schedule: str = "cosine"
    # User rows per step; None: the model config's. Smaller batches give more steps for the same
    # compute, which matters when few users bring long new histories (one row per user).
    batch_size: int | None = None
    # New items' ID rows (first trained by this update) learn this many times faster than the
    # rest: they start from zero and must catch up within one update, while the trained
    # network should move gently.
    new_item_lr_scale: float = 1.0
    # Past users whose whole sequences an update replays: this share of them, or exactly
    # ``replay_users`` when that is set. A share scales with the audience, a count does not.
    replay_share: float = 1 / 3
    replay_users: int | None = None
    distill_weight: float = 0.5  # λ of the distillation term (replay-distill)
    distill_temperature: float = 1.0
    lora_rank: int = LORA_RANK
    lora_alpha: int = LORA_ALPHA
    full_epochs: int | None = None  # epochs of a full refit; None: the model config's
    # A ceiling on the update's compute: this share of a refit's, both estimated at the pace of
    # one fit (RefitCost), so the machine's speed moves neither; it ends the update mid-epoch if
    # need be. None: only ``epochs`` bounds it.
    budget: float | None = None
    seed: int = 0

    def refit_epochs(self, model: SASRecConfig) -> int:
        """Epochs of a full refit of a model with these settings."""
        return self.full_epochs or model.epochs

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown {self.strategy!r} (known: {', '.join(STRATEGIES)})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: unknown {self.lr_schedule!r} (known: {', '.join(LR_SCHEDULES)})")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1 (got {self.batch_size})")
        if not 0 < self.replay_share <= 1:
            raise ValueError(f"replay_share: must be in (0, 1] (got {self.replay_share})")
        if self.replay_users is not None and self.replay_users < 0:
            raise ValueError(f"replay_users: must be at least 0 (got {self.replay_users})")
        if not self.new_item_lr_scale > 0:
            raise ValueError(f"new_item_lr_scale: must be positive (got {self.new_item_lr_scale})")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"budget: must be in (0, 1] (got {self.budget})")


@dataclass
class UpdateResult:
    model: SASRec
    strategy: str
    seconds: float
    trained_users: int  # user sequences the update read
    learned_events: int  # next-item targets it trained on
    trainable_fraction: float  # weights allowed to change / all weights
    changed_fraction: float  # weights that did change / all weights (new items' rows count as changed)
    epochs: int  # passes begun: fewer than asked when the budget stopped it (the last may be partial)
    steps: int = 0  # optimiser steps taken

    def summary(self) -> dict[str, float | int | str]:
        return {
            "strategy": self.strategy,
            "seconds": round(self.seconds, 3),
            "trained_users": self.trained_users,
            "learned_events": self.learned_events,
            "trainable_fraction": round(self.trainable_fraction, 5),
            "changed_fraction": round(self.changed_fraction, 5),
            "epochs": self.epochs,
            "steps": self.steps,
        }


def update(
    model: SASRec,
    data: TrainingData,
    config: UpdateConfig,
    *,
    text_embeddings: np.ndarray | None = None,
    cost: RefitCost | None = None,
    progress: bool = False,
) -> UpdateResult:
    """Learn ``data`` (its ``learn`` mask marks the new events) starting from ``model``.

    ``model`` is left untouched. If ``data`` knows more items than the model,
    the model is grown first (``text_embeddings`` must then cover every item).
    ``cost``, a fit's pace, prices ``config.budget`` against a refit on ``data``.
    """
    if model.net is None:
        raise RuntimeError("update() needs a fitted model")
    if data.learn is None:
        raise ValueError("data.learn must mark the new events an update learns")
    if config.budget is not None and cost is None and config.strategy != "full":
        raise ValueError("budget: needs a fit's pace (cost=RefitCost) to price a refit by")
    started = time.perf_counter()
    if config.strategy == "full":
        return _refit(model, data, config, text_embeddings, started, progress)
    grows = data.n_items > model.n_items
    student = model.grow(data.n_items, text_embeddings) if grows else copy.deepcopy(model)
    train = training_data(data, config)
    learn = train.learn
    assert learn is not None
    learned_targets = [s[1:][m[1:]] for s, m in zip(data.sequences, learn, strict=True) if len(s) >= 2]
    learned = np.concatenate(learned_targets) if learned_targets else np.zeros(0, dtype=np.int64)
    assert student.net is not None
    before = {name: p.detach().clone() for name, p in student.net.named_parameters()}
    distillation = None
    if config.strategy == "replay-distill":  # the previous model, grown like the student, frozen
        distillation = Distillation.frozen_copy_of(
            student.net, config.distill_weight, config.distill_temperature
        )
    untrained = student.net.id_trained == 0  # ID rows no fit or update has trained yet
    student.net.id_trained[1 + np.unique(learned)] = 1.0  # new items' ID rows join in
    untrained &= student.net.id_trained > 0  # exactly the rows this update trains first
    train_config = replace(
        model.config,
        epochs=config.epochs,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        batch_size=config.batch_size or model.config.batch_size,
        seed=config.seed,
    )
    max_steps = None
    if config.budget is not None:
        assert cost is not None
        refit = cost.seconds(data, model.config, config.refit_epochs(model.config))
        rows = Rows.of(train, train_config.max_len)
        pace = cost.for_strategy(config.strategy)  # distillation and adapters step dearer
        max_steps = pace.affordable_steps(config.budget, refit, rows, train_config.batch_size)
    with _faster_rows(student.net, untrained, config.new_item_lr_scale):
        if config.strategy == "adapter":
            trainable, log = _train_adapters(
                student, train, train_config, config, untrained, max_steps, progress
            )
        else:
            log = train_network(
                student.net,
                train,
                train_config,
                progress=progress,
                distillation=distillation,
                max_steps=max_steps,
            )
            trainable = sum(p.numel() for p in student.net.parameters())
    student.net.eval()
    total = sum(p.numel() for p in student.net.parameters())
    changed = sum(int((p.detach() != before[name]).sum()) for name, p in student.net.named_parameters())
    users = sum(1 for s, m in zip(data.sequences, learn, strict=True) if len(s) >= 2 and m[1:].any())
    return UpdateResult(
        model=student,
        strategy=config.strategy,
        seconds=time.perf_counter() - started,
        trained_users=users,
        learned_events=len(learned),
        trainable_fraction=trainable / total,
        changed_fraction=changed / total,
        epochs=log.epochs,
        steps=log.steps,
    )


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


def training_data(data: TrainingData, config: UpdateConfig) -> TrainingData:
    """What an update learns: ``data`` with the strategy's replayed sequences marked too (seeded)."""
    assert data.learn is not None
    learn = list(data.learn)
    if config.strategy != "finetune":
        learn = _with_replay(data.sequences, learn, config, np.random.default_rng(config.seed))
    return replace(data, learn=learn)


def _with_replay(
    sequences: list[np.ndarray], learn: list[np.ndarray], config: UpdateConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Mark the whole sequences of uniformly drawn past users as learnable too (see ``replay_share``)."""
    past = [
        u for u, (s, m) in enumerate(zip(sequences, learn, strict=True)) if len(s) >= 2 and not m[1:].all()
    ]
    size = config.replay_users if config.replay_users is not None else round(config.replay_share * len(past))
    chosen = rng.choice(past, size=min(size, len(past)), replace=False) if past else []
    marked = list(learn)
    for user in chosen:
        marked[user] = np.ones(len(sequences[user]), dtype=bool)
    return marked


def _train_adapters(
    student: SASRec,
    data: TrainingData,
    train_config: SASRecConfig,
    config: UpdateConfig,
    untrained: torch.Tensor,
    max_steps: int | None,
    progress: bool,
) -> tuple[int, TrainingLog]:
    """LoRA on the transformer and text projection plus new items' ID rows; merged back in place.

    Returns how many weights were trainable (adapter weights plus new rows), and the training log.
    """
    net = student.net
    assert net is not None
    wrapped = with_lora(net, config.lora_rank, config.lora_alpha)  # freezes the base weights
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
    student.net = wrapped.merge_and_unload().requires_grad_(True)
    return trainable, log


def _refit(
    model: SASRec,
    data: TrainingData,
    config: UpdateConfig,
    text_embeddings: np.ndarray | None,
    started: float,
    progress: bool,
) -> UpdateResult:
    epochs = config.refit_epochs(model.config)
    fresh_config = replace(model.config, epochs=epochs, seed=config.seed)
    text = (
        None
        if model.config.item_tower == "id" or text_embeddings is None
        else text_embeddings[: data.n_items]
    )
    fresh = SASRec(fresh_config, text).fit(replace(data, learn=None), progress=progress)
    assert fresh.net is not None and fresh.training_log is not None
    targets = sum(max(len(s) - 1, 0) for s in data.sequences)
    return UpdateResult(
        model=fresh,
        strategy="full",
        seconds=time.perf_counter() - started,
        trained_users=sum(1 for s in data.sequences if len(s) >= 2),
        learned_events=targets,
        trainable_fraction=1.0,
        changed_fraction=1.0,
        epochs=fresh.training_log.epochs,
        steps=fresh.training_log.steps,
    )
