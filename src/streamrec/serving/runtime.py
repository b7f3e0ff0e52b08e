"""Answering recommendation requests from the live model version and the log.

Each request reads the user's newest events from the event log, so an event
written a moment ago shapes the very next answer, before any retraining.
Users the log has never seen get what is trending (most frequent items among
the newest events) instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from streamrec.models.sasrec import SASRec
from streamrec.registry import Registry
from streamrec.store import Store, open_store
from streamrec.training.fit import MODELS_DIR

TRENDING_WINDOW = 50_000  # newest events that define "trending"


@dataclass
class LoadedVersion:
    version: str
    model: SASRec
    items: list[str]
    index: dict[str, int]


class Runtime:
    """The live model plus the store, ready to answer."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.loaded = self.load_live()

    @classmethod
    def open(cls, home: str | Path) -> Runtime:
        home = Path(home)
        if not (home / MODELS_DIR).exists():
            raise FileNotFoundError(f"no model in {home}: run `streamrec train --home {home}` first")
        return cls(open_store(home), Registry(home / MODELS_DIR))

    def load_live(self) -> LoadedVersion:
        version = self.registry.live()
        if version is None:
            raise LookupError("no live model version: train or promote one first")
        items = self.registry.items(version)
        model = SASRec.load(self.registry.path(version))
        return LoadedVersion(version, model, items, {item: code for code, item in enumerate(items)})

    def trending(self, k: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        since = self.store.log.last_offset() - TRENDING_WINDOW
        counts = self.store.log.popular_items(since, k + len(exclude))
        return [(item, float(n)) for item, n in counts if item not in exclude][:k]

    def recommend(self, user_id: str, k: int = 10, *, exclude_seen: bool = True) -> dict[str, Any]:
        loaded = self.loaded
        recent = self.store.log.recent_items(user_id, loaded.model.config.max_len)
        history = np.array([loaded.index[i] for i in recent if i in loaded.index], dtype=np.int64)
        if len(history):
            codes, scores = loaded.model.recommend(history, k, exclude_seen=exclude_seen)
            ranked = [(loaded.items[c], float(s)) for c, s in zip(codes, scores, strict=True)]
            source = "model"
        else:
            ranked = self.trending(k, set(recent) if exclude_seen else set())
            source = "trending"
        return {
            "user_id": user_id,
            "model_version": loaded.version,
            "source": source,
            "items": [self._describe(item, score) for item, score in ranked],
        }

    def _describe(self, item_id: str, score: float) -> dict[str, Any]:
        item = self.store.catalog.get(item_id)
        return {"item_id": item_id, "score": round(score, 5), "title": item.title if item else ""}

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
