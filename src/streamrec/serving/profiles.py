"""A user's profile: what they did, which categories they favour, and where the model puts them.

``categories`` counts the catalogue categories of the user's last events (what they did);
``taste`` is the live model's view: the categories among its top :data:`TASTE_ITEMS`
recommendations for the user now, and the length of their state vector (how sharply the
model scores for them).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from streamrec.serving.runtime import Runtime

PROFILE_EVENTS = 200  # newest events a profile reads
RECENT_SHOWN = 10
TOP_CATEGORIES = 5
TASTE_ITEMS = 50


def _shares(counts: Counter[str], total: int) -> list[dict[str, Any]]:
    return [
        {"category": name, "share": round(n / total, 4)} for name, n in counts.most_common(TOP_CATEGORIES)
    ]


def profile(runtime: Runtime, user_id: str) -> dict[str, Any]:
    """The user's profile; ``LookupError`` when the log has no event of theirs."""
    events = [
        logged.event for logged in runtime.store.log.user_events(runtime.user_key(user_id), PROFILE_EVENTS)
    ]
    if not events:
        raise LookupError(f"no events of user {user_id!r}")
    loaded = runtime.loaded
    done = Counter(runtime.category(e.item_id) or "(none)" for e in events)
    recent = [
        {
            "item_id": e.item_id,
            "title": runtime.title(e.item_id),
            "category": runtime.category(e.item_id),
            "event_type": e.event_type,
            "timestamp": e.timestamp,
        }
        for e in reversed(events[-RECENT_SHOWN:])
    ]
    taste: dict[str, Any] = {"model_version": loaded.version, "categories": [], "state_norm": None}
    history = np.array([loaded.index[e.item_id] for e in events if e.item_id in loaded.index], dtype=np.int64)
    if len(history):
        history = history[-loaded.model.config.max_len :]
        with torch.no_grad():
            state = loaded.model.user_states([history], loaded.table)[0].float()
        taste["state_norm"] = round(float(state.norm()), 4)
        top = runtime.recommend_session([loaded.items[c] for c in history], TASTE_ITEMS)["items"]
        predicted = Counter(runtime.category(entry["item_id"]) or "(none)" for entry in top)
        taste["categories"] = _shares(predicted, max(len(top), 1))
    return {
        "user_id": user_id,
        "events_read": len(events),
        "first_seen": events[0].timestamp,
        "last_seen": events[-1].timestamp,
        "event_types": dict(Counter(e.event_type for e in events).most_common()),
        "categories": _shares(done, len(events)),
        "recent_items": recent,
        "taste": taste,
    }
