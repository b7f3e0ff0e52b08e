"""Prequential (test-then-train) evaluation: cut a log by time, score each period before learning it.

Periods hold equal numbers of events (time quantiles), so a quiet year and a
busy week weigh the same. Items are re-coded by first appearance, which makes
"the items that exist by the end of period p" a prefix ``0 .. n_items[p] - 1``
of the codes: growing a model to that prefix is exactly what a live system
does as its catalogue fills. A target is *cold* when its item first appeared
in the period being scored.

:func:`run_prequential` is the test-then-train loop itself, for any learners
that follow the :class:`~streamrec.models.base.Recommender` contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamrec.evaluation.metrics import RankingAccumulator
from streamrec.models.base import Recommender, TrainingData


@dataclass
class StreamSplit:
    """Every user's time-ordered events with the period each falls in."""

    data: TrainingData  # items coded by first appearance
    periods: list[np.ndarray]  # per user: the period of each event
    n_items: np.ndarray  # [P]: items that exist by the end of each period
    item_order: np.ndarray  # new code → code in the input data
    edges: np.ndarray  # [P + 1] timestamps bounding the periods

    @property
    def n_periods(self) -> int:
        return len(self.n_items)

    def through(self, period: int) -> TrainingData:
        """Events of periods ``0..period``; ``learn`` marks those of ``period`` itself."""
        keep = [p <= period for p in self.periods]
        cut = lambda arrays: None if arrays is None else [a[k] for a, k in zip(arrays, keep, strict=True)]  # noqa: E731
        return TrainingData(
            sequences=cut(self.data.sequences) or [],
            n_items=int(self.n_items[period]),
            timestamps=cut(self.data.timestamps),
            event_types=cut(self.data.event_types),
            values=cut(self.data.values),
            type_names=self.data.type_names,
            learn=[p[k] == period for p, k in zip(self.periods, keep, strict=True)],
        )

    def examples(
        self, period: int, limit: int | None, rng: np.random.Generator, *, cold_only: bool = False
    ) -> Examples:
        """Each event of ``period`` as (history so far, target); a uniform sample of ``limit`` if given.

        ``cold_only`` keeps the events whose item first appeared in this period (a
        uniform sample of the whole period holds too few of them to measure cold start).
        """
        known_before = int(self.n_items[period - 1]) if period > 0 else 0
        pairs = [
            (user, index)
            for user, p in enumerate(self.periods)
            for index in np.flatnonzero(p == period)
            if index > 0 and (not cold_only or self.data.sequences[user][index] >= known_before)
        ]
        if limit is not None and len(pairs) > limit:
            pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), size=limit, replace=False))]
        histories = [self.data.sequences[u][:i] for u, i in pairs]
        targets = np.array([self.data.sequences[u][i] for u, i in pairs], dtype=np.int64)
        return Examples(histories, targets, targets >= known_before, int(self.n_items[period]))


@dataclass
class Examples:
    histories: list[np.ndarray]
    targets: np.ndarray
    cold: np.ndarray  # bool: the target item first appeared in this period
    n_items: int  # items that exist at this point (the ranking is over these)

    def __len__(self) -> int:
        return len(self.targets)


def cut_into_periods(data: TrainingData, periods: int) -> StreamSplit:
    """Split by time into ``periods`` equal-count periods; needs ``data.timestamps``."""
    if periods < 2:
        raise ValueError(f"periods must be at least 2, got {periods}")
    return cut_at_quantiles(data, np.linspace(0, 1, periods + 1))


