"""The training loop for sequence networks: every position of every sequence at once.

Each user contributes their newest ``max_len + 1`` items as one row: inputs
are items ``0..n-1``, targets items ``1..n``, and the causal mask lets one
forward pass learn all ``n`` next-item predictions (no per-prefix copies).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from streamrec.models.base import TrainingData
from streamrec.models.sasrec_net import SASRecConfig, SASRecNet
from streamrec.training.losses import distillation_loss, full_softmax_loss, matmul_dtype


@dataclass
class TrainingBatches:
    """Right-padded training rows: ``inputs``/``targets`` hold item codes + 1 (0 = padding).

    Held compact (int32 codes, int8 types): most rows are far shorter than ``max_len``,
    so these arrays are mostly padding; a batch widens them to int64 as it is cut.
    """

    inputs: np.ndarray  # int32 [rows, max_len]
    targets: np.ndarray  # int32 [rows, max_len]
    weights: np.ndarray  # float32 [rows, max_len], next-item loss weight per target
    event_types: np.ndarray  # int8 [rows, max_len], -1 where unknown
    values: np.ndarray  # float32 [rows, max_len], NaN where absent
    lengths: np.ndarray  # int64 [rows]

    @classmethod
    def from_data(cls, data: TrainingData, config: SASRecConfig) -> TrainingBatches:
        """One row per user with something to learn in their newest ``max_len + 1`` events."""
        users = training_rows(data, config.max_len)
        rows, width = len(users), config.max_len
        inputs = np.zeros((rows, width), dtype=np.int32)
        targets = np.zeros((rows, width), dtype=np.int32)
        weights = np.zeros((rows, width), dtype=np.float32)
        event_types = np.full((rows, width), -1, dtype=np.int8)
        values = np.full((rows, width), np.nan, dtype=np.float32)
        lengths = np.zeros(rows, dtype=np.int64)
        # the last entry weighs event types the model does not know (code -1)
        type_weight = np.array([config.type_weights.get(name, 1.0) for name in data.type_names] + [1.0])
        for row, user in enumerate(users):
            window = data.sequences[user][-(width + 1) :]
            n = len(window) - 1
            inputs[row, :n] = window[:-1] + 1
            targets[row, :n] = window[1:] + 1
            lengths[row] = n
            if data.event_types is not None:
                kinds = data.event_types[user][-(width + 1) :][1:]
                event_types[row, :n] = kinds
                weights[row, :n] = type_weight[kinds]
            else:
                weights[row, :n] = 1.0
            if data.values is not None:
                values[row, :n] = data.values[user][-(width + 1) :][1:]
            if data.learn is not None:
                weights[row, :n] *= data.learn[user][-(width + 1) :][1:]
        return cls(inputs, targets, weights, event_types, values, lengths)

    def batch(self, rows: np.ndarray, width: int, device: torch.device) -> dict[str, torch.Tensor]:
        """These ``rows``, cut to ``width`` positions, as tensors on ``device`` (codes as int64)."""
        batch = {
            name: torch.from_numpy(getattr(self, name)[rows, :width]).to(device)
            for name in ("inputs", "targets", "weights", "event_types", "values")
        }
        for name in ("inputs", "targets", "event_types"):
            batch[name] = batch[name].long()
        return batch


def training_rows(data: TrainingData, max_len: int) -> list[int]:
    """The users who make a training row: something to learn in their newest ``max_len + 1`` events."""
    return [u for u, s in enumerate(data.sequences) if len(s) >= 2 and _learns(data, u, max_len)]


def row_targets(data: TrainingData, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each training row's targets (``TrainingBatches.lengths``), and how many of them the loss learns.

    Learned are those ``data.learn`` marks (all, without it); the rest of a row only reads
    as context, which costs a transformer pass but no softmax. Without building the rows.
    """
    users = training_rows(data, max_len)
    lengths = np.array([min(len(data.sequences[u]) - 1, max_len) for u in users], dtype=np.int64)
    if data.learn is None:
        return lengths, lengths.copy()
    learned = np.array([int(data.learn[u][1:][-max_len:].sum()) for u in users], dtype=np.int64)
    return lengths, learned


def _learns(data: TrainingData, user: int, max_len: int) -> bool:
    return data.learn is None or bool(data.learn[user][1:][-max_len:].any())


@dataclass
class Distillation:
    """Keep the student's next-item distribution near a frozen teacher's (as in ADER / IncCTR).

    The KL term reads ``positions`` random real positions per batch rather than
    all of them: a full ``[positions, items]`` teacher distribution per batch
    would cost more than the update itself.
    """

    teacher: SASRecNet
    weight: float = 0.5
    temperature: float = 1.0
    positions: int = 1024

    @classmethod
    def frozen_copy_of(cls, net: SASRecNet, weight: float = 0.5, temperature: float = 1.0) -> Distillation:
        """Towards a frozen copy of ``net`` as it is now, whatever ``net`` then learns."""
        return cls(copy.deepcopy(net).eval().requires_grad_(False), weight, temperature)


