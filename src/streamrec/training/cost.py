"""What training costs, from how fast the last fit trained: the unit an update's budget is in.

The training loop pads each batch to its longest row, and the transformer reads
every padded position, so much of a step's time follows its *cells* (rows ×
width). Positions the loss learns also pay the softmax over the catalogue, which
context positions (an update's history before its new events) skip: with 1,300
to 3,000 items, a learned position cost 1.7–2.4 times a context one.
The rest does not grow with the batch: each step runs the item tower over the
whole catalogue and the optimiser over every weight. So a step costs
``seconds_per_cell × cells + seconds_per_target × learned + seconds_per_step``.
The three parts are told apart by timing real steps of two sizes side by side,
once learning every position and once learning only the last. Priced by cells
alone, an update that reads partly context (``finetune``, or replaying a third of
the users) was priced as if it learned every position: 3–11 % too dear (see
``scripts/step_parts.py``). Distillation and adapter steps do more than a plain
step, so they are timed too and priced at their own pace.

An update's budget is a share of a refit's *compute*, both estimated with one
fit's pace: a machine that slows down or speeds up after the fit changes the
update's wall time and the refit's alike, so it changes neither the steps an
update may take nor the share it ends up using. Timing wall seconds against a
ceiling set once did not hold: on a shared machine refits ran 1.1–1.8 times
slower than the fit that set it, and updates were starved (docs/continual.md).
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.adapters import with_lora
from streamrec.training.loop import (
    Distillation,
    length_bucketed_batches,
    row_targets,
    step_seconds,
)

# The registry timings a fit records its pace under.
REFIT_PACE = "refit_seconds_per_cell"
REFIT_STEP = "refit_seconds_per_step"
REFIT_TARGET = "refit_seconds_per_target"


@dataclass(frozen=True)
class Rows:
    """An epoch's training rows as a price reads them: each row's width and the targets it learns."""

    lengths: np.ndarray
    learned: np.ndarray

    @classmethod
    def of(cls, data: TrainingData, max_len: int) -> Rows:
        return cls(*row_targets(data, max_len))

    def batches(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Each step's padded cells (rows × width) and learned targets in an epoch over these rows.

        Batched as the training loop batches them (with a fixed seed: the widths
        barely move between epochs, since rows are bucketed by length).
        """
        batches = length_bucketed_batches(self.lengths, batch_size, np.random.default_rng(0))
        cells = [len(rows) * int(self.lengths[rows].max()) for rows in batches]
        learned = [int(self.learned[rows].sum()) for rows in batches]
        return np.array(cells, dtype=np.int64), np.array(learned, dtype=np.int64)


def refit_rows(data: TrainingData, model: SASRecConfig) -> Rows:
    """The training rows of a refit on ``data``, which learns every event."""
    return Rows.of(replace(data, learn=None), model.max_len)


def training_cells(data: TrainingData, model: SASRecConfig) -> int:
    """Positions a refit's epoch computes: its batches' rows × widths, padded as the loop pads them."""
    cells, _ = refit_rows(data, model).batches(model.batch_size)
    return int(cells.sum())


# Update strategies whose steps do more than a plain training step, so have a pace of their own:
# distillation also runs the frozen teacher, adapters run through peft's LoRA wrappers.
OWN_PACE_STRATEGIES = ("replay-distill", "adapter")


class StepParts(NamedTuple):
    """Seconds a step spends per padded cell, per learned target, and once whatever its size."""

    cell: float
    target: float
    step: float


