"""The storage contracts: an append-only event log, an item catalogue, and what was shown.

The default backend is SQLite (:mod:`streamrec.store.sqlite`); PostgreSQL
(:mod:`streamrec.store.postgres`) implements the same small interfaces and
passes the same contract tests (``tests/test_store.py``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

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

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> SequenceTable:
        """From ``(offset, user, item, type, timestamp, value)`` rows: ids interned, sorted with numpy."""
        user_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        type_index: dict[str, int] = {}
        n = len(rows)
        offsets = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        user_codes = np.fromiter((user_index.setdefault(r[1], len(user_index)) for r in rows), np.int32, n)
        item_codes = np.fromiter((item_index.setdefault(r[2], len(item_index)) for r in rows), np.int32, n)
        type_codes = np.fromiter((type_index.setdefault(r[3], len(type_index)) for r in rows), np.int8, n)
        timestamps = np.fromiter((r[4] for r in rows), dtype=np.float64, count=n)
        values = np.fromiter((np.nan if r[5] is None else r[5] for r in rows), dtype=np.float32, count=n)
        order = np.lexsort((offsets, timestamps, user_codes))
        user_codes = user_codes[order]
        counts = np.bincount(user_codes, minlength=len(user_index))
        user_ptr = np.zeros(len(user_index) + 1, dtype=np.int64)
        np.cumsum(counts, out=user_ptr[1:])
        return cls(
            users=list(user_index),
            items=list(item_index),
            user_codes=user_codes,
            item_codes=item_codes[order],
            timestamps=timestamps[order],
            offsets=offsets[order],
            event_types=type_codes[order],
            values=values[order],
            type_names=list(type_index),
            user_ptr=user_ptr,
        )


class Database(Protocol):
    """The connection a backend's log and catalogue share: one transaction can span both."""

    def transaction(self) -> AbstractContextManager[object]:
        """Nested blocks join the outermost one, which alone commits (or rolls back everything)."""
        ...

    def scrub(self) -> None:
        """After a forget: leave no copy of deleted rows in the backend's files where it can."""
        ...

    def counter(self, key: str) -> int:
        """The integer kept under ``key`` in the store's meta table (0 when unset)."""
        ...

    def add_to_counter(self, conn: Any, key: str, amount: int) -> None:
        """Add ``amount`` to ``key``'s integer, inside the transaction ``conn`` belongs to."""
        ...

    def close(self) -> None: ...


OFFSET_FLOOR = "offset_floor"  # meta: the newest offset given out before a forget (never given again)


RETENTION = "retention"  # ForgetRecord.requested_by of a purge of expired events


@dataclass(frozen=True)
class ForgetRecord:
    """A user forgotten (or, by ``retention``, expired events purged): when, at whose request, how
    much, the span of offsets the events held, and the model versions trained on any of them.
    Never the user id nor their data."""

    request_id: str
    timestamp: float
    requested_by: str
    events: int
    impressions: int
    first_offset: int  # 0 when the log held no event of theirs
    last_offset: int
    versions: tuple[str, ...]

    @property
    def to_unlearn(self) -> bool:
        """A forget asks its versions to unlearn; a retention purge does not (models age out with refits)."""
        return self.requested_by != RETENTION and self.events > 0


FORGET_COLUMNS = "request_id, ts, requested_by, events, impressions, first_offset, last_offset, versions"


def forget_row(record: ForgetRecord) -> tuple:
    r = record
    versions = json.dumps(list(r.versions))
    return (
        r.request_id,
        r.timestamp,
        r.requested_by,
        r.events,
        r.impressions,
        r.first_offset,
        r.last_offset,
        versions,
    )


def row_to_forget(row: Sequence) -> ForgetRecord:
    request_id, ts, requested_by, events, impressions, first, last, versions = row
    return ForgetRecord(
        request_id, ts, requested_by, events, impressions, first, last, tuple(json.loads(versions))
    )


