"""The contract every recommender follows: ``fit`` on sequences, ``score`` histories.

Items are integer codes ``0 .. n_items - 1`` (a :class:`~streamrec.store.SequenceTable`
translates them to ids). A model only has to say how much each item suits each
history; ranking, excluding seen items and top-k are derived here, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


@dataclass
class TrainingData:
    """What a recommender learns from: one time-ordered item-code array per user.

    ``timestamps`` and ``event_types`` are aligned with ``sequences`` when known
    (``None`` for order-only datasets); ``type_names`` decodes event types.
    ``learn`` (incremental updates) marks the events whose prediction is
    trained on; the others are read as context only. ``None`` learns them all.
    """

    sequences: list[np.ndarray]
    n_items: int
    timestamps: list[np.ndarray] | None = None
    event_types: list[np.ndarray] | None = None
    values: list[np.ndarray] | None = None
    type_names: list[str] = field(default_factory=list)
    learn: list[np.ndarray] | None = None

    def without_last(self, drops: Sequence[int]) -> TrainingData:
        """The same data minus the last ``drops[u]`` events of each user ``u`` (held out)."""
        return self._per_user(lambda arrays: [a[: len(a) - d] for a, d in zip(arrays, drops, strict=True)])

    def masked(self, keep: Sequence[np.ndarray]) -> TrainingData:
        """Each user's events where ``keep[u]`` is true (every user keeps their index)."""
        return self._per_user(lambda arrays: [a[k] for a, k in zip(arrays, keep, strict=True)])

    def learned_only(self) -> TrainingData:
        """Only the events ``learn`` marks, each user still at their index (all events without it)."""
        if self.learn is None:
            return self
        return replace(self.masked(self.learn), learn=None)

    def of_users(self, users: Sequence[int]) -> TrainingData:
        """The same data for these ``users`` only, in this order."""
        return self._per_user(lambda arrays: [arrays[u] for u in users])

    def _per_user(self, change: Callable[[list[np.ndarray]], list[np.ndarray]]) -> TrainingData:
        """``change`` applied alike to every per-user list (sequences and the arrays aligned with them)."""

        def apply(arrays: list[np.ndarray] | None) -> list[np.ndarray] | None:
            return None if arrays is None else change(arrays)

        return replace(
            self,
            sequences=change(self.sequences),
            timestamps=apply(self.timestamps),
            event_types=apply(self.event_types),
            values=apply(self.values),
            learn=apply(self.learn),
        )


class Scorer(Protocol):
    """What evaluation needs of a model: how many items it ranks, and scores for histories."""

    n_items: int

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray: ...


class Recommender(ABC):
    """Base class: subclasses implement ``fit``, ``partial_fit`` and ``score``; ``recommend`` comes free.

    ``fit`` learns from scratch; ``partial_fit`` learns the events ``data.learn``
    marks (every event when it is None), each user at the same index as before,
    reading the rest as context. Both return ``self``, as in scikit-learn.
    """

    n_items: int = 0

    @abstractmethod
    def fit(self, data: TrainingData) -> Recommender:
        """Learn from scratch on ``data``; returns ``self``."""

    @abstractmethod
    def partial_fit(self, data: TrainingData) -> Recommender:
        """Learn the new events ``data.learn`` marks, keeping what was learned before; returns ``self``."""

    def add_items(self, n_items: int) -> None:  # noqa: B027 (a hook: most models need nothing)
        """The catalogue now holds ``n_items`` items; a model that can score unseen ones grows to them."""

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores ``[len(histories), n_items]`` (float32): higher means more likely next."""

    def recommend(
        self, history: np.ndarray, k: int = 10, *, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item codes and their scores for one history."""
        scores = self.score([history])[0]
        return top_k(scores, k, exclude=history if exclude_seen else None)


def top_k(scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best entries of a score vector, best first; ``exclude`` codes never appear."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and len(exclude):
        scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return best.astype(np.int64), scores[best]
