"""SQLite backend: the default store, one file, no server.

The database runs in WAL mode with ``synchronous=FULL`` by default, so a
batch is on disk when :meth:`SQLiteEventLog.append` returns: a process
killed at any moment afterwards keeps it, and a batch interrupted half-way
is rolled back as a whole when the file is next opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from streamrec.events import Event
from streamrec.items import Item
from streamrec.store.base import (
    CATALOG_REVISION,
    FORGET_COLUMNS,
    IMPRESSION_COLUMNS,
    OFFSET_FLOOR,
    AppendResult,
    Catalog,
    EventLog,
    ForgetRecord,
    Impression,
    ImpressionLog,
    LoggedEvent,
    SequenceTable,
    forget_row,
    impression_row,
    row_to_forget,
    row_to_impression,
)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    offset INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    event_id TEXT,
    context TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_user_time ON events (user_id, ts);
CREATE INDEX IF NOT EXISTS events_time ON events (ts);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    attributes TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    user_id TEXT,
    version TEXT NOT NULL,
    surface TEXT NOT NULL,
    arm TEXT,
    items TEXT NOT NULL,
    teams TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS impressions_time ON impressions (ts);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions (user_id);
CREATE TABLE IF NOT EXISTS forget_requests (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    requested_by TEXT NOT NULL,
    events INTEGER NOT NULL,
    impressions INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    versions TEXT NOT NULL
);
"""
# The newest offset given out: the last event's, or a forgotten one's after it (base.OFFSET_FLOOR).
_LAST_OFFSET = (
    "SELECT MAX((SELECT COALESCE(MAX(offset), 0) FROM events),"
    " COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'offset_floor'), 0))"
)
_EVENT_COLUMNS = "offset, user_id, item_id, event_type, ts, value, event_id, context"


