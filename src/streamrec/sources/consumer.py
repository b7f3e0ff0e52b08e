"""The consumer loop every source shares: batch, validate, append durably, dead-letter, then acknowledge.

Acknowledge only after durable: a batch's valid events are appended to the log in one
transaction, its invalid records go to the source's dead letters with the reason, and only
then is the batch acknowledged. A consumer killed anywhere in between leaves the batch
unacknowledged; it is delivered again and the log's ``event_id`` idempotency stores each
event once (records without an id get one from their position, :meth:`Source.where`).

>>> import tempfile
>>> from streamrec.home import Home
>>> from streamrec.sources.memory import MemorySource
>>> source = MemorySource([{"user_id": "u1", "item_id": "i1", "event_type": "view"}, {"oops": 1}])
>>> summary = consume(source, Home.open(tempfile.mkdtemp()), drain=True, handle_signals=False)
>>> (summary.stored, summary.dead_lettered, summary.stopped_by, source.lag())
(1, 1, 'drained', 0)
>>> source.dead[0][1]["record"], source.dead[0][1]["field"]
('memory:test:1', 'oops')
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from streamrec.events import Event, EventSchema, EventValidationError, excerpt
from streamrec.faults import crash_point
from streamrec.home import Home
from streamrec.sources.base import MAX_RECORD_BYTES, DeadLetter, Source, SourceRecord
from streamrec.sources.metrics import SourceMetrics
from streamrec.store import Store

DEFAULT_MAX_BATCH = 5_000
DEFAULT_MAX_WAIT_SECONDS = 0.5
_FIRST_FIELDS = attrgetter("user_id", "item_id", "event_type", "timestamp", "value")
POLL_SECONDS = 0.5  # longest wait for a first record, so a stop request is seen this fast
# A streamrec.faults crash point (STREAMREC_CRASH_AT) for drills: the batch is in the log, not acknowledged.
CRASH_AFTER_APPEND = "consume-after-append"
STATUS_DIR = "sources"  # HOME/sources/<source>.json: the last progress of each source's consumer


@dataclass
class ConsumeSummary:
    """Counts of one :func:`consume` run. ``read`` counts redeliveries again; the log stores them once."""

    source: str
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lag: int | None = None
    seconds: float = 0.0
    stopped_by: str | None = None  # "SIGINT", "SIGTERM", "drained", "stop"

    @property
    def events_per_second(self) -> float:
        return round(self.read / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "events_per_second": self.events_per_second}


def consume(
    source: Source,
    home: Home,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    allow_unknown_fields: bool = False,
    drain: bool = False,
    stop: threading.Event | None = None,
    metrics: SourceMetrics | None = None,
    progress: Callable[[ConsumeSummary], None] | None = None,
    progress_every: float = 2.0,
    handle_signals: bool = True,
) -> ConsumeSummary:
    """Move events from ``source`` into ``home``'s log until stopped; returns what happened.

    A batch is committed when it holds ``max_batch`` records or its first record has waited
    ``max_wait_seconds``. It stops when ``stop`` is set, on SIGINT/SIGTERM (with
    ``handle_signals``, in the main thread: the batch in hand is committed and acknowledged
    first; a second signal acts at once), or with ``drain`` when a read finds nothing.
    ``progress`` gets the running summary every ``progress_every`` seconds and at the end;
    the same figures go to ``HOME/sources/<source>.json`` for ``streamrec stats``.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    if max_wait_seconds < 0:
        raise ValueError(f"max_wait_seconds must be 0 or more, got {max_wait_seconds}")
    stop = stop if stop is not None else threading.Event()
    summary = ConsumeSummary(source.name)
    schema = home.settings.event_schema(allow_unknown_fields=allow_unknown_fields)
    started = time.monotonic()

    def report(state: str) -> None:
        summary.lag = source.lag()
        summary.seconds = round(time.monotonic() - started, 3)
        if metrics is not None and summary.lag is not None:
            metrics.lag.labels(source.name).set(summary.lag)
        write_status(home, summary, state)
        if progress is not None:
            progress(summary)

    signals = _stop_on_signals(stop, summary) if handle_signals else nullcontext()
    with signals, home.open_store() as store:
        report("running")
        next_report = time.monotonic() + progress_every
        while not stop.is_set():
            records = _gather(source, max_batch, max_wait_seconds, stop)
            if records:
                commit_batch(source, store, schema, records, summary, metrics)
            elif drain:
                summary.stopped_by = "drained"
                break
            if time.monotonic() >= next_report:
                report("running")
                next_report = time.monotonic() + progress_every
        summary.stopped_by = summary.stopped_by or "stop"
        report("stopped")
    return summary


