"""What a refit would cost now, from how fast the last fit trained: the unit an update's budget is in.

The training loop pads each batch to its longest row, and the transformer reads
every padded position, so an epoch's time follows the positions of the batches it
builds, its *cells*: rows × width summed over the batches. Counting padding matters
on a small log, where a few batches hold rows of very different lengths: ml-100k's
period 0 pads 9,173 next-item targets to 22,000 cells, a refit of nine periods only
77,136 to 98,064. Seconds per cell, timed on a fit's median epoch (the first pays
for warming up), then stays close to constant as a log grows: across the eight
30-epoch refits of the ml-100k, synthetic and ml-1m-ts streams, the pace of the fit
on period 0 predicted 83–106 % of each refit's wall time, where counting targets
alone predicted 96–172 % (docs/continual.md). So a refit of today's log costs about
``seconds_per_cell × cells × epochs``, without running one, and a budget taken of it
errs on the side of being kept.

A shared machine does not keep one speed, though: on this project's 2-core host the
same fits and updates ran 1.5–2.6 times slower in one session than in an earlier one. A pace timed on a
quiet machine would then starve every update made on a busy one. So the pace is
stored with the time of a small fixed workload run beside it (:func:`reference_seconds`),
and :meth:`RefitCost.now` rescales it by that workload's time when the update starts.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.loop import length_bucketed_batches

if TYPE_CHECKING:
    from streamrec.training.update import UpdateConfig

REFIT_PACE = "refit_seconds_per_cell"  # the registry timing a fit records its pace under …
REFIT_REFERENCE = "refit_reference_seconds"  # … and the reference workload's time beside it
# How far one reading of the reference workload may rescale a pace: a brief reading can
# catch a passing spike, and a ceiling should not double or halve on one.
SLOWDOWN_LIMITS = (0.5, 2.0)


def reference_seconds(repeats: int = 7) -> float:
    """Median seconds of a fixed workload shaped like a training step: how fast this CPU runs now.

    A full-softmax cross-entropy over 4,096 items for 1,024 positions of width 64, forward
    and backward, the step that dominates an epoch; each repeat takes tens of milliseconds.
    """
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(1024, 64, generator=generator, requires_grad=True)
    table = torch.randn(4096, 64, generator=generator, requires_grad=True)
    targets = torch.randint(4096, (1024,), generator=generator)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        F.cross_entropy(states @ table.T, targets).backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_cells(data: TrainingData, model: SASRecConfig) -> int:
    """Positions a refit's epoch computes: its batches' rows × widths, padded as the loop pads them."""
    lengths = np.array([min(len(s) - 1, model.max_len) for s in data.sequences if len(s) >= 2])
    batches = length_bucketed_batches(lengths, model.batch_size, np.random.default_rng(0))
    return sum(len(rows) * int(lengths[rows].max()) for rows in batches)


@dataclass(frozen=True)
class RefitCost:
    """Seconds a refit spends per training cell and epoch."""

    seconds_per_cell: float
    # reference_seconds() when the pace was timed; None where it was not (a GPU fit, an old home)
    reference_seconds: float | None = None

    @classmethod
    def timed(cls, fitted: SASRec, data: TrainingData) -> RefitCost:
        """From ``fitted``'s training log; ``data`` is what it was fitted on."""
        if fitted.training_log is None or not fitted.training_log.history:
            raise ValueError("the model has no training log to time a refit by: fit it first")
        epoch = statistics.median(record["seconds"] for record in fitted.training_log.history)
        # The reference workload runs on the CPU, so it only speaks for a fit that ran there.
        reference = reference_seconds() if fitted.device.type == "cpu" else None
        return cls(epoch / max(training_cells(data, fitted.config), 1), reference)

    def now(self) -> RefitCost:
        """This pace as the machine runs now: rescaled by the reference workload's time, within limits."""
        if self.reference_seconds is None:
            return self
        current = reference_seconds()
        low, high = SLOWDOWN_LIMITS
        slowdown = min(max(current / self.reference_seconds, low), high)
        return RefitCost(self.seconds_per_cell * slowdown, self.reference_seconds * slowdown)

    def seconds(self, data: TrainingData, model: SASRecConfig, epochs: int) -> float:
        """Estimated seconds of a refit of ``epochs`` epochs on ``data`` with ``model``'s settings."""
        return self.seconds_per_cell * training_cells(data, model) * epochs

    def ceiling(self, share: float, data: TrainingData, model: SASRecConfig, update: UpdateConfig) -> float:
        """An update's ``max_seconds`` under a budget: ``share`` of a refit of ``data``."""
        return share * self.seconds(data, model, update.refit_epochs(model))


def cost_timings(cost: RefitCost) -> dict[str, float]:
    """A refit's cost as a registry version's timings record it."""
    timings = {REFIT_PACE: cost.seconds_per_cell}
    if cost.reference_seconds is not None:
        timings[REFIT_REFERENCE] = cost.reference_seconds
    return timings


def recorded_cost(timings: dict[str, float]) -> RefitCost | None:
    """The refit cost a version's timings recorded, if any (homes from before the reference lack it)."""
    if REFIT_PACE not in timings:
        return None
    return RefitCost(timings[REFIT_PACE], timings.get(REFIT_REFERENCE))
