"""A streamrec home directory and its settings.

A home holds everything one deployment owns: the store
(``streamrec.sqlite``), the model registry (``models/``) and an optional
``streamrec.toml`` whose values override the defaults here.

>>> Settings().event_types[:2]
('view', 'click')
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from streamrec.events import DEFAULT_EVENT_TYPES, EventSchema

SETTINGS_FILE = "streamrec.toml"


@dataclass(frozen=True)
class Settings:
    """Deployment settings; every field can be set in ``HOME/streamrec.toml``."""

    # Event types accepted besides the defaults (e.g. ["wishlist", "share"]).
    extra_event_types: tuple[str, ...] = ()
    # SQLite durability: FULL syncs every committed batch to disk before acknowledging it.
    synchronous: str = "FULL"
    # Events per committed batch when ingesting files.
    ingest_batch_size: int = 20_000

    @property
    def event_types(self) -> tuple[str, ...]:
        return DEFAULT_EVENT_TYPES + tuple(t for t in self.extra_event_types if t not in DEFAULT_EVENT_TYPES)

    def event_schema(self, *, allow_unknown_fields: bool = False) -> EventSchema:
        return EventSchema(self.event_types, allow_unknown_fields)


def load_settings(home: str | Path) -> Settings:
    """Read ``HOME/streamrec.toml`` if present; unknown keys are an error naming the key."""
    path = Path(home) / SETTINGS_FILE
    if not path.exists():
        return Settings()
    with path.open("rb") as handle:
        raw: dict[str, Any] = tomllib.load(handle)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if "extra_event_types" in raw:
        raw["extra_event_types"] = tuple(raw["extra_event_types"])
    return Settings(**raw)
