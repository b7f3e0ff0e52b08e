"""``streamrec bench ingest``: how fast events get into the log.

Three paths, each timed on a fresh store, ``repeats`` times (median reported):

* ``append``: pre-validated events appended in batches (the log's own cost);
* ``validate_append``: raw dict records validated, then appended (HTTP's path);
* ``file_ingest``: a JSONL file read, validated and appended (``streamrec ingest``).

Also timed: the bulk export of all sequences that training reads, and a
user's-recent-items lookup (the serving path).
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from streamrec.bench.report import save_bar_plot, write_result
from streamrec.data import open_dataset
from streamrec.data.synthetic import StreamConfig, generate, write
from streamrec.events import EventSchema
from streamrec.ingest import ingest_dataset
from streamrec.store import open_store

BATCH = 20_000


def run_ingest_benchmark(*, events: int, repeats: int, out: Path, seed: int = 7) -> dict:
    config = StreamConfig(
        users=max(100, events // 100), items=max(200, events // 250), events=events, seed=seed
    )
    schema = EventSchema()
    timings: dict[str, list[float]] = {"append": [], "validate_append": [], "file_ingest": []}
    export_seconds: list[float] = []
    recent_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        root = Path(tmp)
        write(generate(config), root / "sim")
        dataset = open_dataset(root / "sim")
        records = [record for _, record in dataset.events()]
        validated = [schema.validate(r) for r in records]
        for run in range(repeats):
            with open_store(root / f"append-{run}") as store:
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
            with open_store(root / f"validate-{run}") as store:
                started = time.perf_counter()
                for start in range(0, len(records), BATCH):
                    store.log.append([schema.validate(r) for r in records[start : start + BATCH]])
                timings["validate_append"].append(time.perf_counter() - started)
            with open_store(root / f"file-{run}") as store:
                started = time.perf_counter()
                ingest_dataset(dataset, store, schema, on_error="skip", batch_size=BATCH, progress=False)
                timings["file_ingest"].append(time.perf_counter() - started)
    n = len(records)
    summary = {
        f"{name}_events_per_s": round(n / statistics.median(values)) for name, values in timings.items()
    }
    summary["export_sequences_seconds"] = round(statistics.median(export_seconds), 3)
    summary["recent_items_ms"] = round(statistics.median(recent_ms), 4)
    result = {
        "benchmark": "ingest",
        "command": f"streamrec bench ingest --events {events} --repeats {repeats} --out {out}",
        "events": n,
        "repeats": repeats,
        "batch_size": BATCH,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "summary": summary,
        "runs_seconds": {name: [round(v, 3) for v in values] for name, values in timings.items()},
    }
    write_result(out, result)
    save_bar_plot(
        out.with_suffix(".png"),
        {name: n / statistics.median(values) for name, values in timings.items()},
        title=f"Ingest throughput, {n:,} synthetic events (median of {repeats})",
        ylabel="events / second",
    )
    return json.loads(json.dumps(result))