def cut_at_quantiles(data: TrainingData, quantiles: Sequence[float] | np.ndarray) -> StreamSplit:
    """Split by time at event-count ``quantiles`` (0 … 1, rising): period p ends at the (p + 1)-th."""
    if data.timestamps is None:
        raise ValueError("prequential evaluation needs event timestamps; this dataset has none")
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if len(quantiles) < 3 or quantiles[0] != 0 or quantiles[-1] != 1 or np.any(np.diff(quantiles) <= 0):
        raise ValueError(f"quantiles: must rise from 0 to 1 with at least 2 periods (got {quantiles})")
    periods = len(quantiles) - 1
    times = np.concatenate(data.timestamps)
    edges = np.quantile(times, quantiles)
    edges[-1] = np.inf
    period_of = [
        np.clip(np.searchsorted(edges, t, side="right") - 1, 0, periods - 1) for t in data.timestamps
    ]
    # re-code items by first appearance (time, then code for ties)
    items = np.concatenate(data.sequences)
    first_seen = np.full(data.n_items, np.inf)
    np.minimum.at(first_seen, items, times)
    order = np.lexsort((np.arange(data.n_items), first_seen))
    new_code = np.empty(data.n_items, dtype=np.int64)
    new_code[order] = np.arange(data.n_items)
    seen_period = np.searchsorted(edges, first_seen[order], side="right") - 1
    n_items = np.array([int((seen_period <= p).sum()) for p in range(periods)])
    recoded = TrainingData(
        sequences=[new_code[s] for s in data.sequences],
        n_items=data.n_items,
        timestamps=data.timestamps,
        event_types=data.event_types,
        values=data.values,
        type_names=data.type_names,
    )
    return StreamSplit(recoded, period_of, n_items, order, edges)


def score_examples(model: Recommender, examples: Examples, batch_size: int = 512) -> dict[str, float]:
    """NDCG@10 and HR@10 over all items that exist, seen items excluded; also on cold targets."""
    accumulator = RankingAccumulator(examples.n_items, ks=(10,))
    ranks = []
    for start in range(0, len(examples), batch_size):
        batch = examples.histories[start : start + batch_size]
        scores = np.asarray(model.score(batch), dtype=np.float32)[:, : examples.n_items]
        if scores.shape[1] < examples.n_items:  # items the model has not met yet rank last
            missing = np.full((len(batch), examples.n_items - scores.shape[1]), -np.inf, dtype=np.float32)
            scores = np.concatenate([scores, missing], axis=1)
        rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
        if len(rows):
            scores[rows, np.concatenate(batch)] = -np.inf
        ranks.append(accumulator.add(scores, examples.targets[start : start + batch_size]))
    result = accumulator.result()
    all_ranks = np.concatenate(ranks) if ranks else np.zeros(0)
    cold_ranks = all_ranks[examples.cold]
    hit = cold_ranks < 10
    return {
        "ndcg@10": result["ndcg@10"],
        "hr@10": result["hr@10"],
        "examples": len(examples),
        "cold_examples": len(cold_ranks),
        "cold_hr@10": float(hit.mean()) if len(cold_ranks) else float("nan"),
        "cold_ndcg@10": float((hit / np.log2(cold_ranks + 2.0)).mean()) if len(cold_ranks) else float("nan"),
    }


class Frozen(Recommender):
    """A fitted learner that never learns again: the ``static`` reference of a stream."""

    def __init__(self, learner: Recommender) -> None:
        self.learner = learner

    def fit(self, data: TrainingData) -> Frozen:
        self.learner.fit(data)
        return self

    def partial_fit(self, data: TrainingData) -> Frozen:
        return self

    def add_items(self, n_items: int) -> None:
        self.learner.add_items(n_items)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self.learner.score(histories)


def run_prequential(
    split: StreamSplit,
    learners: dict[str, Recommender],
    examples: Callable[[int], dict[str, Examples]],
    *,
    probe: Examples | None = None,
    on_period: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Test, then train: fit every learner on period 0, then per period score it first and learn it after.

    Every learner scores and learns period ``p`` before any learns ``p + 1``, so
    their learning times are measured minutes apart on the same machine, not an
    hour apart. ``examples(p)`` gives the named sets of events period ``p`` is
    scored on (called once a period). The last period is scored, never learned.
    ``probe``, when given, is scored again right after each learning step (forgetting).
    Returns each learner's records, one per scored period: its scores on each set,
    and the seconds its ``partial_fit`` took.
    """
    first = replace(split.through(0), learn=None)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in learners}
    for learner in learners.values():
        learner.fit(first)
    for period in range(1, split.n_periods):
        scored = examples(period)
        for name, learner in learners.items():
            learner.add_items(int(split.n_items[period]))
            record: dict[str, Any] = {
                "period": period,
                **{kind: score_examples(learner, events) for kind, events in scored.items()},
            }
            if period < split.n_periods - 1:
                started = time.perf_counter()
                learner.partial_fit(split.through(period))
                record["learn_seconds"] = time.perf_counter() - started
                if probe is not None:
                    record["probe_ndcg@10"] = score_examples(learner, probe)["ndcg@10"]
            records[name].append(record)
            if on_period is not None:
                on_period(name, period, record)
    return records