class SQLiteDatabase:
    """One connection to the store file, shared by the log and the catalogue.

    ``transaction()`` nests: only the outermost block commits, so a caller can
    make several appends (a whole file) atomic together.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._lock = threading.RLock()
        self._depth = 0
        self._writer_thread: int | None = None  # the thread inside transaction(), if any
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA busy_timeout=30000")
        # Deleted rows (a forgotten user's) are overwritten with zeros, not left in free pages.
        self._conn.execute("PRAGMA secure_delete=ON")
        # Index pages of a large log stay cached: appends to the (user, time) index are random.
        self._conn.execute("PRAGMA cache_size=-131072")
        self._conn.executescript(_SCHEMA)
        self._add_missing_columns()
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _add_missing_columns(self) -> None:
        """Columns added since a table was first made (SQLite has no ADD COLUMN IF NOT EXISTS)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(impressions)")}
        if "teams" not in columns:
            self._conn.execute("ALTER TABLE impressions ADD COLUMN teams TEXT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._conn.execute("BEGIN IMMEDIATE")
                self._writer_thread = threading.get_ident()
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._writer_thread = None
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outermost:
                self._writer_thread = None
                self._conn.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection: WAL lets readers run beside each other and the writer."""
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            connection.execute("PRAGMA query_only=1")
            connection.execute("PRAGMA busy_timeout=30000")
            self._readers.connection = connection
            with self._lock:
                self._reader_connections.append(connection)
        return connection

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Run a read; inside this thread's open transaction it sees that transaction's writes."""
        if self._writer_thread == threading.get_ident():
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        return self._reader().execute(sql, params).fetchall()

    def add_to_counter(self, conn: sqlite3.Connection, key: str, amount: int) -> None:
        conn.execute(
            "INSERT INTO meta VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
            (key, str(amount), amount),
        )

    def counter(self, key: str) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else 0

    def scrub(self) -> None:
        """Copy the WAL (which still holds the pages as they were) into the file and empty it."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            for connection in self._reader_connections:
                connection.close()
            self._reader_connections.clear()
            self._conn.close()


def _row_to_logged(row: tuple) -> LoggedEvent:
    offset, user_id, item_id, event_type, ts, value, event_id, context = row
    return LoggedEvent(
        offset,
        Event(user_id, item_id, event_type, ts, value, event_id, json.loads(context) if context else None),
    )


class SQLiteEventLog(EventLog):
    """The event log in the ``events`` table; the offset is SQLite's rowid."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def append(self, events: Sequence[Event], *, untimed: int = 0) -> AppendResult:
        """Append a batch in one transaction. ``untimed`` counts events given arrival time."""
        rows = [
            (
                e.user_id,
                e.item_id,
                e.event_type,
                e.timestamp,
                e.value,
                e.event_id,
                json.dumps(e.context) if e.context else None,
            )
            for e in events
        ]
        with self.db.transaction() as conn:
            top, floor = conn.execute(
                "SELECT (SELECT COALESCE(MAX(offset), 0) FROM events),"
                f" COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{OFFSET_FLOOR}'), 0)"
            ).fetchone()
            before = max(top, floor)
            # After the newest events were forgotten, a placeholder row at the newest offset given
            # makes SQLite number this batch after it (a rowid is the largest one plus one).
            placeholder = top < before
            if placeholder:
                conn.execute(
                    "INSERT INTO events (offset, user_id, item_id, event_type, ts) VALUES (?, '', '', '', 0)",
                    (before,),
                )
            cursor = conn.executemany(
                "INSERT OR IGNORE INTO events (user_id, item_id, event_type, ts, value, event_id, context)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            accepted = cursor.rowcount
            if placeholder:
                conn.execute("DELETE FROM events WHERE offset = ?", (before,))
            duplicates = len(rows) - accepted
            if duplicates:
                self.db.add_to_counter(conn, "duplicates", duplicates)
            if untimed and accepted:
                self.db.add_to_counter(conn, "events_without_timestamp", min(untimed, accepted))
        if accepted == 0:
            return AppendResult(0, duplicates, 0, 0)
        return AppendResult(accepted, duplicates, before + 1, before + accepted)

    def last_offset(self) -> int:
        return self.db.query(_LAST_OFFSET)[0][0]

    def read_after(self, offset: int, limit: int | None = None) -> list[LoggedEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE offset > ? ORDER BY offset LIMIT ?",
            (offset, -1 if limit is None else limit),
        )
        return [_row_to_logged(row) for row in rows]

    def recent_items(self, user_id: str, n: int) -> list[str]:
        rows = self.db.query(
            "SELECT item_id FROM events WHERE user_id = ? ORDER BY ts DESC, offset DESC LIMIT ?",
            (user_id, n),
        )
        return [row[0] for row in reversed(rows)]

    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = ? ORDER BY ts DESC, offset DESC LIMIT ?",
            (user_id, -1 if limit is None else limit),  # SQLite: a negative limit is none
        )
        return [_row_to_logged(row) for row in reversed(rows)]

    def newest_offset(self, user_id: str) -> int:
        # answered from the (user_id, ts) index alone: the offset is its rowid
        query = "SELECT COALESCE(MAX(offset), 0) FROM events WHERE user_id = ?"
        return self.db.query(query, (user_id,))[0][0]

    def time_range(self, start: float, end: float) -> list[LoggedEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE ts >= ? AND ts < ? ORDER BY ts, offset",
            (start, end),
        )
        return [_row_to_logged(row) for row in rows]

    def counts_by_time(self, start: float, end: float, bucket: float) -> list[tuple[float, int]]:
        rows = self.db.query(
            "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, COUNT(*) FROM events WHERE ts >= ? AND ts < ?"
            " GROUP BY b ORDER BY b",
            (start, bucket, start, end),
        )
        return [(start + b * bucket, n) for b, n in rows]

    def popular_items(self, after_offset: int, limit: int) -> list[tuple[str, int]]:
        return self.db.query(
            "SELECT item_id, COUNT(*) AS n FROM events WHERE offset > ? GROUP BY item_id"
            " ORDER BY n DESC, item_id LIMIT ?",
            (after_offset, limit),
        )

    def sequences(self, through_offset: int | None = None) -> SequenceTable:
        limit = self.last_offset() if through_offset is None else through_offset
        rows = self.db.query(
            "SELECT offset, user_id, item_id, event_type, ts, value FROM events WHERE offset <= ?"
            " ORDER BY offset",
            (limit,),
        )
        return SequenceTable.from_rows(rows)

    def stats(self) -> dict[str, object]:
        (events, first_ts, last_ts) = self.db.query("SELECT COUNT(*), MIN(ts), MAX(ts) FROM events")[0]
        last = self.last_offset()
        users = self.db.query("SELECT COUNT(*) FROM (SELECT DISTINCT user_id FROM events)")[0][0]
        items = self.db.query("SELECT COUNT(DISTINCT item_id) FROM events")[0][0]
        types = dict(self.db.query("SELECT event_type, COUNT(*) FROM events GROUP BY event_type"))
        untimed = self.db.counter("events_without_timestamp")
        return {
            "events": events,
            "users": users,
            "items": items,
            "last_offset": last,
            "event_types": types,
            "first_timestamp": first_ts,
            "last_timestamp": last_ts,
            "duplicates_skipped": self.db.counter("duplicates"),
            "events_without_timestamp": untimed,
            "ordering": (
                "by (timestamp, offset); events without a timestamp got their arrival time,"
                " so their source order is kept exactly"
                if untimed
                else "by (timestamp, offset)"
            ),
        }

    def forget(self, user_id: str) -> tuple[int, int, int]:
        return self._delete("user_id = ?", (user_id,))

    def purge_before(self, timestamp: float) -> tuple[int, int, int]:
        return self._delete("ts < ?", (timestamp,))

    def _delete(self, where: str, params: tuple) -> tuple[int, int, int]:
        """Delete the events ``where`` selects, keeping the newest offset given out (OFFSET_FLOOR)."""
        with self.db.transaction() as conn:
            count, first, last = conn.execute(
                "SELECT COUNT(*), COALESCE(MIN(offset), 0), COALESCE(MAX(offset), 0) FROM events"
                f" WHERE {where}",
                params,
            ).fetchone()
            if count:
                newest = conn.execute(_LAST_OFFSET).fetchone()[0]
                conn.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (OFFSET_FLOOR, str(newest)),
                )
                conn.execute(f"DELETE FROM events WHERE {where}", params)
        return count, first, last

    def record_forget(self, record: ForgetRecord) -> None:
        marks = ", ".join("?" * (FORGET_COLUMNS.count(",") + 1))
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO forget_requests ({FORGET_COLUMNS}) VALUES ({marks})", forget_row(record)
            )

    def forget_records(self) -> list[ForgetRecord]:
        rows = self.db.query(f"SELECT {FORGET_COLUMNS} FROM forget_requests ORDER BY ts, request_id")
        return [row_to_forget(row) for row in rows]

    def close(self) -> None:
        self.db.close()


