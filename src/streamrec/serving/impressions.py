"""What each answer showed, recorded off the request path.

Every recommendation and search answer gets a ``request_id``; :class:`ImpressionRecorder`
queues what it showed and one thread writes the queue to the store's impressions table
every ``flush_seconds`` in one transaction. A durable commit per request would cost more
than the recommendation itself (about 0.4 ms on SQLite); a crash loses at most the last
``flush_seconds`` of impressions, never an event. Events that carry the ``request_id``
are attributed to the answer (:mod:`streamrec.evaluation.online`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from streamrec.pseudonyms import as_stored
from streamrec.store import Impression, ImpressionLog

FLUSH_SECONDS = 0.2
MAX_BACKLOG = 100_000  # impressions held while the store refuses writes; older ones are dropped

log = logging.getLogger(__name__)


def new_request_id() -> str:
    """32 hex digits: the time in nanoseconds, then 64 random bits. Ids sort by time, so the
    impressions table (clustered by request id) grows at its end instead of at random pages."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


class ImpressionRecorder:
    """Queue impressions; a background thread appends them to ``impressions`` in batches.

    ``on_written(count)`` and ``on_dropped(count)`` are told of each batch (the server counts them).
    With ``enabled`` false, answers still get a request id but nothing is recorded.
    """

    def __init__(
        self,
        impressions: ImpressionLog,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        enabled: bool = True,
        user_key: Callable[[str], str] = as_stored,
    ) -> None:
        self.impressions = impressions
        self.user_key = user_key  # impressions hold the user id as the events do (pseudonyms.py)
        self.enabled = enabled
        self.flush_seconds = flush_seconds
        self.on_written = on_written
        self.on_dropped = on_dropped
        self._queue: list[Impression] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamrec-impressions", daemon=True)

    def shown(
        self, answer: dict[str, Any], surface: str, *, arm: str | None = None, teams: str | None = None
    ) -> dict[str, Any]:
        """``answer`` with a new ``request_id`` (and the ``arm`` that answered), queued as one impression;
        ``teams``: which arm put each item there, for an interleaved answer."""
        request_id = new_request_id()
        if not self.enabled:
            return {**answer, "request_id": request_id, "arm": arm}
        items = tuple(entry["item_id"] for entry in answer["items"])
        user, version = answer.get("user_id"), answer["model_version"]
        user = self.user_key(user) if user else None
        impression = Impression(request_id, time.time(), user, version, surface, items, arm, teams)
        with self._lock:
            self._queue.append(impression)
        return {**answer, "request_id": request_id, "arm": arm}

    def flush(self) -> int:
        """Write what is queued now; returns how many were written (0 when the store refused)."""
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return 0
        try:
            self.impressions.append(batch)
        except Exception:
            log.exception("could not record %d impressions; retrying with the next batch", len(batch))
            with self._lock:
                self._queue[:0] = batch
                excess = len(self._queue) - MAX_BACKLOG
                if excess > 0:
                    del self._queue[:excess]
            if excess > 0 and self.on_dropped is not None:
                self.on_dropped(excess)
            return 0
        if self.on_written is not None:
            self.on_written(len(batch))
        return len(batch)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