@dataclass(frozen=True)
class RefitCost:
    """Seconds a training step takes: per padded cell, per learned target, and a fixed part per step.

    ``strategies`` holds the cell and step parts of the update strategies whose steps cost
    more (:data:`OWN_PACE_STRATEGIES`); every other strategy steps at the plain pace. A
    learned target costs every strategy alike: the softmax over the catalogue.
    """

    seconds_per_cell: float
    seconds_per_step: float = 0.0
    seconds_per_target: float = 0.0
    strategies: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def timed(cls, fitted: SASRec, data: TrainingData) -> RefitCost:
        """From ``fitted``'s training log (``data``: what it fitted) and steps of two sizes, timed now.

        The timed steps split a step into its parts, for a plain step and for each of
        :data:`OWN_PACE_STRATEGIES`; the fit's median epoch sets the level of them all.
        """
        if fitted.training_log is None or not fitted.training_log.history or fitted.net is None:
            raise ValueError("the model has no training log to time a refit by: fit it first")
        epoch = statistics.median(record["seconds"] for record in fitted.training_log.history)
        config = fitted.config
        rows = refit_rows(data, config)
        cells, learned = rows.batches(config.batch_size)
        parts = _timed_parts(fitted, data, rows.lengths)
        plain = parts.pop("plain")
        if plain.cell + plain.target <= 0:  # noise swamped the timed steps: one pace per cell for all
            return cls(epoch / max(float(cells.sum()), 1.0))
        variable = plain.cell * cells + plain.target * learned
        # The fixed part never takes more than half an average step: timing noise on a tiny log.
        fixed = min(plain.step, float(variable.mean()))
        level = epoch / (float(variable.sum()) + fixed * len(cells))  # timed seconds → the fit's seconds
        # A strategy's step does all a plain step does and more, so never costs less per part.
        strategies = {
            name: (max(part.cell, plain.cell) * level, max(part.step, fixed) * level)
            for name, part in parts.items()
        }
        return cls(plain.cell * level, fixed * level, plain.target * level, strategies)

    @classmethod
    def from_timings(cls, timings: dict[str, float]) -> RefitCost | None:
        """The pace a registry version recorded; None when it recorded none."""
        if REFIT_PACE not in timings:
            return None
        strategies = {
            name: (timings[f"{REFIT_PACE}:{name}"], timings.get(f"{REFIT_STEP}:{name}", 0.0))
            for name in OWN_PACE_STRATEGIES
            if f"{REFIT_PACE}:{name}" in timings
        }
        step, target = timings.get(REFIT_STEP, 0.0), timings.get(REFIT_TARGET, 0.0)
        return cls(timings[REFIT_PACE], step, target, strategies)

    def for_strategy(self, strategy: str) -> RefitCost:
        """The pace of ``strategy``'s steps: its own where it was timed, else a plain step's."""
        cell, step = self.strategies.get(strategy, (self.seconds_per_cell, self.seconds_per_step))
        return RefitCost(cell, step, self.seconds_per_target)

    def timings(self) -> dict[str, float]:
        own = {f"{REFIT_PACE}:{name}": cell for name, (cell, _) in self.strategies.items()}
        own |= {f"{REFIT_STEP}:{name}": step for name, (_, step) in self.strategies.items()}
        plain = {REFIT_PACE: self.seconds_per_cell, REFIT_STEP: self.seconds_per_step}
        return {**plain, REFIT_TARGET: self.seconds_per_target, **own}

    def epoch_seconds(self, rows: Rows, batch_size: int) -> float:
        """Estimated seconds of one epoch over these training ``rows``."""
        cells, learned = rows.batches(batch_size)
        return (
            self.seconds_per_cell * float(cells.sum())
            + self.seconds_per_target * float(learned.sum())
            + self.seconds_per_step * len(cells)
        )

    def seconds(self, data: TrainingData, model: SASRecConfig, epochs: int) -> float:
        """Estimated seconds of a refit of ``epochs`` epochs on ``data`` with ``model``'s settings."""
        return self.epoch_seconds(refit_rows(data, model), model.batch_size) * epochs

    def affordable_steps(self, share: float, refit: float, rows: Rows, batch_size: int) -> int:
        """Steps over these ``rows``, ``batch_size`` a step, within ``share`` of ``refit`` seconds.

        At least one: an update that may not take a single step would not be an update.
        """
        steps = math.ceil(len(rows.lengths) / batch_size)
        per_step = self.epoch_seconds(rows, batch_size) / max(steps, 1)
        return max(1, int(share * refit / per_step)) if per_step > 0 else steps


def _timed_parts(fitted: SASRec, data: TrainingData, lengths: np.ndarray) -> dict[str, StepParts]:
    """Timed parts of a plain step and of each :data:`OWN_PACE_STRATEGIES`'s.

    From steps of a quarter and of a whole batch, rows as wide as the median row (or as
    a small step needs to hold the positions distillation scores): the
    difference is what the extra rows cost, what is left of the small step is the fixed
    part. A plain step also runs with rows that learn only their last position: what it
    saves per row prices a learned target against a cell read as context. Zeros for a
    kind whose larger step was no dearer (noise), or a one-row batch.
    """
    assert fitted.net is not None
    large = fitted.config.batch_size
    small = max(large // 4, 1)
    kinds = ("plain", *OWN_PACE_STRATEGIES)
    nothing = StepParts(0.0, 0.0, 0.0)
    if small == large or len(lengths) == 0:
        return dict.fromkeys(kinds, nothing)
    adapted = copy.deepcopy(fitted.net)
    with_lora(adapted)  # in place: the copy's base weights freeze, its adapters learn
    distillation = Distillation.frozen_copy_of(fitted.net)
    steps = {
        "plain": (fitted.net, None),
        "context": (fitted.net, None),
        "replay-distill": (fitted.net, distillation),
        "adapter": (adapted, None),
    }
    # Rows at least wide enough that the small step too scores every position distillation reads,
    # as an update's steps do: else the two sizes differ by part of that work, and it is priced
    # per cell.
    width = max(int(np.median(lengths)), math.ceil(distillation.positions / small))
    width = min(width, int(lengths.max()))
    seconds = step_seconds(steps, data, fitted.config, (small, large), width, context_kinds=("context",))
    per_row = {
        kind: (large_step - small_step) / (large - small)
        for kind, (small_step, large_step) in seconds.items()
    }
    if per_row["plain"] <= 0:
        return dict.fromkeys(kinds, nothing)
    # Per row, learning every position costs (cell + target) × width; learning the last only,
    # cell × width + target.
    target = (per_row["plain"] - per_row["context"]) / (width - 1) if width > 1 else 0.0
    target = min(max(target, 0.0), per_row["plain"] / width)
    fixed = {kind: max(seconds[kind][0] - per_row[kind] * small, 0.0) for kind in seconds}
    # Learning fewer positions changes no fixed work, so both plain steps measure the plain fixed part.
    fixed["plain"] = (fixed["plain"] + fixed["context"]) / 2
    return {
        kind: StepParts(max(per_row[kind] / width - target, 0.0), target, fixed[kind])
        if per_row[kind] > 0
        else nothing
        for kind in kinds
    }
