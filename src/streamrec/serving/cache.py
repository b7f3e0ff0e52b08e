"""Answers already computed for one loaded model version, least recently used dropped first.

A :class:`~streamrec.serving.runtime.LoadedVersion` owns one cache and every writer
(hot-swap, rollback, reload, item upsert) builds a new ``LoadedVersion``, so a new
version or catalogue change starts from an empty cache without any invalidation
code. The key carries the rest of what an answer depends on (see
``Runtime.recommend``), so freshness is never traded for speed.

>>> cache = ResultCache(size=2)
>>> cache.put("a", {"n": 1}); cache.put("b", {"n": 2}); cache.get("a")
{'n': 1}
>>> cache.put("c", {"n": 3})  # evicts "b", the least recently used
>>> cache.get("b") is None, len(cache)
(True, 2)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

# Answers kept per process and version: about 3 KB each at k=10, so ~12 MB at most.
RESULT_CACHE_SIZE = 4096


class ResultCache:
    """A bounded LRU map from a request's key to its answer; safe to share between handler threads."""

    def __init__(self, size: int = RESULT_CACHE_SIZE) -> None:
        self.size = size
        self._answers: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> dict[str, Any] | None:
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: Hashable, answer: dict[str, Any]) -> None:
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            if len(self._answers) > self.size:
                self._answers.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)
