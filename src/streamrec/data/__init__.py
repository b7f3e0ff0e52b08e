"""Dataset readers, and :func:`open_dataset`, which picks one from the path (or a named format).

Formats: ``jsonl``, ``csv``, ``parquet`` (generic event/item files, see
:mod:`streamrec.data.files`), ``movielens``, ``sasrec`` and ``s3rec``. With
no format given, a file is recognised by its name and a directory by the
files in it (see :func:`detect_format`). Every reader returns a
:class:`~streamrec.data.base.Dataset` of raw records in source order.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamrec.data.base import Dataset
from streamrec.data.files import EVENTS_NAMES, FILE_FORMATS, format_of, read_files
from streamrec.data.movielens import read_movielens
from streamrec.data.s3rec import TITLES_SUFFIX, read_s3rec
from streamrec.data.sasrec import INTERACTION_NAMES, ITEM_MAP, USER_MAP, read_sasrec

__all__ = [
    "BENCHMARK_DATASETS",
    "BENCHMARK_FOLDERS",
    "FORMATS",
    "Dataset",
    "detect_format",
    "open_dataset",
    "open_named_dataset",
]

FORMATS: tuple[str, ...] = (*FILE_FORMATS, "movielens", "sasrec", "s3rec")
# The options each format accepts through open_dataset(**options).
OPTIONS: dict[str, tuple[str, ...]] = {
    "jsonl": ("items",),
    "csv": ("items",),
    "parquet": ("items",),
    "movielens": ("ratings_file",),
    "sasrec": (),
    "s3rec": (),
}
# Benchmark name -> (format, options). "ml-1m" is SASRec's ML-1M: every user, time order, no
# timestamps; "ml-1m-ts" is the MovieLens folder with real timestamps for users 1-2999 only.
BENCHMARK_DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "ml-100k": ("movielens", {}),
    "ml-1m": ("sasrec", {}),
    "ml-1m-ts": ("movielens", {}),
    "beauty": ("s3rec", {}),
}
# Each benchmark's folder name under the shared datasets directory.
BENCHMARK_FOLDERS: dict[str, str] = {
    "ml-100k": "ml-100k",
    "ml-1m": "ml-1m-sasrec",
    "ml-1m-ts": "ml-1m",
    "beauty": "amazon-beauty-s3rec",
}

_EXPECTED = (
    "events.jsonl/.csv/.parquet (generic files), u.data or ratings*.dat[.gz] (MovieLens), "
    f"{' or '.join(INTERACTION_NAMES)} with {USER_MAP}/{ITEM_MAP} (SASRec), "
    f"or <Name>.txt with <Name>{TITLES_SUFFIX} (S3-Rec, e.g. Beauty.txt)"
)


def _is_ratings_name(name: str) -> bool:
    return name == "u.data" or any(fnmatch.fnmatch(name, p) for p in ("ratings*.dat", "ratings*.dat.gz"))


def detect_format(path: str | Path) -> str:
    """The format of a file (by its name) or a directory (by its files); ValueError if unclear."""
    path = Path(path)
    if path.is_file():
        fmt = format_of(path)
        if fmt is not None:
            return fmt
        if _is_ratings_name(path.name):
            return "movielens"
        if path.name in INTERACTION_NAMES:
            return "sasrec"
        raise ValueError(
            f"{path}: cannot tell the format from the file name (expected .jsonl, .csv, "
            f".parquet, u.data, ratings*.dat or {INTERACTION_NAMES[0]}); pass a format"
        )
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    names = {p.name for p in path.iterdir() if p.is_file()}
    found = []
    if any(_is_ratings_name(name) for name in names):
        found.append("movielens")
    if names & {*INTERACTION_NAMES, USER_MAP, ITEM_MAP}:
        found.append("sasrec")
    if "Beauty.txt" in names or any(
        name.endswith(TITLES_SUFFIX) and name.removesuffix(TITLES_SUFFIX) + ".txt" in names for name in names
    ):
        found.append("s3rec")
    found.extend(fmt for fmt in dict.fromkeys(format_of(Path(n)) for n in EVENTS_NAMES if n in names) if fmt)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"{path}: cannot tell the dataset format; expected {_EXPECTED}")
    raise ValueError(f"{path}: looks like more than one format ({', '.join(found)}); pass a format")


def open_dataset(
    path: str | Path,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    **options: Any,
) -> Dataset:
    """Open a dataset file or folder; ``format=None`` detects it.

    ``mapping`` (our field -> source column) applies to jsonl/csv/parquet
    only. ``options`` are per format: ``items=`` (an items file next to a
    single events file) for the generic files, ``ratings_file=`` for MovieLens.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r} (expected one of: {', '.join(FORMATS)})")
    fmt = format or detect_format(path)
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(OPTIONS[fmt]))
    if unknown:
        accepted = ", ".join(OPTIONS[fmt]) or "none"
        raise ValueError(f"format {fmt!r} does not take option {unknown[0]!r} (it takes: {accepted})")
    if mapping and fmt not in FILE_FORMATS:
        raise ValueError(f"a column mapping applies to {', '.join(FILE_FORMATS)} files, not to {fmt!r}")
    if fmt in FILE_FORMATS:
        return read_files(path, format, mapping, **given)
    if fmt == "movielens":
        return read_movielens(path, **given)
    if fmt == "sasrec":
        return read_sasrec(path)
    return read_s3rec(path)


def open_named_dataset(name: str, path: str | Path) -> Dataset:
    """A benchmark dataset by name; ``path`` is its folder or the folder holding all of them."""
    if name not in BENCHMARK_DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(BENCHMARK_DATASETS)})")
    fmt, options = BENCHMARK_DATASETS[name]
    path = Path(path)
    nested = path / BENCHMARK_FOLDERS[name]
    return open_dataset(nested if nested.is_dir() else path, fmt, **options)
