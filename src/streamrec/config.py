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
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")  # the training loop's learning-rate schedules


@dataclass(frozen=True)
class Settings:
    """Deployment settings; every field can be set in ``HOME/streamrec.toml``."""

    # Event types accepted besides the defaults (e.g. ["wishlist", "share"]).
    extra_event_types: tuple[str, ...] = ()
    # SQLite durability: FULL syncs every committed batch to disk before acknowledging it.
    synchronous: str = "FULL"
    # Events per committed batch when ingesting files.
    ingest_batch_size: int = 20_000

    # Continual learning (``streamrec update`` / ``worker``).
    update_strategy: str = "replay"  # finetune | replay | replay-distill | adapter | full
    update_every_events: int = 10_000  # the worker updates after this many new events …
    update_every_seconds: float = 3600.0  # … or this long after the last update, whichever comes first
    update_min_events: int = 50  # fewer new events than this: nothing worth an update yet
    update_epochs: int = 5
    update_lr: float = 1e-3
    update_lr_schedule: str = "cosine"  # cosine: to 0 by the update's end; or constant
    update_batch_size: int | None = None  # user rows per update step; unset: the model's batch size
    new_item_lr_scale: float = 1.0  # new items' ID rows learn this many times faster in an update
    replay_share: float = 1 / 3  # share of past users whose sequences an update replays …
    replay_users: int | None = None  # … or exactly this many, when set
    distill_weight: float = 0.5
    full_refit_epochs: int = 30  # a full refit (drift, or strategy "full"): at most this many epochs
    # Cap each update at this share of a refit's time (paced by the last timed fit); unset: no cap.
    update_budget: float | None = None
    # Guardrail: the newest events an update does not train on, to judge it against the live version.
    holdout_fraction: float = 0.1
    holdout_max_events: int = 5000
    guardrail_epsilon: float = 0.002  # promote unless NDCG@10 is worse than the live version's by more
    # Drift: the live model's test-then-train NDCG@10 below (1 - drift_threshold) × its trailing mean.
    drift_threshold: float = 0.2
    drift_window: int = 5  # updates in the trailing mean
    drift_min_examples: int = 200  # smaller holdouts are too noisy to call drift on
    keep_versions: int = 10  # registry retention; the live version and its rollback target always stay
    worker_poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.update_budget is not None and not 0 < self.update_budget <= 1:
            raise ValueError(f"update_budget: must be in (0, 1] (got {self.update_budget})")
        if self.update_lr_schedule not in LR_SCHEDULES:
            known = ", ".join(LR_SCHEDULES)
            raise ValueError(f"update_lr_schedule: unknown {self.update_lr_schedule!r} (known: {known})")

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
