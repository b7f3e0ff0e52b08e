"""``streamrec bench ingest``: how fast events get into the log.

Three paths, each timed on a fresh store, ``repeats`` times (median reported):

* ``append``: pre-validated events appended in batches (the log's own cost);
* ``validate_append``: raw dict records validated, then appended (HTTP's path);
* ``file_ingest``: a JSONL file read, validated and appended (``streamrec ingest``).

Also timed: the bulk export of all sequences that training reads, and a
user's-recent-items lookup (the serving path). SQLite always; with ``--store
postgresql://…`` the same on that PostgreSQL too, each run in a scratch schema
that is dropped afterwards (``postgresql`` in the result, beside SQLite's keys).
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streamrec.bench.report import save_bar_plot, write_result
from streamrec.data import open_dataset
from streamrec.data.base import Dataset
from streamrec.data.synthetic import StreamConfig, generate, write
from streamrec.events import Event, EventSchema
from streamrec.ingest import ingest_dataset
from streamrec.store import open_store

BATCH = 20_000


def _fresh_sqlite(root: Path) -> Callable[[str], AbstractContextManager[str]]:
    @contextmanager
    def fresh(name: str) -> Iterator[str]:
        yield str(root / name)

    return fresh


def _fresh_postgres(url: str) -> Callable[[str], AbstractContextManager[str]]:
    from streamrec.store.postgres import scratch_schema

    def fresh(name: str) -> AbstractContextManager[str]:
        return scratch_schema(url, f"streamrec_bench_{name.replace('-', '_')}")

    return fresh


def _time_store(
    fresh: Callable[[str], AbstractContextManager[str]],
    dataset: Dataset,
    records: list[dict],
    validated: list[Event],
    schema: EventSchema,
    repeats: int,
) -> dict:
    """The three paths, the export and the recent-items lookup, each on a fresh empty store."""
    timings: dict[str, list[float]] = {"append": [], "validate_append": [], "file_ingest": []}
    export_seconds: list[float] = []
    recent_ms: list[float] = []
    for run in range(repeats):
        with fresh(f"append-{run}") as location, open_store(location) as store:
            started = time.perf_counter()
            for start in range(0, len(validated), BATCH):
                store.log.append(validated[start : start + BATCH])
            timings["append"].append(time.perf_counter() - started)
            started = time.perf_counter()
            table = store.log.sequences()
            export_seconds.append(time.perf_counter() - started)
            users = table.users[:: max(1, len(table.users) // 500)]
            started = time.perf_counter()
            for user in users:
                store.log.recent_items(user, 50)
            recent_ms.append((time.perf_counter() - started) / len(users) * 1000)
        with fresh(f"validate-{run}") as location, open_store(location) as store:
            started = time.perf_counter()
            for start in range(0, len(records), BATCH):
                store.log.append([schema.validate(r) for r in records[start : start + BATCH]])
            timings["validate_append"].append(time.perf_counter() - started)
        with fresh(f"file-{run}") as location, open_store(location) as store:
            started = time.perf_counter()
            ingest_dataset(dataset, store, schema, on_error="skip", batch_size=BATCH, progress=False)
            timings["file_ingest"].append(time.perf_counter() - started)
    n = len(records)
    summary: dict[str, float] = {
        f"{name}_events_per_s": round(n / statistics.median(values)) for name, values in timings.items()
    }
    summary["export_sequences_seconds"] = round(statistics.median(export_seconds), 3)
    summary["recent_items_ms"] = round(statistics.median(recent_ms), 4)
    return {
        "summary": summary,
        "runs_seconds": {name: [round(v, 3) for v in values] for name, values in timings.items()},
    }


def _postgres_server(url: str) -> dict[str, str]:
    """What the numbers depend on: the server's version and its durability settings."""
    import psycopg

    from streamrec.store.postgres import connection_url, redacted

    names = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "wal_level")
    with psycopg.connect(connection_url(url)) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
    return {"store": redacted(url), **settings}


def run_ingest_benchmark(
    *, events: int, repeats: int, out: Path, seed: int = 7, store: str | None = None
) -> dict:
    """SQLite always; the PostgreSQL at ``store`` too when given (each run in a scratch schema)."""
    config = StreamConfig(
        users=max(100, events // 100), items=max(200, events // 250), events=events, seed=seed
    )
    schema = EventSchema()
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        root = Path(tmp)
        write(generate(config), root / "sim")
        dataset = open_dataset(root / "sim")
        records = [record for _, record in dataset.events()]
        validated = [schema.validate(r) for r in records]
        sqlite = _time_store(_fresh_sqlite(root), dataset, records, validated, schema, repeats)
        postgres = None
        if store is not None:
            postgres = _time_store(_fresh_postgres(store), dataset, records, validated, schema, repeats)
    n = len(records)
    command = f"streamrec bench ingest --events {events} --repeats {repeats} --out {out}"
    result = {
        "benchmark": "ingest",
        "command": command + (f" --store {_without_password(store)}" if store else ""),
        "events": n,
        "repeats": repeats,
        "batch_size": BATCH,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        **sqlite,
    }
    rates = {name: n / statistics.median(values) for name, values in sqlite["runs_seconds"].items()}
    if postgres is not None:
        result["postgresql"] = {**_postgres_server(store), **postgres}
        rates = {f"{name}\nsqlite": rate for name, rate in rates.items()}
        for name, values in postgres["runs_seconds"].items():
            rates[f"{name}\npostgresql"] = n / statistics.median(values)
    write_result(out, result)
    save_bar_plot(
        out.with_suffix(".png"),
        rates,
        title=f"Ingest throughput, {n:,} synthetic events (median of {repeats})",
        ylabel="events / second",
    )
    return json.loads(json.dumps(result))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))
