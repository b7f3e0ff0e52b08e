"""Baselines every benchmark runs beside the deep model: popularity, recent popularity, item-KNN.

They are the floor: a sequential model that does not clearly beat them has not
learnt anything worth its cost. All three are numpy/scipy only, vectorised, fit
in seconds on ML-1M and learn incrementally with ``partial_fit``.

``partial_fit`` learns the events ``TrainingData.learn`` marks (or every event
of the data when it marks none), each user aligned by list index with the users
seen before (index ``u`` is the same user in every call; extra entries are new
users). ``n_items`` may grow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from streamrec.models.base import Recommender, TrainingData

TIE_BREAK = 1e-9  # weight of the (max-normalised) popularity added to ItemKNN scores (far below any
# similarity: the weakest ML-1M co-occurrence weighted by 0.8 ** 19 is still ~1e-6)


def _flat(arrays: Sequence[np.ndarray], dtype: type = np.int64) -> np.ndarray:
    """All arrays end to end (an empty array when there are none)."""
    if not len(arrays):
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def _item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interactions per item code; codes must lie in ``0 .. n_items - 1``."""
    items = _flat(sequences)
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item codes must lie in 0 .. {n_items - 1}")
    return np.bincount(items, minlength=n_items).astype(np.int64)


def _grow(vector: np.ndarray, n_items: int) -> np.ndarray:
    """``vector`` zero-padded to ``n_items`` entries (new items have no counts yet)."""
    if len(vector) >= n_items:
        return vector
    return np.concatenate([vector, np.zeros(n_items - len(vector), dtype=vector.dtype)])


def _rows(vector: np.ndarray, n_rows: int) -> np.ndarray:
    """``n_rows`` writeable float32 copies of ``vector``: one score row per history."""
    return np.tile(vector.astype(np.float32), (n_rows, 1))


def _tail_length(n_events: int, fraction: float) -> int:
    """How many of a user's newest events make up ``fraction`` of them (at least one)."""
    if n_events == 0:
        return 0
    return max(1, math.ceil(fraction * n_events - 1e-9))


class MostPopular(Recommender):
    """Scores every item by its global interaction count, whatever the history.

    Captures only what is popular: no personalisation, no order. It exists as the
    floor: on most datasets a surprisingly large share of next items are simply
    the popular ones, and any model must beat this clearly to be worth serving.

    >>> data = TrainingData([np.array([0, 1, 2]), np.array([2, 1]), np.array([2])], n_items=4)
    >>> model = MostPopular().fit(data)
    >>> model.score([np.array([0]), np.array([], dtype=np.int64)]).tolist()
    [[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 0.0]]
    >>> model.recommend(np.array([2]), k=2)[0].tolist()
    [1, 0]
    >>> model.partial_fit(TrainingData([np.array([3, 3, 3, 3])], n_items=4)).counts.tolist()
    [1, 2, 3, 4]
    """

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.int64)

    def fit(self, data: TrainingData) -> MostPopular:
        self.counts = np.zeros(0, dtype=np.int64)
        self.n_items = 0
        return self.partial_fit(data)

    def partial_fit(self, data: TrainingData) -> MostPopular:
        """Adds the counts of the new events in ``data``."""
        data = data.learned_only()
        self.n_items = max(self.n_items, data.n_items)
        self.counts = _grow(self.counts, self.n_items) + _item_counts(data.sequences, self.n_items)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return _rows(self.counts, len(histories))


