"""Generic event and item files: JSON lines, CSV and Parquet, with an optional column mapping.

A *files* dataset is either one events file, or a directory holding
``events.{jsonl,csv,parquet}`` and optionally ``items.{jsonl,csv,parquet}``
(``.jsonl`` and ``.csv`` may be gzipped: ``events.jsonl.gz``). That directory
layout is what ``streamrec simulate`` writes.

Records come out raw, as the file holds them, for :mod:`streamrec.ingest` to
validate:

* JSONL: each non-blank line is parsed; blank lines are skipped. A line that
  is not valid JSON (or not UTF-8) is still yielded, as
  ``{"__invalid__": "invalid JSON: <message>"}``, so that ingest reports it
  with its line number instead of the reader failing halfway (the key is
  :data:`INVALID_KEY`, the one ingest looks for).
* CSV: values stay strings (event validation parses numbers and times); an
  empty cell becomes ``None``. A row whose field count differs from the
  header's is yielded as an ``__invalid__`` record too.
* Parquet: values keep their Arrow types; timestamp and date columns become
  epoch seconds, because that is what event validation reads.

``where`` reads "events.csv line 12" (the physical line; the header is line
1) or "events.parquet row 12".

A mapping ``{"user_id": "uid", "item_id": "sku"}`` renames source columns
(our field name -> source column). Event fields are renamed in events files
and item fields in items files; a source column named like a mapped field is
dropped, so the mapped column wins. Other columns pass through unchanged (the
event schema decides whether unknown fields are allowed).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from streamrec.data.base import Dataset, LocatedRecord
from streamrec.events import FIELDS
from streamrec.items import ITEM_FIELDS

INVALID_KEY = "__invalid__"
FILE_FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
# Suffixes (lower case, after stripping a trailing ".gz") that name each format.
SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Directory layout: tried in this order; more than one match is an error.
EVENTS_NAMES = ("events.jsonl", "events.jsonl.gz", "events.csv", "events.csv.gz", "events.parquet")
ITEMS_NAMES = ("items.jsonl", "items.jsonl.gz", "items.csv", "items.csv.gz", "items.parquet")


def open_text(path: Path, encoding: str = "utf-8", newline: str | None = None) -> IO[str]:
    """Open a text file, gunzipping it on the fly when its name ends in ``.gz``."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return path.open(encoding=encoding, newline=newline)


