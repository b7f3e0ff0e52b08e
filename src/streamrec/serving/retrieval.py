"""Top-k maximum-inner-product retrieval over item vectors: exact below a size, HNSW above it.

SASRec scores a history by ``hidden @ table[1:].T``, so answering a request is a
maximum-inner-product search (MIPS) of the user's hidden state against every item row.
Up to ~100k items the exact product is a few milliseconds on a CPU core and has perfect
recall, so it stays the default. Beyond that the product grows linearly with the catalogue
and an approximate index pays off.

Recall trade-offs of :class:`ANNRetriever` (usearch's HNSW graph with the ``ip`` metric):

* ``expansion_search`` (candidates kept while walking the graph) is the main knob: larger
  means higher recall and proportionally slower queries; it can be changed without a rebuild.
* ``connectivity`` (edges per node) and ``expansion_add`` raise recall at the cost of build
  time and memory; they are fixed at build time.
* Inner product is not a metric: HNSW's guarantees are for distances, and items with large
  norms (typically popular ones in a trained table) act as hubs. Recall on MIPS is therefore
  lower than on cosine for the same settings, and depends on how spread the norms are;
  measure it on the real table (``streamrec bench retrieval``) before relying on it.
* Excluded items (the user's history) are filtered after search, over-fetching
  ``k + len(exclude)``; an item the graph search missed is not recovered, so recall with
  exclusions is that of the larger ``k``.
* ``dtype="f16"``/``"bf16"`` halve the index's memory at a small recall cost; ``"i8"``
  quarters it but assumes entries in [-1, 1] (unit-norm-like vectors), so it suits only
  normalised tables. Scores returned by a quantised index are approximate.
* Items replaced with :meth:`ANNRetriever.replace` are removed and re-inserted; many
  removals slowly degrade the graph, so a retrained version should rebuild it.

Ids are row numbers in the order vectors were given (``build``, then each ``add``); for the
runtime's table that is the item code. Results are best first; when fewer than ``k`` items
qualify, rows are padded with id ``-1`` and score ``-inf``.

Thread safety: ``search`` may run concurrently from many threads; ``add``/``replace`` mutate
in place, so a writer should ``copy()`` first and publish the copy (the runtime's
copy-on-write ``LoadedVersion``), never mutate an index readers are using.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

ANN_THRESHOLD = 100_000  # catalogue size from which make_retriever picks the HNSW index
_EXACT_CHUNK = 1 << 24  # score-matrix entries per exact block (64 MiB of float32)

IndexDType = Literal["f32", "f16", "bf16", "i8"]


def _as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected a [n, d] matrix of vectors, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"vectors have {array.shape[1]} dimensions, the index has {dim}")
    return array


def _check_exclude(exclude: Sequence[np.ndarray] | None, rows: int) -> None:
    if exclude is not None and len(exclude) != rows:
        raise ValueError(f"exclude has {len(exclude)} entries for {rows} queries: give one per query")


def _empty(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, k), -1, dtype=np.int64), np.full((rows, k), -np.inf, dtype=np.float32)


class Retriever(ABC):
    """Top-k inner-product search over a growing set of vectors (ids ``0 .. len - 1``)."""

    dim: int = 0

    @abstractmethod
    def build(self, vectors: np.ndarray) -> Retriever:
        """Index ``vectors`` ``[n, d]`` from scratch (ids ``0 .. n - 1``); returns ``self``."""

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` ids of largest inner product per query, best first: ids ``[b, k]`` int64 and
        scores ``[b, k]`` float32 (-1 / -inf where fewer exist). ``exclude[i]`` lists ids query
        ``i`` must not get."""
        queries = _as_matrix(queries, self.dim or None)
        _check_exclude(exclude, len(queries))
        ids, scores = _empty(len(queries), k)
        if k > 0 and len(self):
            self._fill(queries, k, exclude, ids, scores)
        return ids, scores

    @abstractmethod
    def _fill(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None,
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        """Write each query's best ids and scores into ``ids`` / ``scores`` (validated, non-empty)."""

    @abstractmethod
    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors for new items; returns their ids (the next row numbers)."""

    @abstractmethod
    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Overwrite the vectors of existing ids (an item whose text, hence row, changed)."""

    @abstractmethod
    def copy(self) -> Retriever:
        """An independent copy, for copy-on-write updates while readers use the original."""

    @abstractmethod
    def __len__(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """What the retriever is, for logs and benchmark results."""
        return {"kind": type(self).__name__, "items": len(self), "dim": self.dim}


class ExactRetriever(Retriever):
    """Brute force: one matrix product and an ``argpartition`` per query row. Recall is 1.

    Vectors live in a buffer that doubles when full, so ``add`` is amortised O(new rows).
    """

    def __init__(self) -> None:
        self._buffer = np.zeros((0, 0), dtype=np.float32)
        self._size = 0

    @property
    def vectors(self) -> np.ndarray:
        """The indexed vectors ``[len, d]`` (a view: do not modify)."""
        return self._buffer[: self._size]

    def __len__(self) -> int:
        return self._size

    def build(self, vectors: np.ndarray) -> ExactRetriever:
        matrix = _as_matrix(vectors)
        self._buffer = matrix.copy()
        self._size = len(matrix)
        self.dim = matrix.shape[1]
        return self

    def add(self, vectors: np.ndarray) -> np.ndarray:
        matrix = _as_matrix(vectors, self.dim or None)
        if not self.dim:
            self.dim = matrix.shape[1]
            self._buffer = np.zeros((0, self.dim), dtype=np.float32)
        start, end = self._size, self._size + len(matrix)
        if end > len(self._buffer):
            grown = np.zeros((max(end, 2 * len(self._buffer)), self.dim), dtype=np.float32)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:end] = matrix
        self._size = end
        return np.arange(start, end, dtype=np.int64)

    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self._size):
            raise IndexError(f"ids must be in 0 .. {self._size - 1}")
        self._buffer[ids] = _as_matrix(vectors, self.dim)

    def copy(self) -> ExactRetriever:
        clone = ExactRetriever()
        clone._buffer = self._buffer.copy()
        clone._size, clone.dim = self._size, self.dim
        return clone

    def _fill(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None,
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        rows_per_block = max(1, _EXACT_CHUNK // self._size)
        for start in range(0, len(queries), rows_per_block):
            block = queries[start : start + rows_per_block] @ self.vectors.T  # [rows, n]
            if exclude is not None:
                for row, banned in enumerate(exclude[start : start + len(block)]):
                    if len(banned):
                        block[row, np.asarray(banned, dtype=np.int64)] = -np.inf
            take = min(k, self._size)
            if take < self._size:
                best = np.argpartition(-block, take - 1, axis=1)[:, :take]
            else:
                best = np.broadcast_to(np.arange(self._size), block.shape).copy()
            values = np.take_along_axis(block, best, axis=1)
            order = np.argsort(-values, axis=1, kind="stable")
            best = np.take_along_axis(best, order, axis=1)
            values = np.take_along_axis(values, order, axis=1)
            best[values == -np.inf] = -1  # excluded ids that still made the cut
            ids[start : start + len(block), :take] = best
            scores[start : start + len(block), :take] = values


class ANNRetriever(Retriever):
    """Approximate MIPS with a usearch HNSW index (metric ``ip``); see the module doc for recall.

    ``threads=0`` lets usearch use every core for a batch; a single query runs on one thread.
    """

    def __init__(
        self,
        *,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        dtype: IndexDType = "f32",
        threads: int = 0,
    ) -> None:
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self._expansion_search = expansion_search
        self.index_dtype = dtype
        self.threads = threads
        self._index: Any = None
        self._size = 0

    @property
    def expansion_search(self) -> int:
        return self._expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        """Changeable at any time: the recall/latency knob needs no rebuild."""
        self._expansion_search = value
        if self._index is not None:
            self._index.expansion_search = value

    def __len__(self) -> int:
        return self._size

    def _new_index(self, dim: int) -> Any:
        from usearch.index import Index

        return Index(
            ndim=dim,
            metric="ip",
            dtype=self.index_dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self._expansion_search,
        )

    def build(self, vectors: np.ndarray) -> ANNRetriever:
        matrix = _as_matrix(vectors)
        self.dim = matrix.shape[1]
        self._index = self._new_index(self.dim)
        self._size = 0
        self.add(matrix)
        return self

    def add(self, vectors: np.ndarray) -> np.ndarray:
        matrix = _as_matrix(vectors, self.dim or None)
        if self._index is None:
            self.dim = matrix.shape[1]
            self._index = self._new_index(self.dim)
        ids = np.arange(self._size, self._size + len(matrix), dtype=np.int64)
        if len(matrix):
            self._index.add(ids.astype(np.uint64), matrix, threads=self.threads)
        self._size += len(matrix)
        return ids

    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        matrix = _as_matrix(vectors, self.dim)
        if len(ids) and (ids.min() < 0 or ids.max() >= self._size):
            raise IndexError(f"ids must be in 0 .. {self._size - 1}")
        if len(ids):
            keys = ids.astype(np.uint64)
            self._index.remove(keys)
            self._index.add(keys, matrix, threads=self.threads)

    def copy(self) -> ANNRetriever:
        clone = ANNRetriever(
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self._expansion_search,
            dtype=self.index_dtype,
            threads=self.threads,
        )
        clone.dim, clone._size = self.dim, self._size
        clone._index = None if self._index is None else self._index.copy()
        return clone

    def _fill(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None,
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        count = min(k + extra, self._size)
        matches = self._index.search(queries, count, threads=self.threads)
        found = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        # usearch's "ip" distance is 1 - <q, x>
        values = (1.0 - np.asarray(matches.distances, dtype=np.float32)).reshape(len(queries), -1)
        # a batch reports how many of each row's slots are filled; one query comes back trimmed
        counts = np.asarray(getattr(matches, "counts", [found.shape[1]])).reshape(-1)
        for row in range(len(queries)):
            n = int(counts[row])
            row_ids, row_values = found[row, :n], values[row, :n]
            if exclude is not None and len(exclude[row]):
                keep = ~np.isin(row_ids, np.asarray(exclude[row], dtype=np.int64))
                row_ids, row_values = row_ids[keep], row_values[keep]
            order = np.argsort(-row_values, kind="stable")[:k]
            ids[row, : len(order)] = row_ids[order]
            scores[row, : len(order)] = row_values[order]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "metric": "ip",
            "dtype": self.index_dtype,
            "connectivity": self.connectivity,
            "expansion_add": self.expansion_add,
            "expansion_search": self._expansion_search,
        }


class PartitionedRetriever(Retriever):
    """Two groups of rows searched apart, each query's best of both merged: ``apart`` and the rest.

    HNSW finds a query's best rows by walking from neighbour to neighbour; when they stand
    apart from everything else, the walk never reaches them. A hybrid model's trained items
    (text plus a learned ID row) are such a group among a million text-only items: one HNSW
    graph over all of them found 3 % of the exact top-10. Each group on its own is alike,
    so each gets the retriever its size calls for (:func:`make_retriever`), and rows added
    later (new, untrained items) join the rest.
    """

    def __init__(self, apart: np.ndarray, ann_threshold: int = ANN_THRESHOLD, **ann_options: Any) -> None:
        self.apart = np.unique(np.asarray(apart, dtype=np.int64))
        self.ann_threshold, self.ann_options = ann_threshold, ann_options
        self._parts: list[Retriever] = []
        self._rows: list[np.ndarray] = []  # per part: the global id of each of its rows
        self._part_of = np.zeros(0, dtype=np.int8)  # per global id: its part
        self._local = np.zeros(0, dtype=np.int64)  # per global id: its row in that part

    def __len__(self) -> int:
        return len(self._part_of)

    def build(self, vectors: np.ndarray) -> PartitionedRetriever:
        matrix = _as_matrix(vectors)
        self.dim = matrix.shape[1]
        inside = np.zeros(len(matrix), dtype=bool)
        inside[self.apart[self.apart < len(matrix)]] = True
        self._rows = [np.flatnonzero(inside), np.flatnonzero(~inside)]
        self._parts = [
            make_retriever(len(rows), self.ann_threshold, **self.ann_options).build(matrix[rows])
            for rows in self._rows
        ]
        self._part_of = (~inside).astype(np.int8)
        self._local = np.zeros(len(matrix), dtype=np.int64)
        for rows in self._rows:
            self._local[rows] = np.arange(len(rows))
        return self

    def add(self, vectors: np.ndarray) -> np.ndarray:
        matrix = _as_matrix(vectors, self.dim)
        ids = np.arange(len(self), len(self) + len(matrix), dtype=np.int64)
        self._local = np.concatenate([self._local, self._parts[1].add(matrix)])
        self._part_of = np.concatenate([self._part_of, np.ones(len(ids), dtype=np.int8)])
        self._rows[1] = np.concatenate([self._rows[1], ids])
        return ids

    def replace(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        matrix = _as_matrix(vectors, self.dim)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"ids must be in 0 .. {len(self) - 1}")
        for part, retriever in enumerate(self._parts):
            mine = self._part_of[ids] == part
            if mine.any():
                retriever.replace(self._local[ids[mine]], matrix[mine])

    def copy(self) -> PartitionedRetriever:
        clone = PartitionedRetriever(self.apart, self.ann_threshold, **self.ann_options)
        clone.dim = self.dim
        clone._parts = [part.copy() for part in self._parts]
        clone._rows = [rows.copy() for rows in self._rows]
        clone._part_of, clone._local = self._part_of.copy(), self._local.copy()
        return clone

    def _fill(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None,
        ids: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        found, values = [], []
        for part, (retriever, rows) in enumerate(zip(self._parts, self._rows, strict=True)):
            banned = None
            if exclude is not None:
                banned = []
                for excluded in exclude:
                    excluded = np.asarray(excluded, dtype=np.int64)
                    excluded = excluded[(excluded >= 0) & (excluded < len(self))]
                    banned.append(self._local[excluded[self._part_of[excluded] == part]])
            part_ids, part_scores = retriever.search(queries, k, exclude=banned)
            found.append(np.where(part_ids >= 0, rows[np.maximum(part_ids, 0)] if len(rows) else -1, -1))
            values.append(part_scores)
        merged_ids, merged_scores = np.concatenate(found, axis=1), np.concatenate(values, axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        ids[:] = np.take_along_axis(merged_ids, order, axis=1)
        scores[:] = np.take_along_axis(merged_scores, order, axis=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "parts": [part.describe() for part in self._parts]}


def make_retriever(
    n_items: int, ann_threshold: int = ANN_THRESHOLD, *, apart: np.ndarray | None = None, **ann_options: Any
) -> Retriever:
    """An empty retriever suited to ``n_items``: exact below ``ann_threshold``, HNSW from it on.

    ``apart``: ids of rows unlike the others (a hybrid model's trained items), searched on
    their own when HNSW is used (:class:`PartitionedRetriever`). ``ann_options`` go to
    :class:`ANNRetriever` (connectivity, expansion_add, expansion_search, dtype, threads).
    The choice is made once: a catalogue that grows past the threshold through ``add``
    keeps its exact index until the next version is loaded.
    """
    if n_items < ann_threshold:
        return ExactRetriever()
    if apart is not None and 0 < len(apart) < n_items:
        return PartitionedRetriever(apart, ann_threshold, **ann_options)
    return ANNRetriever(**ann_options)
