"""PostgreSQL backend: one store that several server processes and the update worker share.

Offsets stay gap-free and in commit order under concurrent writers. Every write
transaction first takes one transaction-scoped advisory lock (``pg_advisory_xact_lock``),
then, in a statement of its own (so its snapshot is taken after the lock and sees the
previous writer's commit), reads ``MAX(offset)``, numbers its batch from there, and keeps
the lock until COMMIT. Writers in every process therefore go one at a time: a batch gets
contiguous offsets right after the last committed one, and offset N+1 cannot commit
before N, so a reader never sees a hole it would later have to go back for. A SEQUENCE
gives neither (its numbers are handed out in call order, not commit order, and a
rolled-back batch leaves a gap). An advisory lock rather than ``LOCK TABLE``: readers
never wait for it, and autovacuum's table lock does not conflict with it (``LOCK TABLE
… EXCLUSIVE`` would stall an append until autovacuum is cancelled, a second by default).
The catalogue's writes take the same lock, so no two writers can deadlock on rows.

Durability: a batch is one transaction committed before ``append`` returns; with
PostgreSQL's default ``synchronous_commit = on``, COMMIT returns only once the batch is
in the write-ahead log on disk. Idempotency: a unique index on ``event_id``; under the
lock, a batch's known ids are looked up in one query and skipped (counted, not stored),
then the rest is written with binary COPY (measured on 200,000 events in batches of 20,000:
about 4x the rate of ``executemany`` INSERTs, 1.4x text COPY).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Json

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
# Advisory lock keys, the same in every streamrec process. Writes lock (LOCK_SPACE, the events
# table's oid): one writer at a time per store, while stores in other schemas go their own way.
LOCK_SPACE = 0x5354_5245  # "STRE"
_WRITE_LOCK = "SELECT pg_advisory_xact_lock(%s, 'events'::regclass::oid::int)"
SCHEMA_LOCK = 0x5354_5245_414D_0002  # creating the tables, when several processes open at once
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    log_offset BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION,
    event_id TEXT,
    context JSON
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_user_time ON events (user_id, ts, log_offset);
CREATE INDEX IF NOT EXISTS events_time ON events (ts, log_offset);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    position BIGINT GENERATED ALWAYS AS IDENTITY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    attributes JSON,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
    request_id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    user_id TEXT,
    version TEXT NOT NULL,
    surface TEXT NOT NULL,
    arm TEXT,
    items TEXT NOT NULL,
    teams TEXT
);
ALTER TABLE impressions ADD COLUMN IF NOT EXISTS teams TEXT;
CREATE INDEX IF NOT EXISTS impressions_time ON impressions (ts);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions (user_id);
CREATE TABLE IF NOT EXISTS forget_requests (
    request_id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    requested_by TEXT NOT NULL,
    events BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    first_offset BIGINT NOT NULL,
    last_offset BIGINT NOT NULL,
    versions TEXT NOT NULL
);
"""
# The newest offset given out: the last event's, or a forgotten one's after it (base.OFFSET_FLOOR).
_LAST_OFFSET = (
    "SELECT GREATEST((SELECT COALESCE(MAX(log_offset), 0) FROM events),"
    " COALESCE((SELECT value FROM meta WHERE key = 'offset_floor'), 0))"
)
# JSON, not JSONB: JSONB reorders an object's keys, and an item's text lists its attributes in order.
_EVENT_COLUMNS = "log_offset, user_id, item_id, event_type, ts, value, event_id, context"
_EVENT_TYPES = ["int8", "text", "text", "text", "float8", "float8", "text", "json"]  # binary COPY
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def connection_url(url: str) -> str:
    """``url`` as libpq reads it (SQLAlchemy's ``postgresql+psycopg://`` spelling accepted)."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES:
        raise ValueError(f"store: not a PostgreSQL URL: {url!r}")
    return f"postgresql://{rest}"


class PostgresDatabase:
    """One writer connection plus a small pool of autocommit read connections.

    ``transaction()`` nests like SQLite's: only the outermost block commits. Reads
    from the thread inside a transaction see its uncommitted writes; other threads
    read through the pool (at most ``readers`` connections per process), so a
    server's handler threads never queue behind a writer. Connections that broke (the
    server restarted) are replaced: a read is retried once, and so is a transaction whose
    BEGIN failed (nothing was sent); a transaction that fails later fails to its caller.
    """

    def __init__(self, url: str, *, synchronous: str = "FULL", readers: int = 8) -> None:
        self.url = connection_url(url)
        # SQLite's OFF (bulk loads that can be redone) maps to synchronous_commit=off; the rest to on.
        self._synchronous_commit = "off" if synchronous.upper() == "OFF" else "on"
        self._lock = threading.RLock()
        self._depth = 0
        self._writer_thread: int | None = None
        self._closed = False
        self._idle: list[psycopg.Connection] = []
        self._pool_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(readers)
        self._conn = self._connect()
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._conn.execute(_SCHEMA)
            self._conn.execute(
                "INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) DO NOTHING",
                (SCHEMA_VERSION,),
            )

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=True, application_name="streamrec")
        conn.execute(f"SET synchronous_commit = {self._synchronous_commit}")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            self._depth, self._writer_thread = 1, threading.get_ident()
            try:
                with ExitStack() as stack:
                    try:
                        stack.enter_context(self._conn.transaction())
                    except psycopg.OperationalError:  # the server restarted: nothing was sent, retry
                        self._conn = self._connect()
                        stack.enter_context(self._conn.transaction())
                    yield self._conn
            finally:
                self._depth, self._writer_thread = 0, None

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection]:
        with self._slots:
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.broken:
                conn = self._connect()
            try:
                yield conn
            finally:
                with self._pool_lock:
                    if self._closed:
                        conn.close()
                    else:
                        self._idle.append(conn)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """Run a read; inside this thread's open transaction it sees that transaction's writes."""
        if self._writer_thread == threading.get_ident():
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        for attempt in range(2):
            with self._reader() as conn:
                try:
                    with conn.cursor(binary=True) as cursor:
                        return cursor.execute(sql, params).fetchall()
                except psycopg.OperationalError:
                    if attempt or not conn.broken:
                        raise
                    self._drop_idle()  # the server restarted: its other idle connections are dead too
        raise AssertionError("unreachable")

    def _drop_idle(self) -> None:
        with self._pool_lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()

    def add_to_counter(self, conn: psycopg.Connection, key: str, amount: int) -> None:
        conn.execute(
            "INSERT INTO meta VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = meta.value + EXCLUDED.value",
            (key, amount),
        )

    def counter(self, key: str) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = %s", (key,))
        return int(rows[0][0]) if rows else 0

    def scrub(self) -> None:
        """VACUUM the tables a forget deletes from, so their dead rows' space is reclaimed (it cannot
        run inside a transaction; PostgreSQL's own WAL and backups are the operator's to rotate)."""
        with self._lock:
            for table in ("events", "impressions"):
                self._conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))

    def close(self) -> None:
        with self._lock:
            with self._pool_lock:
                self._closed = True
            self._drop_idle()
            self._conn.close()


@contextmanager
def _refusing_nul() -> Iterator[None]:
    """PostgreSQL text cannot hold NUL (SQLite can): a clear ValueError instead of a driver error."""
    try:
        yield
    except psycopg.DataError as error:
        if "0x00" in str(error) or "NUL" in str(error):
            raise ValueError("PostgreSQL store: text cannot contain the NUL character (\\x00)") from error
        raise


def _row_to_logged(row: tuple) -> LoggedEvent:
    offset, user_id, item_id, event_type, ts, value, event_id, context = row
    return LoggedEvent(offset, Event(user_id, item_id, event_type, ts, value, event_id, context))


class PostgresEventLog(EventLog):
    """The event log in the ``events`` table; ``log_offset`` is numbered under the write lock."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def append(self, events: Sequence[Event], *, untimed: int = 0) -> AppendResult:
        with _refusing_nul(), self.db.transaction() as conn:
            conn.execute(_WRITE_LOCK, (LOCK_SPACE,))
            # A statement of its own, after the lock: its snapshot includes the last writer's commit.
            before = conn.execute(_LAST_OFFSET).fetchone()[0]
            ids = [e.event_id for e in events if e.event_id is not None]
            known: set[str] = set()
            if ids:
                rows = conn.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)", (ids,))
                known = {row[0] for row in rows}
            fresh: list[tuple[Any, ...]] = []
            for e in events:
                if e.event_id is not None:
                    if e.event_id in known:
                        continue
                    known.add(e.event_id)  # a repeat inside the batch is a duplicate too
                fresh.append(
                    (
                        before + len(fresh) + 1,
                        e.user_id,
                        e.item_id,
                        e.event_type,
                        e.timestamp,
                        e.value,
                        e.event_id,
                        Json(e.context) if e.context else None,
                    )
                )
            if fresh:
                with conn.cursor().copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_EVENT_TYPES)
                    for row in fresh:
                        copy.write_row(row)
            accepted, duplicates = len(fresh), len(events) - len(fresh)
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
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE log_offset > %s ORDER BY log_offset LIMIT %s",
            (offset, limit),
        )
        return [_row_to_logged(row) for row in rows]

    def recent_items(self, user_id: str, n: int) -> list[str]:
        rows = self.db.query(
            "SELECT item_id FROM events WHERE user_id = %s ORDER BY ts DESC, log_offset DESC LIMIT %s",
            (user_id, n),
        )
        return [row[0] for row in reversed(rows)]

    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = %s"
            " ORDER BY ts DESC, log_offset DESC LIMIT %s",
            (user_id, limit),  # LIMIT NULL: no limit
        )
        return [_row_to_logged(row) for row in reversed(rows)]

    def newest_offset(self, user_id: str) -> int:
        return self.db.query(
            "SELECT COALESCE(MAX(log_offset), 0) FROM events WHERE user_id = %s", (user_id,)
        )[0][0]

    def time_range(self, start: float, end: float) -> list[LoggedEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE ts >= %s AND ts < %s ORDER BY ts, log_offset",
            (start, end),
        )
        return [_row_to_logged(row) for row in rows]

    def counts_by_time(self, start: float, end: float, bucket: float) -> list[tuple[float, int]]:
        rows = self.db.query(
            "SELECT FLOOR((ts - %s) / %s)::BIGINT AS b, COUNT(*) FROM events WHERE ts >= %s AND ts < %s"
            " GROUP BY b ORDER BY b",
            (start, bucket, start, end),
        )
        return [(start + b * bucket, n) for b, n in rows]

    def popular_items(self, after_offset: int, limit: int) -> list[tuple[str, int]]:
        # COLLATE "C": ties break by bytes, as SQLite does, whatever the database's locale.
        return self.db.query(
            "SELECT item_id, COUNT(*) AS n FROM events WHERE log_offset > %s GROUP BY item_id"
            ' ORDER BY n DESC, item_id COLLATE "C" LIMIT %s',
            (after_offset, limit),
        )

    def sequences(self, through_offset: int | None = None) -> SequenceTable:
        limit = self.last_offset() if through_offset is None else through_offset
        rows = self.db.query(
            "SELECT log_offset, user_id, item_id, event_type, ts, value FROM events WHERE log_offset <= %s"
            " ORDER BY log_offset",
            (limit,),
        )
        return SequenceTable.from_rows(rows)

    def stats(self) -> dict[str, object]:
        (events, first_ts, last_ts, users, items) = self.db.query(
            "SELECT COUNT(*), MIN(ts), MAX(ts), COUNT(DISTINCT user_id), COUNT(DISTINCT item_id) FROM events"
        )[0]
        last = self.last_offset()
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
        return self._delete("user_id = %s", (user_id,))

    def purge_before(self, timestamp: float) -> tuple[int, int, int]:
        return self._delete("ts < %s", (timestamp,))

    def _delete(self, where: str, params: tuple) -> tuple[int, int, int]:
        """Delete the events ``where`` selects, keeping the newest offset given out (OFFSET_FLOOR)."""
        with self.db.transaction() as conn:
            conn.execute(_WRITE_LOCK, (LOCK_SPACE,))  # no append numbers a batch while the floor moves
            count, first, last = conn.execute(
                "SELECT COUNT(*), COALESCE(MIN(log_offset), 0), COALESCE(MAX(log_offset), 0) FROM events"
                f" WHERE {where}",
                params,
            ).fetchone()
            if count:
                newest = conn.execute(_LAST_OFFSET).fetchone()[0]
                conn.execute(
                    "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (OFFSET_FLOOR, newest),
                )
                conn.execute(f"DELETE FROM events WHERE {where}", params)
        return count, first, last

    def record_forget(self, record: ForgetRecord) -> None:
        marks = ", ".join(["%s"] * (FORGET_COLUMNS.count(",") + 1))
        with _refusing_nul(), self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO forget_requests ({FORGET_COLUMNS}) VALUES ({marks})", forget_row(record)
            )

    def forget_records(self) -> list[ForgetRecord]:
        rows = self.db.query(f"SELECT {FORGET_COLUMNS} FROM forget_requests ORDER BY ts, request_id")
        return [row_to_forget(row) for row in rows]

    def close(self) -> None:
        self.db.close()


