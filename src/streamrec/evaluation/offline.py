"""Leave-one-out by time with full ranking: the protocol of the SASRec/RecBole literature.

Each user's last item is the test target, the one before it the validation
target; models train on the rest. Every item in the catalogue is ranked (no
sampled negatives). Headline metrics exclude the items already in the user's
history; ``*_unfiltered`` figures rank everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.evaluation.metrics import RankingAccumulator
from streamrec.models.base import Recommender, TrainingData


@dataclass
class LeaveOneOut:
    train: TrainingData
    valid_histories: list[np.ndarray]
    valid_targets: np.ndarray
    test_histories: list[np.ndarray]
    test_targets: np.ndarray


def leave_one_out(data: TrainingData) -> LeaveOneOut:
    """Split every user with at least 3 items; shorter users only train."""
    drops = [2 if len(s) >= 3 else 0 for s in data.sequences]
    evaluated = [s for s in data.sequences if len(s) >= 3]
    return LeaveOneOut(
        train=data.without_last(drops),
        valid_histories=[s[:-2] for s in evaluated],
        valid_targets=np.array([s[-2] for s in evaluated], dtype=np.int64),
        test_histories=[s[:-1] for s in evaluated],
        test_targets=np.array([s[-1] for s in evaluated], dtype=np.int64),
    )


def evaluate(
    model: Recommender,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 1024,
    unfiltered: bool = True,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` predicting ``targets`` from ``histories``."""
    filtered = RankingAccumulator(model.n_items, ks)
    raw = RankingAccumulator(model.n_items, ks)
    for start in range(0, len(targets), batch_size):
        batch = histories[start : start + batch_size]
        scores = np.asarray(model.score(batch), dtype=np.float32)
        if unfiltered:
            raw.add(scores, targets[start : start + batch_size])
        rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
        scores[rows, np.concatenate(batch) if len(rows) else rows] = -np.inf
        filtered.add(scores, targets[start : start + batch_size])
    result = filtered.result()
    if unfiltered:
        result.update(
            {f"{name}_unfiltered": value for name, value in raw.result().items() if name != "examples"}
        )
    return result
