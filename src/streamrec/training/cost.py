"""What training costs, from how fast the last fit trained: the unit an update's budget is in.

The training loop pads each batch to its longest row, and the transformer reads
every padded position, so most of a step's time follows its *cells* (rows ×
width). The rest does not grow with the batch: each step runs the item tower over
the whole catalogue and the optimiser over every weight. That fixed part is why
small steps cost more per cell than large ones, so a step costs
``seconds_per_cell × cells + seconds_per_step``. The two parts are told apart by
timing real steps of two sizes side by side. A one-position step, tried first,
missed part of what a small batch costs: on the synthetic stream 32-row updates
ran 1.2–1.7 times their price where refits ran 1.1–1.4 times theirs. Distillation and
adapter steps do more than a plain step, so they are timed too and priced at their own pace.

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

import numpy as np

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.adapters import with_lora
from streamrec.training.loop import Distillation, length_bucketed_batches, step_seconds, training_lengths

# The registry timings a fit records its pace under.
REFIT_PACE = "refit_seconds_per_cell"
REFIT_STEP = "refit_seconds_per_step"


def batch_cells(lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """Each step's padded cells (rows × width) in an epoch over rows of these ``lengths``.

    Batched as the training loop batches them (with a fixed seed: the widths
    barely move between epochs, since rows are bucketed by length).
    """
    batches = length_bucketed_batches(lengths, batch_size, np.random.default_rng(0))
    return np.array([len(rows) * int(lengths[rows].max()) for rows in batches], dtype=np.int64)


def refit_lengths(data: TrainingData, model: SASRecConfig) -> np.ndarray:
    """Targets per training row of a refit on ``data``, which learns every event."""
    return training_lengths(replace(data, learn=None), model.max_len)


def training_cells(data: TrainingData, model: SASRecConfig) -> int:
    """Positions a refit's epoch computes: its batches' rows × widths, padded as the loop pads them."""
    return int(batch_cells(refit_lengths(data, model), model.batch_size).sum())


# Update strategies whose steps do more than a plain training step, so have a pace of their own:
# distillation also runs the frozen teacher, adapters run through peft's LoRA wrappers.
OWN_PACE_STRATEGIES = ("replay-distill", "adapter")


@dataclass(frozen=True)
class RefitCost:
    """Seconds a training step takes: ``seconds_per_cell`` per padded cell plus ``seconds_per_step``.

    ``strategies`` holds the same two parts for the update strategies whose steps cost more
    (:data:`OWN_PACE_STRATEGIES`); every other strategy steps at the plain pace.
    """

    seconds_per_cell: float
    seconds_per_step: float = 0.0
    strategies: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def timed(cls, fitted: SASRec, data: TrainingData) -> RefitCost:
        """From ``fitted``'s training log (``data``: what it fitted) and steps of two sizes, timed now.

        The timed steps split a step into its two parts, for a plain step and for each of
        :data:`OWN_PACE_STRATEGIES`; the fit's median epoch sets the level of them all.
        """
        if fitted.training_log is None or not fitted.training_log.history or fitted.net is None:
            raise ValueError("the model has no training log to time a refit by: fit it first")
        epoch = statistics.median(record["seconds"] for record in fitted.training_log.history)
        config = fitted.config
        lengths = refit_lengths(data, config)
        cells = batch_cells(lengths, config.batch_size)
        parts = _timed_parts(fitted, data, lengths)
        plain_cell, plain_step = parts.pop("plain")
        fixed_cells = plain_step / plain_cell if plain_cell > 0 else 0.0
        # The fixed part never takes more than half an average step: timing noise on a tiny log.
        fixed_cells = min(fixed_cells, float(cells.mean()))
        per_cell = epoch / max(float(cells.sum()) + fixed_cells * len(cells), 1.0)
        if plain_cell <= 0:  # noise swamped the timed steps: the plain pace stands for every strategy
            return cls(per_cell, per_cell * fixed_cells)
        level = per_cell / plain_cell  # timed seconds → the fit's seconds
        # A strategy's step does all a plain step does and more, so never costs less per part.
        strategies = {
            name: (max(cell, plain_cell) * level, max(step, plain_cell * fixed_cells) * level)
            for name, (cell, step) in parts.items()
        }
        return cls(per_cell, per_cell * fixed_cells, strategies)

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
        return cls(timings[REFIT_PACE], timings.get(REFIT_STEP, 0.0), strategies)

    def for_strategy(self, strategy: str) -> RefitCost:
        """The pace of ``strategy``'s steps: its own where it was timed, else a plain step's."""
        cell, step = self.strategies.get(strategy, (self.seconds_per_cell, self.seconds_per_step))
        return RefitCost(cell, step)

    def timings(self) -> dict[str, float]:
        own = {f"{REFIT_PACE}:{name}": cell for name, (cell, _) in self.strategies.items()}
        own |= {f"{REFIT_STEP}:{name}": step for name, (_, step) in self.strategies.items()}
        return {REFIT_PACE: self.seconds_per_cell, REFIT_STEP: self.seconds_per_step, **own}

    def epoch_seconds(self, lengths: np.ndarray, batch_size: int) -> float:
        """Estimated seconds of one epoch over training rows of these ``lengths``."""
        cells = batch_cells(lengths, batch_size)
        return self.seconds_per_cell * float(cells.sum()) + self.seconds_per_step * len(cells)

    def seconds(self, data: TrainingData, model: SASRecConfig, epochs: int) -> float:
        """Estimated seconds of a refit of ``epochs`` epochs on ``data`` with ``model``'s settings."""
        return self.epoch_seconds(refit_lengths(data, model), model.batch_size) * epochs

    def affordable_steps(self, share: float, refit: float, lengths: np.ndarray, batch_size: int) -> int:
        """Steps over rows of these ``lengths``, ``batch_size`` a step, within ``share`` of ``refit`` seconds.

        At least one: an update that may not take a single step would not be an update.
        """
        steps = math.ceil(len(lengths) / batch_size)
        per_step = self.epoch_seconds(lengths, batch_size) / max(steps, 1)
        return max(1, int(share * refit / per_step)) if per_step > 0 else steps


def _timed_parts(fitted: SASRec, data: TrainingData, lengths: np.ndarray) -> dict[str, tuple[float, float]]:
    """Timed seconds per cell and per step of a plain step and of each :data:`OWN_PACE_STRATEGIES`'s.

    From steps of a quarter and of a whole batch, rows as wide as the median row: the
    difference is what the extra cells cost, what is left of the small step is the fixed
    part. (0, 0) for a kind whose larger step was no dearer (noise), or a one-row batch.
    """
    assert fitted.net is not None
    large = fitted.config.batch_size
    small = max(large // 4, 1)
    kinds = ("plain", *OWN_PACE_STRATEGIES)
    if small == large or len(lengths) == 0:
        return dict.fromkeys(kinds, (0.0, 0.0))
    adapted = copy.deepcopy(fitted.net)
    with_lora(adapted)  # in place: the copy's base weights freeze, its adapters learn
    steps = {
        "plain": (fitted.net, None),
        "replay-distill": (fitted.net, Distillation.frozen_copy_of(fitted.net)),
        "adapter": (adapted, None),
    }
    width = int(np.median(lengths))
    seconds = step_seconds(steps, data, fitted.config, (small, large), width)
    parts = {}
    for kind in kinds:
        small_step, large_step = seconds[kind]
        per_cell = (large_step - small_step) / ((large - small) * width)
        fixed = max(small_step - per_cell * small * width, 0.0)
        parts[kind] = (0.0, 0.0) if per_cell <= 0 else (per_cell, fixed)
    return parts