class RecentPopular(Recommender):
    """Scores items by how popular they are *lately*; all-time popularity breaks ties.

    With timestamps, "lately" is the last ``window_seconds`` before the newest
    training timestamp (events at or after ``newest - window_seconds``). When
    ``timestamps`` is ``None`` (order-only datasets) it is instead the newest
    ``window_fraction`` of each user's events (at least one event per user).

    Captures trends and freshness (new releases, seasonal items), which plain
    popularity misses; a floor for a model meant to follow a live stream. The
    score is ``recent_count + all_time_count / (max_all_time_count + 1)``, so the
    tie-break never reorders items with different recent counts.

    ``partial_fit`` refits on the window: it keeps just the events that can still
    fall inside one (events older than the window never return to it), adds the
    new ones and recounts, so it gives exactly what ``fit`` on all events gives.

    >>> day = 86400.0
    >>> data = TrainingData(
    ...     [np.array([0, 0, 1]), np.array([0, 2, 2])], n_items=3,
    ...     timestamps=[np.array([0.0, day, 30 * day]), np.array([day, 29 * day, 30 * day])],
    ... )
    >>> model = RecentPopular(window_seconds=7 * day).fit(data)
    >>> model.recommend(np.array([], dtype=np.int64), k=3)[0].tolist()
    [2, 1, 0]
    >>> untimed = RecentPopular(window_fraction=0.5).fit(TrainingData([np.array([0, 0, 0, 1, 1])], n_items=2))
    >>> untimed.recent.tolist(), untimed.total.tolist()
    ([1, 2], [3, 2])
    """

    def __init__(self, window_seconds: float = 7 * 86400, window_fraction: float = 0.1) -> None:
        if window_seconds < 0:
            raise ValueError("window_seconds must be >= 0")
        if not 0 < window_fraction <= 1:
            raise ValueError("window_fraction must lie in (0, 1]")
        self.window_seconds = float(window_seconds)
        self.window_fraction = float(window_fraction)
        self._reset()

    def _reset(self) -> None:
        self.n_items = 0
        self.total = np.zeros(0, dtype=np.int64)  # all-time counts
        self.recent = np.zeros(0, dtype=np.int64)  # counts inside the window
        self.timed: bool | None = None  # whether the data came with timestamps
        self.newest: float | None = None  # newest training timestamp (timed)
        # what may still fall inside a window: timed, the events in it; untimed, each user's tail
        self._items = np.zeros(0, dtype=np.int64)
        self._times = np.zeros(0, dtype=np.float64)
        self._tails: list[np.ndarray] = []
        self._lengths: list[int] = []  # events seen per user (untimed)

    def fit(self, data: TrainingData) -> RecentPopular:
        self._reset()
        return self.partial_fit(data)

    def partial_fit(self, data: TrainingData) -> RecentPopular:
        """Adds new events and recounts the window (timed or not, as in the first fit)."""
        data = data.learned_only()
        timed = data.timestamps is not None
        if self.timed is None:
            self.timed = timed
        elif timed != self.timed:
            raise ValueError("partial_fit data must have timestamps exactly when the fitted data had them")
        self.n_items = max(self.n_items, data.n_items)
        self.total = _grow(self.total, self.n_items) + _item_counts(data.sequences, self.n_items)
        if timed:
            assert data.timestamps is not None
            items = np.concatenate([self._items, _flat(data.sequences)])
            times = np.concatenate([self._times, _flat(data.timestamps, np.float64)])
            if len(times):
                self.newest = float(times.max())
                keep = times >= self.newest - self.window_seconds
                items, times = items[keep], times[keep]
            self._items, self._times = items, times
        else:
            for user, events in enumerate(data.sequences):
                if user == len(self._tails):
                    self._tails.append(np.zeros(0, dtype=np.int64))
                    self._lengths.append(0)
                seen = self._lengths[user] + len(events)
                tail_start = self._lengths[user] - len(self._tails[user])  # absolute index of kept tail
                start = seen - _tail_length(seen, self.window_fraction)  # never moves backwards
                combined = np.concatenate([self._tails[user], np.asarray(events, dtype=np.int64)])
                self._tails[user] = combined[start - tail_start :]
                self._lengths[user] = seen
            self._items = _flat(self._tails)
        self.recent = np.bincount(self._items, minlength=self.n_items).astype(np.int64)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        tie = self.total / (float(self.total.max(initial=0)) + 1.0)
        return _rows(self.recent + tie, len(histories))