def format_of(path: Path) -> str | None:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` from a file name (``.gz`` allowed, not for Parquet)."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    fmt = SUFFIXES.get(suffix)
    return None if fmt == "parquet" and gz else fmt


def check_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Reject mappings to fields streamrec does not have (a typo would otherwise pass silently)."""
    known = dict.fromkeys(FIELDS + ITEM_FIELDS)
    result = {}
    for ours, column in (mapping or {}).items():
        if ours not in known:
            raise ValueError(
                f"column mapping: {ours!r} is not an event or item field (known: {', '.join(known)})"
            )
        if not isinstance(column, str) or not column:
            raise ValueError(f"column mapping: {ours!r} must map to a column name, got {column!r}")
        result[ours] = column
    columns = list(result.values())
    duplicated = {c for c in columns if columns.count(c) > 1}
    if duplicated:
        raise ValueError(f"column mapping: column {sorted(duplicated)[0]!r} is mapped to more than one field")
    return result


class _Renamer:
    """Applies the part of a mapping that concerns one kind of record (events or items)."""

    def __init__(self, mapping: Mapping[str, str], fields: tuple[str, ...]) -> None:
        self.rename = {column: ours for ours, column in mapping.items() if ours in fields}
        # A source column named like a mapped field would collide with it: the mapped one wins.
        self.shadowed = {ours for ours in self.rename.values() if ours not in self.rename}

    def __bool__(self) -> bool:
        return bool(self.rename)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        rename, shadowed = self.rename, self.shadowed
        return {rename.get(key, key): value for key, value in record.items() if key not in shadowed}


def iter_jsonl(
    path: Path, mapping: Mapping[str, str] | None = None, *, fields: tuple[str, ...] = FIELDS
) -> Iterator[LocatedRecord]:
    """Records of a JSON-lines file; bad lines become ``__invalid__`` records (see module doc)."""
    renamer = _Renamer(mapping or {}, fields)
    name = path.name
    opener = gzip.open if name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{name} line {number}"
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield where, {INVALID_KEY: f"not UTF-8 text ({error.reason} at byte {error.start})"}
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield where, {INVALID_KEY: f"invalid JSON: {error.msg} (column {error.colno})"}
                continue
            if renamer and isinstance(record, dict):
                record = renamer(record)
            yield where, record


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV file (empty when the file is empty)."""
    with open_text(path, "utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def iter_csv(
    path: Path, mapping: Mapping[str, str] | None = None, *, fields: tuple[str, ...] = FIELDS
) -> Iterator[LocatedRecord]:
    """Rows of a CSV file with a header, as string dicts; empty cells become ``None``."""
    renamer = _Renamer(mapping or {}, fields)
    name = path.name
    with open_text(path, "utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        columns = [renamer.rename.get(column, column) for column in header]
        keep = [i for i, column in enumerate(header) if column not in renamer.shadowed]
        width = len(header)
        start = reader.line_num + 1
        try:
            for row in reader:
                line, start = start, reader.line_num + 1
                if not row:  # a blank line
                    continue
                where = f"{name} line {line}"
                if len(row) != width:
                    yield where, {INVALID_KEY: f"has {len(row)} fields, the header has {width}"}
                    continue
                yield where, {columns[i]: (row[i] if row[i] != "" else None) for i in keep}
        except UnicodeDecodeError as error:
            # A text stream cannot resume past undecodable bytes, so this one stops the read.
            raise ValueError(f"{name} near line {start}: not UTF-8 text ({error.reason})") from None


def _python_column(column: Any) -> list[Any]:
    """One Arrow column as Python values; times become epoch seconds (what validation reads)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        ticks = pc.cast(column, pa.int64()).to_pylist()
        return [None if t is None else t / per_second for t in ticks]
    if pa.types.is_date(kind):
        days = pc.cast(pc.cast(column, pa.date32()), pa.int32()).to_pylist()
        return [None if d is None else d * 86_400 for d in days]
    return column.to_pylist()


def parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def iter_parquet(
    path: Path,
    mapping: Mapping[str, str] | None = None,
    *,
    fields: tuple[str, ...] = FIELDS,
    batch_size: int = 65_536,
) -> Iterator[LocatedRecord]:
    """Rows of a Parquet file, read in batches so a large file never sits in memory whole."""
    import pyarrow.parquet as pq

    renamer = _Renamer(mapping or {}, fields)
    name = path.name
    row = 0
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    keep = [i for i, column in enumerate(names) if column not in renamer.shadowed]
    keys = [renamer.rename.get(names[i], names[i]) for i in keep]
    for batch in parquet.iter_batches(batch_size=batch_size):
        values = [_python_column(batch.column(i)) for i in keep]
        for cells in zip(*values, strict=True):
            row += 1
            yield f"{name} row {row}", dict(zip(keys, cells, strict=True))


READERS = {"jsonl": iter_jsonl, "csv": iter_csv, "parquet": iter_parquet}


def _check_columns(path: Path, fmt: str, mapping: Mapping[str, str]) -> None:
    """Fail at open time when a mapped event column is missing from a CSV/Parquet header."""
    wanted = {ours: column for ours, column in mapping.items() if ours in FIELDS}
    if not wanted or fmt == "jsonl":
        return
    columns = csv_header(path) if fmt == "csv" else parquet_columns(path)
    for ours, column in wanted.items():
        if column not in columns:
            raise ValueError(
                f"{path}: column mapping {ours}={column}: no column {column!r} "
                f"(columns: {', '.join(columns) or 'none'})"
            )


def _pick(directory: Path, names: tuple[str, ...], what: str) -> Path | None:
    found = [directory / name for name in names if (directory / name).is_file()]
    if len(found) > 1:
        raise ValueError(
            f"{directory}: more than one {what} file ({', '.join(p.name for p in found)}); "
            "keep one, or open the file itself"
        )
    return found[0] if found else None


def read_files(
    path: str | Path,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    items: str | Path | None = None,
) -> Dataset:
    """An events file, or a directory with ``events.*`` and optionally ``items.*`` (see module doc).

    ``format`` forces how the events (and items) file is parsed, whatever its
    name; ``items`` names an items file to read alongside a single events file.
    """
    path = Path(path)
    mapping = check_mapping(mapping)
    if format is not None and format not in FILE_FORMATS:
        raise ValueError(f"unknown file format {format!r} (expected one of: {', '.join(FILE_FORMATS)})")
    if path.is_dir():
        names = tuple(n for n in EVENTS_NAMES if format in (None, format_of(Path(n))))
        events_path = _pick(path, names, "events")
        if events_path is None:
            raise ValueError(f"{path}: no events file (expected one of: {', '.join(names)})")
        items_path = Path(items) if items is not None else _pick(path, ITEMS_NAMES, "items")
        label = path.name
    elif path.is_file():
        events_path = path
        items_path = Path(items) if items is not None else None
        label = path.name
    else:
        raise ValueError(f"{path}: no such file or directory")
    if items_path is not None and not items_path.is_file():
        raise ValueError(f"{items_path}: items file not found")
    events_format = format or format_of(events_path)
    if events_format is None:
        raise ValueError(
            f"{events_path}: cannot tell the format from the name "
            f"(expected .jsonl, .csv or .parquet, optionally .gz for jsonl/csv)"
        )
    items_format = None
    if items_path is not None:
        items_format = format_of(items_path) or format
        if items_format is None:
            raise ValueError(f"{items_path}: cannot tell the format from the name (.jsonl, .csv or .parquet)")
    _check_columns(events_path, events_format, mapping)
    read_events, read_items = READERS[events_format], READERS.get(items_format or "")

    def events() -> Iterator[LocatedRecord]:
        return read_events(events_path, mapping, fields=FIELDS)

    def item_records() -> Iterator[LocatedRecord]:
        if read_items is None or items_path is None:
            return iter(())
        return read_items(items_path, mapping, fields=ITEM_FIELDS)

    items_note = f"items: {items_path.name}" if items_path else "no items file"
    notes = [f"events: {events_path.name}, {items_note}"]
    if mapping:
        notes.append("column mapping: " + ", ".join(f"{ours}<-{column}" for ours, column in mapping.items()))
    return Dataset(
        name=f"{events_format}:{label}",
        events=events,
        items=item_records,
        has_timestamps=True,
        source_files=[events_path],
        notes=notes,
    )