class EventLog(ABC):
    """Durable, totally ordered by offset (1, 2, 3, …); appended to, and erased from only by
    :meth:`forget`, which never lets an offset be given twice."""

    @abstractmethod
    def append(self, events: Sequence[Event], *, untimed: int = 0) -> AppendResult:
        """Store a batch atomically and durably; events whose ``event_id`` is known are skipped.

        Offsets of one batch are contiguous and follow the last committed batch's; ``untimed``
        counts the batch's events that were given their arrival time (reported by ``stats``).
        """

    @abstractmethod
    def last_offset(self) -> int: ...

    @abstractmethod
    def read_after(self, offset: int, limit: int | None = None) -> list[LoggedEvent]:
        """Events with an offset greater than ``offset``, in offset order."""

    @abstractmethod
    def recent_items(self, user_id: str, n: int) -> list[str]:
        """The user's last ``n`` item ids, oldest first, ordered by (timestamp, offset)."""

    @abstractmethod
    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        """The user's events (their newest ``limit``, or all), oldest first, by (timestamp, offset)."""

    @abstractmethod
    def newest_offset(self, user_id: str) -> int:
        """The largest offset of the user's events (0 without any): it changes with each new event."""

    @abstractmethod
    def time_range(self, start: float, end: float) -> list[LoggedEvent]:
        """Events with ``start <= timestamp < end``, ordered by (timestamp, offset)."""

    @abstractmethod
    def counts_by_time(self, start: float, end: float, bucket: float) -> list[tuple[float, int]]:
        """Events per ``bucket`` seconds with ``start <= timestamp < end``: (bucket start, count),
        oldest first, buckets without events left out."""

    @abstractmethod
    def popular_items(self, after_offset: int, limit: int) -> list[tuple[str, int]]:
        """The most frequent items among events after ``after_offset``, with their counts."""

    @abstractmethod
    def sequences(self, through_offset: int | None = None) -> SequenceTable:
        """Bulk export of every event up to ``through_offset`` (all if None) for training."""

    @abstractmethod
    def stats(self) -> dict[str, object]: ...

    @abstractmethod
    def forget(self, user_id: str) -> tuple[int, int, int]:
        """Delete every event of the user: how many, and their first and last offset (zeros without
        any). Other events keep their offsets; the next append still follows the newest offset given."""

    @abstractmethod
    def purge_before(self, timestamp: float) -> tuple[int, int, int]:
        """Delete every event older than ``timestamp`` (retention), as :meth:`forget` deletes a user's."""

    @abstractmethod
    def record_forget(self, record: ForgetRecord) -> None: ...

    @abstractmethod
    def forget_records(self) -> list[ForgetRecord]:
        """Every forget request, oldest first."""

    @abstractmethod
    def close(self) -> None: ...


CATALOG_REVISION = "catalog_revision"  # the meta counter Catalog.revision reads


class Catalog(ABC):
    """Items with text; ``upsert`` replaces an item's fields and keeps its first ``created_at``."""

    @abstractmethod
    def upsert(self, items: Iterable[Item]) -> int:
        """Write the items and, if there were any, add one to :meth:`revision`, in one transaction."""

    @abstractmethod
    def revision(self) -> int:
        """How many upserts the catalogue has had: a server process whose view is older reloads it."""

    @abstractmethod
    def get(self, item_id: str) -> Item | None: ...

    @abstractmethod
    def all(self) -> list[Item]: ...

    @abstractmethod
    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Impression:
    """One answer as it was shown: ``items`` best first (position = index + 1).

    ``surface`` is what answered (``recommend``, ``session``, ``search``); ``arm`` the
    experiment arm the user was in, if one ran. An interleaved answer (both arms' lists
    merged) names each position's ``teams`` letter: ``abba…`` (position n came from arm
    ``teams[n]``). Events that carry ``request_id`` are attributed to it
    (:mod:`streamrec.evaluation.online`).
    """

    request_id: str
    timestamp: float
    user_id: str | None
    version: str
    surface: str
    items: tuple[str, ...]
    arm: str | None = None
    teams: str | None = None


IMPRESSION_COLUMNS = "request_id, ts, user_id, version, surface, items, arm, teams"


def impression_row(impression: Impression) -> tuple:
    """An impression as a row of :data:`IMPRESSION_COLUMNS`: the items as one JSON array."""
    i = impression
    items = json.dumps(i.items)
    return (i.request_id, i.timestamp, i.user_id, i.version, i.surface, items, i.arm, i.teams)


def row_to_impression(row: Sequence) -> Impression:
    request_id, ts, user_id, version, surface, items, arm, teams = row
    return Impression(request_id, ts, user_id, version, surface, tuple(json.loads(items)), arm, teams)


class ImpressionLog(ABC):
    """What the server showed, keyed by request id; written in batches, read by time."""

    @abstractmethod
    def append(self, impressions: Sequence[Impression]) -> None:
        """Store a batch in one durable transaction (a request id already stored is kept as it was)."""

    @abstractmethod
    def get(self, request_id: str) -> Impression | None: ...

    @abstractmethod
    def between(self, start: float, end: float) -> list[Impression]:
        """Impressions with ``start <= timestamp < end``, oldest first."""

    @abstractmethod
    def forget(self, user_id: str) -> int:
        """Delete the impressions shown to the user; how many there were."""

    @abstractmethod
    def purge_before(self, timestamp: float) -> int:
        """Delete the impressions shown before ``timestamp``; how many there were."""

    @abstractmethod
    def __len__(self) -> int: ...
