"""What a refit would cost now, from how fast the last fit trained: the unit an update's budget is in.

The training loop pads each batch only to its longest row, so an epoch's time
follows the number of next-item positions it trains on (each user's newest
``max_len``), its *cells*. Seconds per cell, timed on a fit's median epoch (the
first pays for warming up), stays close to constant as a log grows: eight 30-epoch
refits of ml-100k, from 18k to 77k cells, took 15.7–17.4 µs per cell and epoch.
So a refit of today's log costs about ``seconds_per_cell × cells × epochs``,
without running one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig

if TYPE_CHECKING:
    from streamrec.training.update import UpdateConfig

REFIT_PACE = "refit_seconds_per_cell"  # the registry timing a fit records its pace under


def training_cells(data: TrainingData, max_len: int) -> int:
    """Positions a refit trains on per epoch: each user's newest ``max_len`` next-item targets."""
    return sum(min(len(s) - 1, max_len) for s in data.sequences if len(s) >= 2)


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
        return cls(epoch / max(training_cells(data, fitted.config.max_len), 1))

    def seconds(self, data: TrainingData, max_len: int, epochs: int) -> float:
        """Estimated seconds of a refit of ``epochs`` epochs on ``data``."""
        return self.seconds_per_cell * training_cells(data, max_len) * epochs

    def ceiling(self, share: float, data: TrainingData, model: SASRecConfig, update: UpdateConfig) -> float:
        """An update's ``max_seconds`` under a budget: ``share`` of a refit of ``data``."""
        return share * self.seconds(data, model.max_len, update.refit_epochs(model))