def commit_batch(
    source: Source,
    store: Store,
    schema: EventSchema,
    records: Sequence[SourceRecord],
    summary: ConsumeSummary,
    metrics: SourceMetrics | None = None,
) -> None:
    """Validate ``records``, append the valid events in one transaction, then dead-letter and acknowledge.

    A record that cannot be made an event, for whatever reason, becomes a dead letter:
    one bad record never stops the batch or the consumer.
    """
    started = time.perf_counter()
    now = time.time()
    events: list[Event] = []
    dead: list[DeadLetter] = []
    untimed = 0
    for record in records:
        try:
            event, timed = _event(source, schema, record, now)
        except EventValidationError as error:
            dead.append(DeadLetter(record, error))
            continue
        events.append(event)
        untimed += not timed
    if events:
        result = store.log.append(events, untimed=untimed)
        stored, duplicates = result.accepted, result.duplicates
    else:
        stored = duplicates = 0
    crash_point(CRASH_AFTER_APPEND)
    source.acknowledge(records, dead)  # only now: the batch is durable
    summary.read += len(records)
    summary.stored += stored
    summary.duplicates += duplicates
    summary.dead_lettered += len(dead)
    summary.batches += 1
    if metrics is not None:
        for outcome, count in (("stored", stored), ("duplicate", duplicates), ("dead_letter", len(dead))):
            if count:
                metrics.records.labels(source.name, outcome).inc(count)
        metrics.batch_seconds.labels(source.name).observe(time.perf_counter() - started)


def _event(source: Source, schema: EventSchema, record: SourceRecord, now: float) -> tuple[Event, bool]:
    """The record's event with an ``event_id`` (derived from its position if it has none), and
    whether it carried its own timestamp; any failure is an :class:`EventValidationError`."""
    where = source.where(record.position)
    if record.size > MAX_RECORD_BYTES:
        raise EventValidationError(where, None, f"is {record.size:,} bytes, more than {MAX_RECORD_BYTES:,}")
    try:
        fields = source.decode(record)
        event = schema.validate(fields, where=where, arrival_time=record.arrival_time or now)
    except EventValidationError:
        raise
    except Exception as error:  # deep JSON nesting (RecursionError) and the like: still just a bad record
        problem = f"could not be read ({type(error).__name__}: {excerpt(str(error))})"
        raise EventValidationError(where, None, problem) from None
    if event.event_id is None:  # (not dataclasses.replace: this runs for every record)
        event = Event(*_FIRST_FIELDS(event), where, event.context)
    return event, fields.get("timestamp") not in (None, "")


def _gather(source: Source, max_batch: int, max_wait: float, stop: threading.Event) -> list[SourceRecord]:
    """Up to ``max_batch`` records, read until full or until the first has waited ``max_wait``.

    A position already in the batch is left out: a source may hand a record out twice while
    the batch fills (re-claimed after ``min_idle_ms``, say), and one acknowledgement covers both.
    """
    records = source.read(max_batch, timeout=POLL_SECONDS)
    if not records:
        return records
    seen = {record.position for record in records}
    deadline = time.monotonic() + max_wait
    while len(records) < max_batch and not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for record in source.read(max_batch - len(records), timeout=min(left, POLL_SECONDS)):
            if record.position not in seen:
                seen.add(record.position)
                records.append(record)
    return records


@contextmanager
def _stop_on_signals(stop: threading.Event, summary: ConsumeSummary) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; the handler then steps aside, so a second signal acts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def handle(number: int, frame: object) -> None:
        summary.stopped_by = signal.Signals(number).name
        stop.set()
        signal.signal(number, previous[number])

    for number in previous:
        signal.signal(number, handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def status_path(home: Home, source_name: str) -> Path:
    return home.path / STATUS_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "-", source_name) + ".json")


def write_status(home: Home, summary: ConsumeSummary, state: str) -> None:
    """The consumer's latest figures, replaced atomically so a reader never sees half a file."""
    path = status_path(home, summary.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**summary.as_dict(), "state": state, "pid": os.getpid(), "updated_at": time.time()}
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(payload))
    os.replace(scratch, path)


def read_statuses(home: Home) -> list[dict[str, Any]]:
    """Every source's last written figures (``streamrec stats`` shows their lag)."""
    folder = home.path / STATUS_DIR
    if not folder.is_dir():
        return []
    statuses = []
    for path in sorted(folder.glob("*.json")):
        try:
            statuses.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return statuses
