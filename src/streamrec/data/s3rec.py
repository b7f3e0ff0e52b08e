"""S3-Rec's preprocessed sequences (Amazon Beauty and friends): one user's whole history per line.

``Beauty.txt`` holds ``user item1 item2 ...`` in time order, with no
timestamps; every item becomes a ``purchase`` event, in that order. Titles
come from ``<Name>_item_titles.tsv`` (header ``item_id asin title``), a join
made in our dataset folder; without it the dataset has no items, because bare
ids give an encoder nothing to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamrec.data.base import Dataset, LocatedRecord
from streamrec.data.files import INVALID_KEY, open_text

TITLES_SUFFIX = "_item_titles.tsv"


def sequence_files(folder: Path) -> list[Path]:
    """The candidate sequence files of a folder: its ``*.txt`` (or ``*.txt.gz``) files."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".txt", ".txt.gz")))


def _titles_file(folder: Path, stem: str) -> Path | None:
    own = folder / f"{stem}{TITLES_SUFFIX}"
    if own.is_file():
        return own
    others = sorted(folder.glob(f"*{TITLES_SUFFIX}"))
    return others[0] if len(others) == 1 else None


def _title_items(path: Path) -> Iterator[LocatedRecord]:
    with open_text(path) as handle:
        header = handle.readline().rstrip("\r\n").lstrip("\ufeff").split("\t")
        if "item_id" not in header:
            raise ValueError(f"{path}: the header has no item_id column (got: {', '.join(header)})")
        width = len(header)
        for number, line in enumerate(handle, start=2):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            where = f"{path.name} line {number}"
            parts = text.split("\t", width - 1)  # a TAB inside the last column (the title) is kept
            if len(parts) != width:
                yield where, {INVALID_KEY: f"expected {width} TAB-separated fields, got {len(parts)}"}
                continue
            row = dict(zip(header, parts, strict=True))
            record: dict[str, Any] = {"item_id": row["item_id"]}
            if row.get("title"):
                record["title"] = row["title"]
            if row.get("asin"):
                record["attributes"] = {"asin": row["asin"]}
            yield where, record


def read_s3rec(path: str | Path) -> Dataset:
    """An S3-Rec folder (or its sequence file): purchase events in file order, titled items."""
    path = Path(path)
    if path.is_file():
        folder, sequences = path.parent, path
    elif path.is_dir():
        folder = path
        found = sequence_files(folder)
        if not found:
            raise ValueError(f"{folder}: no S3-Rec sequence file (expected one *.txt, e.g. Beauty.txt)")
        if len(found) > 1:
            raise ValueError(
                f"{folder}: several .txt files ({', '.join(p.name for p in found)}); "
                "open the sequence file itself"
            )
        sequences = found[0]
    else:
        raise ValueError(f"{path}: no such file or directory")
    stem = sequences.name.removesuffix(".gz").removesuffix(".txt")
    titles = _titles_file(folder, stem)
    name = sequences.name

    def events() -> Iterator[LocatedRecord]:
        with open_text(sequences) as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.split()
                user = parts[0] if parts else ""
                for position, item in enumerate(parts[1:], start=1):
                    yield (
                        f"{name} line {number} item {position}",
                        {"user_id": user, "item_id": item, "event_type": "purchase"},
                    )

    def items() -> Iterator[LocatedRecord]:
        return _title_items(titles) if titles is not None else iter(())

    notes = ["no timestamps: order kept from the source (each line is one user's items in time order)"]
    notes.append(f"titles from {titles.name}" if titles else f"no {stem}{TITLES_SUFFIX}: no titles, no items")
    return Dataset(
        name=f"s3rec-{stem.lower()}",
        events=events,
        items=items,
        has_timestamps=False,
        source_files=[sequences],
        notes=notes,
    )