class SQLiteCatalog(Catalog):
    """Items in the ``items`` table of the same database file as the log."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def upsert(self, items: Iterable[Item]) -> int:
        now = time.time()
        rows = [
            (
                i.item_id,
                i.title,
                i.description,
                i.category,
                json.dumps(i.attributes) if i.attributes else None,
                now if i.created_at is None else i.created_at,
                now,
            )
            for i in items
        ]
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET"
                " title = excluded.title, description = excluded.description,"
                " category = excluded.category, attributes = excluded.attributes,"
                " updated_at = excluded.updated_at",
                rows,
            )
            if rows:
                self.db.add_to_counter(conn, CATALOG_REVISION, 1)
        return len(rows)

    def revision(self) -> int:
        return self.db.counter(CATALOG_REVISION)

    def get(self, item_id: str) -> Item | None:
        rows = self.db.query(
            "SELECT item_id, title, description, category, attributes, created_at FROM items"
            " WHERE item_id = ?",
            (item_id,),
        )
        return _row_to_item(rows[0]) if rows else None

    def all(self) -> list[Item]:
        rows = self.db.query(
            "SELECT item_id, title, description, category, attributes, created_at FROM items ORDER BY rowid"
        )
        return [_row_to_item(row) for row in rows]

    def __len__(self) -> int:
        return self.db.query("SELECT COUNT(*) FROM items")[0][0]


def _row_to_item(row: tuple) -> Item:
    item_id, title, description, category, attributes, created_at = row
    return Item(
        item_id, title, description, category, json.loads(attributes) if attributes else None, created_at
    )


class SQLiteImpressionLog(ImpressionLog):
    """Impressions in the ``impressions`` table, clustered by request id."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def append(self, impressions: Sequence[Impression]) -> None:
        rows = [impression_row(i) for i in impressions]
        marks = ", ".join("?" * (IMPRESSION_COLUMNS.count(",") + 1))
        insert = f"INSERT OR IGNORE INTO impressions ({IMPRESSION_COLUMNS}) VALUES ({marks})"
        with self.db.transaction() as conn:
            conn.executemany(insert, rows)

    def get(self, request_id: str) -> Impression | None:
        rows = self.db.query(
            f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE request_id = ?", (request_id,)
        )
        return row_to_impression(rows[0]) if rows else None

    def between(self, start: float, end: float) -> list[Impression]:
        where = "ts >= ? AND ts < ? ORDER BY ts, request_id"
        rows = self.db.query(f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE {where}", (start, end))
        return [row_to_impression(row) for row in rows]

    def forget(self, user_id: str) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,)).rowcount

    def purge_before(self, timestamp: float) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM impressions WHERE ts < ?", (timestamp,)).rowcount

    def __len__(self) -> int:
        return self.db.query("SELECT COUNT(*) FROM impressions")[0][0]
