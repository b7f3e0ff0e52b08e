"""What every dataset reader returns: raw records, in source order, with their location.

Readers do not validate: they turn a file layout into raw event and item
records (plain dicts with the field names of :mod:`streamrec.events` and
:mod:`streamrec.items`) and say where each record came from, so that the
ingest pipeline can validate them all the same way and name the file and
line of any bad one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (where, record): ``where`` reads like "u.data line 12".
LocatedRecord = tuple[str, dict[str, Any]]


@dataclass
class Dataset:
    """A readable dataset: call ``events()`` / ``items()`` for fresh iterators.

    ``has_timestamps`` is False for layouts that keep order but drop times
    (SASRec, S3-Rec); their events carry no ``timestamp`` and the log keeps
    their source order exactly. ``source_files`` are hashed to derive stable
    event ids, so ingesting the same dataset twice stores each event once.
    """

    name: str
    events: Callable[[], Iterator[LocatedRecord]]
    items: Callable[[], Iterator[LocatedRecord]]
    has_timestamps: bool
    source_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