class PostgresCatalog(Catalog):
    """Items in the ``items`` table; ``position`` keeps the order items were first added in."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def upsert(self, items: Iterable[Item]) -> int:
        now = time.time()
        rows = [
            (
                i.item_id,
                i.title,
                i.description,
                i.category,
                Json(i.attributes) if i.attributes else None,
                now if i.created_at is None else i.created_at,
                now,
            )
            for i in items
        ]
        with _refusing_nul(), self.db.transaction() as conn:
            conn.execute(_WRITE_LOCK, (LOCK_SPACE,))
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO items (item_id, title, description, category, attributes, created_at,"
                    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (item_id) DO UPDATE SET"
                    " title = EXCLUDED.title, description = EXCLUDED.description,"
                    " category = EXCLUDED.category, attributes = EXCLUDED.attributes,"
                    " updated_at = EXCLUDED.updated_at",
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
            " WHERE item_id = %s",
            (item_id,),
        )
        return Item(*rows[0]) if rows else None

    def all(self) -> list[Item]:
        rows = self.db.query(
            "SELECT item_id, title, description, category, attributes, created_at FROM items"
            " ORDER BY position"
        )
        return [Item(*row) for row in rows]

    def __len__(self) -> int:
        return self.db.query("SELECT COUNT(*) FROM items")[0][0]


def redacted(url: str) -> str:
    """``url`` as libpq key=value pairs without its password, for logs and result files."""
    info = psycopg.conninfo.conninfo_to_dict(connection_url(url))
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with its tables in ``schema`` (libpq's ``options=-csearch_path=…``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@contextmanager
def scratch_schema(url: str, schema: str) -> Iterator[str]:
    """A fresh, empty schema (dropped afterwards) and the URL of a store in it: benchmarks, tests."""
    name = sql.Identifier(schema)
    with psycopg.connect(connection_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(connection_url(url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


class PostgresImpressionLog(ImpressionLog):
    """Impressions in the ``impressions`` table (items as a JSON array, in TEXT)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def append(self, impressions: Sequence[Impression]) -> None:
        rows = [impression_row(i) for i in impressions]
        with _refusing_nul(), self.db.transaction() as conn:
            conn.cursor().executemany(
                f"INSERT INTO impressions ({IMPRESSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (request_id) DO NOTHING",
                rows,
            )

    def get(self, request_id: str) -> Impression | None:
        rows = self.db.query(
            f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE request_id = %s", (request_id,)
        )
        return row_to_impression(rows[0]) if rows else None

    def between(self, start: float, end: float) -> list[Impression]:
        where = "ts >= %s AND ts < %s ORDER BY ts, request_id"
        rows = self.db.query(f"SELECT {IMPRESSION_COLUMNS} FROM impressions WHERE {where}", (start, end))
        return [row_to_impression(row) for row in rows]

    def forget(self, user_id: str) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM impressions WHERE user_id = %s", (user_id,)).rowcount

    def purge_before(self, timestamp: float) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM impressions WHERE ts < %s", (timestamp,)).rowcount

    def __len__(self) -> int:
        return self.db.query("SELECT COUNT(*) FROM impressions")[0][0]
