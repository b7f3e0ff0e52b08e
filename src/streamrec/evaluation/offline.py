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
from streamrec.models.base import Scorer, TrainingData


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


# Scores held per batch: 2^25 float32 = 128 MB (a million items: 32 users a batch; at 1,024
# users a batch the scores of a 1 M-item catalogue took 18 GB with their copies). Catalogues
# up to 32,768 items keep the full 1,024 users a batch.
SCORES_PER_BATCH = 1 << 25


def evaluate(
    model: Scorer,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 1024,
    unfiltered: bool = True,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` predicting ``targets`` from ``histories``.

    At most ``batch_size`` histories are scored at once, fewer for a large catalogue: a
    batch's score matrix stays within :data:`SCORES_PER_BATCH` entries. Histories of
    similar length are scored together, so a model that pads a batch to its longest
    history reads little padding (the metrics are sums: the order does not change them).
    """
    filtered = RankingAccumulator(model.n_items, ks)
    raw = RankingAccumulator(model.n_items, ks)
    batch_size = max(1, min(batch_size, SCORES_PER_BATCH // max(model.n_items, 1)))
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(targets), batch_size):
        chosen = order[start : start + batch_size]
        batch = [histories[i] for i in chosen]
        scores = np.asarray(model.score(batch), dtype=np.float32)
        if unfiltered:
            raw.add(scores, targets[chosen])
        rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
        scores[rows, np.concatenate(batch) if len(rows) else rows] = -np.inf
        filtered.add(scores, targets[chosen])
    result = filtered.result()
    if unfiltered:
        result.update(
            {f"{name}_unfiltered": value for name, value in raw.result().items() if name != "examples"}
        )
    return result
