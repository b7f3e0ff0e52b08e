"""Full-ranking metrics: NDCG@K, HR@K, MRR@K and catalogue coverage@K.

The rank of a target is the number of items scored strictly above it, so
ties are resolved in the target's favour the same way for every model.

>>> acc = RankingAccumulator(n_items=4, ks=(1, 2))
>>> acc.add(np.array([[0.1, 0.9, 0.5, 0.2]]), np.array([2]))  # returns the target ranks
array([1])
>>> round(acc.result()["ndcg@2"], 4), acc.result()["hr@1"]
(0.6309, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all items (``scores`` is ``[B, n_items]``)."""
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    return (scores > target_scores).sum(axis=1)


class RankingAccumulator:
    """Sums per-example metrics over batches; ``result()`` gives the means."""

    def __init__(
        self, n_items: int, ks: Sequence[int] = (10, 20), mrr_k: int = 10, coverage_k: int = 10
    ) -> None:
        self.n_items = n_items
        self.ks = tuple(ks)
        self.mrr_k = mrr_k
        self.coverage_k = coverage_k
        self.count = 0
        # every metric present from the start, so an empty evaluation reports zeros, not a missing key
        names = [f"{m}@{k}" for k in self.ks for m in ("hr", "ndcg")] + [f"mrr@{mrr_k}"]
        self.sums: dict[str, float] = dict.fromkeys(names, 0.0)
        self.recommended = np.zeros(n_items, dtype=bool)

    def add(self, scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Score one batch; returns the targets' ranks (useful for per-segment metrics)."""
        ranks = target_ranks(scores, targets)
        for k in self.ks:
            hit = ranks < k
            self._sum(f"hr@{k}", hit.sum())
            self._sum(f"ndcg@{k}", (hit / np.log2(ranks + 2.0)).sum())
        self._sum(f"mrr@{self.mrr_k}", ((ranks < self.mrr_k) / (ranks + 1.0)).sum())
        k = min(self.coverage_k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        self.recommended[top.ravel()] = True
        self.count += len(targets)
        return ranks

    def _sum(self, name: str, value: float) -> None:
        self.sums[name] += float(value)

    def result(self) -> dict[str, float]:
        means = {name: total / max(self.count, 1) for name, total in self.sums.items()}
        means[f"coverage@{self.coverage_k}"] = float(self.recommended.mean()) if self.n_items else 0.0
        means["examples"] = self.count
        return means
