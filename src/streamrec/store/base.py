"""The storage contracts: an append-only event log and an item catalogue.

The default backend is SQLite (:mod:`streamrec.store.sqlite`); another one
(PostgreSQL, say) implements these two small interfaces and nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.events import Event
from streamrec.items import Item


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one atomic append did. ``first_offset``/``last_offset`` are 0 if nothing was stored."""

    accepted: int
    duplicates: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    offset: int
    event: Event


@dataclass(frozen=True)
class SequenceTable:
    """Every event as integer-coded arrays, sorted by (user, timestamp, offset).

    Rows of user ``u`` are ``slice(user_ptr[u], user_ptr[u + 1])``; ``users``
    and ``items`` translate codes back to ids. This is what training reads.
    """

    users: list[str]
    items: list[str]
    user_codes: np.ndarray  # int32 [n_events]
    item_codes: np.ndarray  # int32 [n_events]
    timestamps: np.ndarray  # float64 [n_events]
    offsets: np.ndarray  # int64 [n_events]
    event_types: np.ndarray  # int8 [n_events], codes into ``type_names``
    values: np.ndarray  # float32 [n_events], NaN where absent
    type_names: list[str]
    user_ptr: np.ndarray  # int64 [n_users + 1]

    def __len__(self) -> int:
        return len(self.item_codes)

    def user_items(self, user_code: int) -> np.ndarray:
        return self.item_codes[self.user_ptr[user_code] : self.user_ptr[user_code + 1]]


class EventLog(ABC):
    """Append-only, durable, totally ordered by offset (1, 2, 3, …)."""

    @abstractmethod
    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store a batch atomically and durably; events whose ``event_id`` is known are skipped."""

    @abstractmethod
    def last_offset(self) -> int: ...

    @abstractmethod
    def read_after(self, offset: int, limit: int | None = None) -> list[LoggedEvent]:
        """Events with an offset greater than ``offset``, in offset order."""

    @abstractmethod
    def recent_items(self, user_id: str, n: int) -> list[str]:
        """The user's last ``n`` item ids, oldest first, ordered by (timestamp, offset)."""

    @abstractmethod
    def time_range(self, start: float, end: float) -> list[LoggedEvent]:
        """Events with ``start <= timestamp < end``, ordered by (timestamp, offset)."""

    @abstractmethod
    def popular_items(self, after_offset: int, limit: int) -> list[tuple[str, int]]:
        """The most frequent items among events after ``after_offset``, with their counts."""

    @abstractmethod
    def sequences(self, through_offset: int | None = None) -> SequenceTable:
        """Bulk export of every event up to ``through_offset`` (all if None) for training."""

    @abstractmethod
    def stats(self) -> dict[str, object]: ...

    @abstractmethod
    def close(self) -> None: ...


class Catalog(ABC):
    """Items with text; ``upsert`` replaces an item's fields and keeps its first ``created_at``."""

    @abstractmethod
    def upsert(self, items: Iterable[Item]) -> int: ...

    @abstractmethod
    def get(self, item_id: str) -> Item | None: ...

    @abstractmethod
    def all(self) -> list[Item]: ...

    @abstractmethod
    def __len__(self) -> int: ...