class ItemKNN(Recommender):
    """Item-to-item nearest neighbours from co-occurrence in nearby sequence positions.

    Captures "people who just had *i* go on to *j*": local, short-range sequential
    structure, with no learning beyond counting. It is the strong, cheap floor for
    sequential models: if the deep model cannot beat it, its extra context and
    parameters buy nothing.

    Co-occurrence is directional. ``follows[i, j]`` counts how often ``j`` came
    1..``window`` positions after ``i`` in a user's sequence (unweighted by
    distance). The association ``i → j`` is ``follows[i, j] + backward *
    follows[j, i]``: the forward direction counts fully and the reverse with
    factor ``backward`` (0.5), since what follows an item predicts the next item
    better than what preceded it, but the reverse still signals relatedness.
    Self-pairs (repeats) are ignored. Similarity is cosine-normalised with
    shrinkage, ``assoc(i, j) / (sqrt(count_i * count_j) + shrink)``, and only the
    top ``neighbors`` per item are kept (a sparse ``scipy.sparse`` matrix).

    A history's score is the sum of the similarity rows of its last ``recent``
    items weighted by ``decay ** age`` (newest item age 0), plus a tiny
    popularity term (``TIE_BREAK`` times max-normalised counts) that ranks items
    without similarity, and empty histories, by popularity.

    ``partial_fit`` adds the new events' co-occurrences, including pairs that
    span each user's previous last ``window`` items and the new events, and
    rebuilds the pruned similarity: the same result as ``fit`` on all events.

    >>> data = TrainingData([np.array([0, 1, 2, 3]), np.array([1, 2, 3]), np.array([0, 1, 2])], n_items=5)
    >>> model = ItemKNN(window=1).fit(data)
    >>> model.recommend(np.array([0, 1]), k=2)[0].tolist()
    [2, 3]
    >>> model.recommend(np.array([], dtype=np.int64), k=2)[0].tolist()
    [1, 2]
    """

    def __init__(
        self,
        neighbors: int = 100,
        window: int = 5,
        shrink: float = 10.0,
        recent: int = 20,
        decay: float = 0.8,
        backward: float = 0.5,
    ) -> None:
        if neighbors < 1 or window < 1 or recent < 1:
            raise ValueError("neighbors, window and recent must be >= 1")
        if shrink < 0 or decay < 0 or backward < 0:
            raise ValueError("shrink, decay and backward must be >= 0")
        self.neighbors = neighbors
        self.window = window
        self.shrink = float(shrink)
        self.recent = recent
        self.decay = float(decay)
        self.backward = float(backward)
        self._reset()

    def _reset(self) -> None:
        self.n_items = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.follows = sparse.csr_array((0, 0), dtype=np.int64)
        self.similarity = sparse.csr_array((0, 0), dtype=np.float32)
        self._popularity = np.zeros(0, dtype=np.float32)
        self._tails: list[np.ndarray] = []  # each user's last `window` items

    def fit(self, data: TrainingData) -> ItemKNN:
        self._reset()
        return self.partial_fit(data)

    def partial_fit(self, data: TrainingData) -> ItemKNN:
        """Adds the new events' counts and co-occurrences, then rebuilds the similarity."""
        data = data.learned_only()
        n = max(self.n_items, data.n_items)
        new_counts = _item_counts(data.sequences, n)
        if n > self.n_items:
            self.follows.resize((n, n))
        self.n_items = n
        self.counts = _grow(self.counts, n) + new_counts
        self.follows = (self.follows + self._new_follows(data.sequences)).tocsr()
        self._rebuild()
        return self

    def _new_follows(self, sequences: Sequence[np.ndarray]) -> sparse.csr_array:
        """Pair counts ``(i, j)`` with ``j`` 1..window after ``i``, ``j`` among the new events."""
        combined, kept = [], []
        for user, events in enumerate(sequences):
            if user == len(self._tails):
                self._tails.append(np.zeros(0, dtype=np.int64))
            tail = self._tails[user]
            walk = np.concatenate([tail, np.asarray(events, dtype=np.int64)])
            combined.append(walk)
            kept.append(len(tail))
            self._tails[user] = walk[-self.window :]
        lengths = np.array([len(w) for w in combined], dtype=np.int64)
        items = _flat(combined)
        users = np.repeat(np.arange(len(combined)), lengths)
        position = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        is_new = position >= np.repeat(np.array(kept, dtype=np.int64), lengths)
        rows, cols = [], []
        for d in range(1, self.window + 1):
            pair = (users[:-d] == users[d:]) & is_new[d:] & (items[:-d] != items[d:])
            rows.append(items[:-d][pair])
            cols.append(items[d:][pair])
        rows_, cols_ = _flat(rows), _flat(cols)
        n = self.n_items
        return sparse.coo_array((np.ones(len(rows_), dtype=np.int64), (rows_, cols_)), shape=(n, n)).tocsr()

    def _rebuild(self) -> None:
        """Directional association → shrunk cosine → top ``neighbors`` per row."""
        n = self.n_items
        follows = self.follows.astype(np.float64)
        assoc = sparse.csr_array(follows + self.backward * follows.T)
        assoc.sum_duplicates()
        assoc.eliminate_zeros()
        rows = np.repeat(np.arange(n), np.diff(assoc.indptr))
        cols = assoc.indices.astype(np.int64)
        norm = np.sqrt(self.counts.astype(np.float64))
        values = assoc.data / (norm[rows] * norm[cols] + self.shrink)
        order = np.lexsort((cols, -values, rows))  # by row, best first, ties by column
        rank = np.arange(len(order)) - assoc.indptr[rows[order]]
        keep = order[rank < self.neighbors]
        self.similarity = sparse.csr_array(
            (values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n, n)
        )
        top = float(self.counts.max(initial=0))
        self._popularity = (TIE_BREAK * self.counts / max(top, 1.0)).astype(np.float32)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        n = self.n_items
        lasts = [np.asarray(h, dtype=np.int64)[-self.recent :] for h in histories]
        lengths = np.array([len(h) for h in lasts], dtype=np.int64)
        items = _flat(lasts)
        age = np.repeat(np.cumsum(lengths), lengths) - 1 - np.arange(len(items))
        weights = (self.decay**age).astype(np.float32)
        rows = np.repeat(np.arange(len(lasts)), lengths)
        known = (items >= 0) & (items < n)  # codes unknown to the model contribute nothing
        history = sparse.csr_array(
            (weights[known], (rows[known], items[known])), shape=(len(lasts), n), dtype=np.float32
        )
        scores = np.asarray((history @ self.similarity).toarray(), dtype=np.float32)
        scores += self._popularity
        return scores


# Every baseline by the name benchmarks and results use.
BASELINES: dict[str, type[Recommender]] = {
    "mostpop": MostPopular,
    "recentpop": RecentPopular,
    "itemknn": ItemKNN,
}
