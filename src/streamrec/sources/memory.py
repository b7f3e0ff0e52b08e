"""An in-process source over a list of records: the contract with nothing around it, for tests and examples.

Records read but not acknowledged come back on the next :meth:`MemorySource.read` after
:meth:`MemorySource.redeliver`, the way a broker hands a dead consumer's records to a new one.

>>> source = MemorySource([{"user_id": "u1", "item_id": "i1", "event_type": "view"}, {"oops": 1}])
>>> [record.position for record in source.read(10, timeout=0)]
['0', '1']
>>> source.lag()
2
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streamrec.events import EventValidationError
from streamrec.sources.base import DeadLetter, Source, SourceRecord


class MemorySource(Source):
    """Records are dicts, or anything else (a dead letter); positions are list indexes."""

    def __init__(self, records: Sequence[object] = (), name: str = "memory:test") -> None:
        self.name = name
        self.records: list[object] = list(records)
        self.dead: list[tuple[object, dict[str, Any]]] = []  # (original, reason)
        self.acknowledged: set[int] = set()
        self._next = 0  # the first position never delivered

    def append(self, *records: object) -> None:
        self.records.extend(records)

    def redeliver(self) -> None:
        """Hand out every unacknowledged record again (its consumer died)."""
        self._next = 0

    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        batch = []
        while self._next < len(self.records) and len(batch) < max_records:
            position = self._next
            self._next += 1
            if position not in self.acknowledged:
                raw = self.records[position]
                batch.append(SourceRecord(str(position), raw, len(json.dumps(raw, default=str))))
        return batch

    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        if not isinstance(record.raw, Mapping):
            raise EventValidationError(self.where(record.position), None, "expected an object")
        return record.raw

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        self.dead.extend((letter.record.raw, letter.error.as_dict()) for letter in dead)
        self.acknowledged.update(int(record.position) for record in records)

    def lag(self) -> int:
        return len(self.records) - len(self.acknowledged)
