"""Validate raw records and append them to the store: the one path every file takes.

Two error policies:

* ``fail`` (default): the whole dataset is one transaction; the first bad
  record aborts it, nothing from it is committed, and the error names the
  file, the line and the field.
* ``skip``: batches commit as they fill; bad records go to a reject file
  (JSON lines with record, field, problem and the raw record) and are counted.

Events without an ``event_id`` get one derived from a hash of the source
files and the record's position, so ingesting the same file twice stores
each event once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

from tqdm import tqdm

from streamrec.data.base import Dataset
from streamrec.data.files import INVALID_KEY
from streamrec.events import Event, EventSchema, EventValidationError
from streamrec.items import validate_item
from streamrec.store import Store

OnError = Literal["fail", "skip"]


@dataclass
class IngestSummary:
    dataset: str
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    items: int = 0
    items_rejected: int = 0
    first_offset: int = 0
    last_offset: int = 0
    seconds: float = 0.0
    has_timestamps: bool = True
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "notes": list(self.notes)}


class IngestError(Exception):
    """A bad record under ``on_error='fail'``: nothing from the dataset was committed."""

    def __init__(self, error: EventValidationError) -> None:
        self.error = error
        super().__init__(f"{error} (nothing from this dataset was committed)")


def source_fingerprint(paths: list[Path]) -> str:
    """A short hash of the source files' bytes: the stable part of derived event ids."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _check(record: dict, where: str, validate: Callable[..., object], **kwargs: object) -> object:
    if INVALID_KEY in record:
        raise EventValidationError(where, None, str(record[INVALID_KEY]))
    return validate(record, where=where, **kwargs)


def ingest_dataset(
    dataset: Dataset,
    store: Store,
    schema: EventSchema,
    *,
    on_error: OnError = "fail",
    reject_path: Path | None = None,
    batch_size: int = 20_000,
    progress: bool = True,
    on_commit: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Ingest a dataset's items then its events; returns what happened.

    ``on_commit`` is called with the running accepted count after each
    durable commit (only in ``skip`` mode, where batches commit on their own).
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    started = time.perf_counter()
    summary = IngestSummary(dataset.name, has_timestamps=dataset.has_timestamps, notes=tuple(dataset.notes))
    fingerprint = source_fingerprint(dataset.source_files) if dataset.source_files else None
    arrival_time = time.time()
    rejects: IO[str] | None = None

    def reject(error: EventValidationError, record: object) -> None:
        nonlocal rejects
        if on_error == "fail":
            raise IngestError(error)
        if reject_path is not None:
            if rejects is None:
                reject_path.parent.mkdir(parents=True, exist_ok=True)
                rejects = reject_path.open("a", encoding="utf-8")
            rejects.write(json.dumps({**error.as_dict(), "raw": record}, default=str) + "\n")

    def flush(batch: list[Event], untimed: int) -> None:
        result = store.log.append(batch, untimed=untimed)
        summary.accepted += result.accepted
        summary.duplicates += result.duplicates
        if result.accepted:
            summary.first_offset = summary.first_offset or result.first_offset
            summary.last_offset = result.last_offset
        if on_commit is not None and on_error == "skip":
            on_commit(summary.accepted)

    def run() -> None:
        items = []
        for where, record in dataset.items():
            try:
                items.append(_check(record, where, validate_item))
            except EventValidationError as error:
                summary.items_rejected += 1
                reject(error, record)
        summary.items = store.catalog.upsert(items) if items else 0
        batch: list[Event] = []
        untimed = 0
        bar = tqdm(desc=f"ingest {dataset.name}", unit=" events", disable=not progress, unit_scale=True)
        for index, (where, record) in enumerate(dataset.events()):
            try:
                event = _check(record, where, schema.validate, arrival_time=arrival_time)
            except EventValidationError as error:
                summary.rejected += 1
                reject(error, record)
                continue
            assert isinstance(event, Event)
            if event.event_id is None and fingerprint is not None:
                event = _with_event_id(event, f"{fingerprint}:{index}")
            untimed += record.get("timestamp") in (None, "")
            batch.append(event)
            if len(batch) >= batch_size:
                flush(batch, untimed)
                bar.update(len(batch))
                batch, untimed = [], 0
        if batch:
            flush(batch, untimed)
            bar.update(len(batch))
        bar.close()

    try:
        if on_error == "fail":
            with store.transaction():
                run()
        else:
            run()
    finally:
        if rejects is not None:
            rejects.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _with_event_id(event: Event, event_id: str) -> Event:
    return Event(
        event.user_id, event.item_id, event.event_type, event.timestamp, event.value, event_id, event.context
    )