@dataclass
class TrainingLog:
    epochs: int = 0
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str = "epochs"
    steps: int = 0  # optimiser steps taken
    processes: int = 1  # data-parallel processes that trained together
    replica_max_diff: float = 0.0  # largest weight difference between them at the end (0: in sync)
    privacy: dict[str, Any] = field(
        default_factory=dict
    )  # a private fit's ε spent and how (training/private.py)


def sequence_loss(
    net: SASRecNet,
    batch: dict[str, torch.Tensor],
    config: SASRecConfig,
    sampling_log_q: torch.Tensor | None,
    generator: torch.Generator | None = None,
    low_precision: torch.dtype = torch.float32,
    distillation: Distillation | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-item loss (+ λ-weighted auxiliary losses) over every real position of a batch."""
    fresh = None
    if net.text_tuner is not None and net.training:
        fresh = text_tuning_sample(
            batch["targets"][batch["weights"] > 0], config.text_tuning_items, generator
        )
    table = net.item_table(fresh)
    hidden = net.encode(batch["inputs"], table)
    real = batch["targets"] > 0
    states = hidden[real]  # [N, hidden]: one row per real (position → next item) pair
    # Positions an update only reads as context weigh 0: the next-item loss skips them rather
    # than scoring them against the whole catalogue and multiplying the result by 0.
    weighted = batch["weights"] > 0  # implies a real target: padding weighs 0 too
    learned = hidden[weighted]
    targets = batch["targets"][weighted]  # item codes + 1
    weights = batch["weights"][weighted]
    if config.loss == "full":
        loss = full_softmax_loss(learned, table[1:], targets - 1, weights, dtype=low_precision)
    else:
        assert sampling_log_q is not None
        negatives = (
            torch.multinomial(sampling_log_q.exp(), config.negatives, replacement=True, generator=generator)
            + 1
        )
        correction = math.log(config.negatives)
        positive = (learned * table[targets]).sum(-1) - sampling_log_q[targets - 1] - correction
        negative = learned @ table[negatives].T - sampling_log_q[negatives - 1] - correction  # [N, K]
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)
        per_example = F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")
        loss = (per_example * weights).sum() / weights.sum().clamp_min(1e-6)
    parts = {"next_item": float(loss.detach())}
    if distillation is not None and distillation.weight > 0:
        kd = _distillation_term(distillation, batch["inputs"], real, states, table, generator)
        loss = loss + distillation.weight * kd
        parts["distillation"] = float(kd.detach())
    if config.aux_event_type_weight > 0 and net.event_type_head is not None:
        kinds = batch["event_types"][real]
        known = kinds >= 0
        if known.any():
            aux = F.cross_entropy(net.event_type_head(states[known]), kinds[known])
            loss = loss + config.aux_event_type_weight * aux
            parts["event_type"] = float(aux.detach())
    if config.aux_value_weight > 0:
        values = batch["values"][real]
        known = ~torch.isnan(values)
        if known.any():
            aux = F.mse_loss(net.value_head(states[known]).squeeze(-1), values[known])
            loss = loss + config.aux_value_weight * aux
            parts["value"] = float(aux.detach())
    return loss, parts


def text_tuning_sample(targets: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``count`` distinct items among a batch's learned targets (codes + 1): the text rows
    a step re-encodes, so the language model's adapters learn from the items being predicted."""
    items = torch.unique(targets)
    if len(items) > count:
        items = items[torch.randperm(len(items), generator=generator)[:count].to(items.device)]
    return items


def _distillation_term(
    distillation: Distillation,
    inputs: torch.Tensor,
    real: torch.Tensor,
    states: torch.Tensor,
    table: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    teacher = distillation.teacher
    count = min(distillation.positions, len(states))
    chosen = torch.randperm(len(states), generator=generator)[:count].to(states.device)
    with torch.no_grad():
        teacher.eval()
        teacher_table = teacher.item_table()
        teacher_states = teacher.encode(inputs, teacher_table)[real][chosen]
        teacher_logits = teacher_states @ teacher_table[1:].T
    student_logits = states[chosen] @ table[1:].T
    return distillation_loss(student_logits, teacher_logits, distillation.temperature)


def popularity_log_q(data: TrainingData, device: torch.device) -> torch.Tensor:
    """log of the sampling distribution for sampled softmax: popularity^0.75, smoothed."""
    counts = np.bincount(np.concatenate(data.sequences), minlength=data.n_items).astype(np.float64)
    weights = (counts + 1.0) ** 0.75
    return torch.tensor(np.log(weights / weights.sum()), dtype=torch.float32, device=device)


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Batches of rows with similar lengths (little padding), in random order.

    Rows are sorted by length times a random factor in [0.8, 1.25), so batch
    membership changes every epoch while padding stays low.
    """
    noisy = lengths * rng.uniform(0.8, 1.25, size=len(lengths))
    order = np.argsort(noisy, kind="stable")
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def parameter_groups(net: SASRecNet, config: SASRecConfig) -> list[dict[str, Any]]:
    """The trainable weights; a text tuner's adapters learn at ``text_lr_scale`` × the rate.

    At the recommender's own rate the adapters pulled the pretrained text space apart
    (synthetic stream: NDCG@10 0.403 vs 0.414 frozen); at a tenth they held it (0.415).
    """
    tuner = {id(p) for p in net.text_tuner.parameters()} if net.text_tuner is not None else set()
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": [p for p in trainable if id(p) not in tuner]}]
    text = [p for p in trainable if id(p) in tuner]
    if text:
        groups.append({"params": text, "lr": config.lr * config.text_lr_scale})
    return groups


Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]
Step = Callable[[TrainingBatches, np.ndarray, torch.device], torch.Tensor]


class OneProcess:
    """What :func:`train_network` asks of the processes it trains on, answered for this one alone.

    :class:`streamrec.training.distributed.Replicas` answers the same for one of several
    processes training together (DDP); the loop itself does not change.
    """

    def data_parallel(self, net: SASRecNet, loss: Loss) -> Step:
        """How a step's loss comes from the rows of its batch (here: all of them)."""

        def step(batches: TrainingBatches, rows: np.ndarray, device: torch.device) -> torch.Tensor:
            return loss(batches.batch(rows, int(batches.lengths[rows].max()), device))

        return step

    def first(self, value: Callable[[], float]) -> float:
        """``value()`` as rank 0 computes it: decisions that every process must take alike."""
        return value()

    def average(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        return value


def train_network(
    net: SASRecNet,
    data: TrainingData,
    config: SASRecConfig,
    *,
    validate: Callable[[], float] | None = None,
    progress: bool = True,
    epochs: int | None = None,
    distillation: Distillation | None = None,
    max_steps: int | None = None,
    replicas: OneProcess | None = None,
) -> TrainingLog:
    """AdamW over shuffled user rows; early stopping on ``validate()`` (NDCG@10), best weights kept.

    ``max_steps`` ends training after that many optimiser steps, mid-epoch if need
    be; the cosine schedule then reaches 0 at the last of them. ``replicas``: this
    process's part when several train together (:mod:`streamrec.training.distributed`).
    """
    replicas = replicas or OneProcess()
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    batches = TrainingBatches.from_data(data, config)
    log_q = popularity_log_q(data, device) if config.loss == "sampled" else None
    low_precision = matmul_dtype(config.matmul_dtype, device)
    optimizer = torch.optim.AdamW(
        parameter_groups(net, config), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98)
    )
    step_loss = replicas.data_parallel(
        net, lambda batch: sequence_loss(net, batch, config, log_q, generator, low_precision, distillation)[0]
    )
    log = TrainingLog()
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0
    started = time.perf_counter()
    total_epochs = config.epochs if epochs is None else epochs
    steps_per_epoch = math.ceil(len(batches.lengths) / config.batch_size)
    total_steps = planned = max(total_epochs * steps_per_epoch, 1)
    if max_steps is not None:
        total_steps = min(total_steps, max(max_steps, 1))
        total_epochs = min(total_epochs, math.ceil(total_steps / max(steps_per_epoch, 1)))
    steps = 0
    budget = None if config.max_minutes is None else config.max_minutes * 60

    def learning_rate_factor(step: int) -> float:
        """Cosine decay to 0 by the last epoch, or by the time budget if that comes first."""
        if config.lr_schedule == "constant":
            return 1.0
        progress = step / total_steps
        if budget:
            progress = max(progress, replicas.first(lambda: time.perf_counter() - started) / budget)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def over_budget() -> float:
        """1 if the next epoch, at this one's pace, would end past the time budget."""
        now = time.perf_counter()
        return float(budget is not None and now - started + (now - epoch_started) > budget)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    bar = tqdm(range(total_epochs), desc="train", disable=not progress, unit="epoch")
    for epoch in bar:
        net.train()
        epoch_started = time.perf_counter()
        losses = []
        for rows in length_bucketed_batches(batches.lengths, config.batch_size, rng):
            if steps == total_steps:
                break  # max_steps ends this epoch early
            steps += 1
            loss = step_loss(batches, rows, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        if net.text_tuner is not None:  # the whole cached text table follows the adapters once an epoch
            with torch.no_grad():
                net.text_embeddings[1:] = net.text_tuner.encode_all()
        record = {
            "epoch": epoch + 1,
            "loss": replicas.average(float(np.mean(losses))) if losses else float("nan"),
            "seconds": time.perf_counter() - epoch_started,  # training only, without validation
            "lr": schedule.get_last_lr()[0],  # where the schedule has brought the rate by the epoch's end
        }
        log.epochs = epoch + 1
        if validate is not None:
            score = replicas.first(validate)
            record["valid_ndcg@10"] = score
            if not score <= log.best_valid_ndcg:  # also true for the first (NaN) comparison
                log.best_valid_ndcg, log.best_epoch, since_best = score, epoch + 1, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since_best += 1
        log.history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k not in ("epoch", "seconds")})
        if validate is not None and since_best >= config.patience:
            log.stopped_by = "patience"
            break
        if budget is not None and replicas.first(over_budget):
            log.stopped_by = "time budget"  # the next epoch, at this one's pace, would end past it
            break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    log.seconds = time.perf_counter() - started
    log.steps = steps
    if steps == total_steps < planned:
        log.stopped_by = "step budget"
    return log
