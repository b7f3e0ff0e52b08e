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
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.loop import length_bucketed_batches

if TYPE_CHECKING:
    from streamrec.training.update import UpdateConfig

REFIT_PACE = "refit_seconds_per_cell"  # the registry timing a fit records its pace under


def training_cells(data: TrainingData, model: SASRecConfig) -> int:
    """Positions a refit's epoch computes: its batches' rows × widths, padded as the loop pads them."""
    lengths = np.array([min(len(s) - 1, model.max_len) for s in data.sequences if len(s) >= 2])
    batches = length_bucketed_batches(lengths, model.batch_size, np.random.default_rng(0))
    return sum(len(rows) * int(lengths[rows].max()) for rows in batches)


@dataclass(frozen=True)
class RefitCost:
    """Seconds a refit spends per training cell and epoch."""

    seconds_per_cell: float

    @classmethod
    def timed(cls, fitted: SASRec, data: TrainingData) -> RefitCost:
        """From ``fitted``'s training log; ``data`` is what it was fitted on."""
        if fitted.training_log is None or not fitted.training_log.history:
            raise ValueError("the model has no training log to time a refit by: fit it first")
        epoch = statistics.median(record["seconds"] for record in fitted.training_log.history)
        return cls(epoch / max(training_cells(data, fitted.config), 1))

    def seconds(self, data: TrainingData, model: SASRecConfig, epochs: int) -> float:
        """Estimated seconds of a refit of ``epochs`` epochs on ``data`` with ``model``'s settings."""
        return self.seconds_per_cell * training_cells(data, model) * epochs

    def ceiling(self, share: float, data: TrainingData, model: SASRecConfig, update: UpdateConfig) -> float:
        """An update's ``max_seconds`` under a budget: ``share`` of a refit of ``data``."""
        return share * self.seconds(data, model, update.refit_epochs(model))
