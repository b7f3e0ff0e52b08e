"""Where events and items live: the event log and the catalogue, behind one handle.

>>> import tempfile
>>> from streamrec.events import Event
>>> with open_store(tempfile.mkdtemp()) as store:
...     result = store.log.append([Event("u1", "i1", "view", 1.0)])
...     store.log.recent_items("u1", 5)
['i1']
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from streamrec.store.base import (
    AppendResult,
    Catalog,
    Database,
    EventLog,
    Impression,
    ImpressionLog,
    LoggedEvent,
    SequenceTable,
)
from streamrec.store.sqlite import SQLiteCatalog, SQLiteDatabase, SQLiteEventLog, SQLiteImpressionLog

__all__ = [
    "AppendResult",
    "Catalog",
    "EventLog",
    "Impression",
    "ImpressionLog",
    "LoggedEvent",
    "SequenceTable",
    "Store",
    "open_store",
]

DATABASE_FILE = "streamrec.sqlite"


class Store:
    """The event log, the catalogue and the impressions of one home, on the connection they share."""

    def __init__(
        self, log: EventLog, catalog: Catalog, impressions: ImpressionLog, database: Database
    ) -> None:
        self.log = log
        self.catalog = catalog
        self.impressions = impressions
        self.database = database

    def transaction(self):
        """Make several appends and upserts atomic together (a whole file, say)."""
        return self.database.transaction()

    def stats(self) -> dict[str, object]:
        return {**self.log.stats(), "catalog_items": len(self.catalog)}

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_store(location: str | Path, *, synchronous: str = "FULL") -> Store:
    """Open (creating if needed) the store at ``location``: a home folder, or a URL.

    URLs name the backend, as SQLAlchemy spells them: ``sqlite:///relative/file.sqlite``,
    ``sqlite:////absolute/file.sqlite``, ``postgresql://user:password@host:port/database``
    (libpq's URI: ``?sslmode=…`` and the like work); a folder holds ``streamrec.sqlite``.
    ``synchronous`` is SQLite's setting; on PostgreSQL, ``OFF`` means ``synchronous_commit=off``.
    """
    text = str(location)
    scheme, separator, rest = text.partition("://")
    if not separator:
        path = Path(text) / DATABASE_FILE
    elif scheme == "sqlite" and rest.startswith("/"):
        path = Path(rest[1:])
    elif scheme.startswith("postgres"):  # psycopg is imported only here; postgres.py checks the rest
        from streamrec.store.postgres import (
            PostgresCatalog,
            PostgresDatabase,
            PostgresEventLog,
            PostgresImpressionLog,
        )

        pg = PostgresDatabase(text, synchronous=synchronous)
        return Store(PostgresEventLog(pg), PostgresCatalog(pg), PostgresImpressionLog(pg), pg)
    else:
        raise ValueError(
            f"store: unsupported URL {text!r} (known: sqlite:///PATH, postgresql://…, or a home folder)"
        )
    database = SQLiteDatabase(path, synchronous=synchronous)
    return Store(SQLiteEventLog(database), SQLiteCatalog(database), SQLiteImpressionLog(database), database)
