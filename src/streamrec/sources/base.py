"""The contract of a stream source (Redis Streams, Kafka, …): read a batch, acknowledge it once durable.

Delivery is at least once: a record that was read but never acknowledged (its consumer
died) is delivered again, at the same position, to this consumer or another one. The
event log is idempotent on ``event_id``, and a record without one gets an id derived from
its position (:meth:`Source.where`), so a redelivered record is stored once.

What a source does is small: :meth:`~Source.read` raw records, :meth:`~Source.decode` one
into an event's fields, :meth:`~Source.acknowledge` a batch (writing its dead letters
first), and tell its :meth:`~Source.lag`. The loop around it is :func:`streamrec.sources.consume`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from streamrec.events import EventValidationError

# Far above any valid event (ids ≤ 256 characters, context ≤ 4 KiB): larger records are
# dead-lettered before they are even decoded.
MAX_RECORD_BYTES = 16_384


class SourceError(Exception):
    """The source cannot be used (unreachable server, missing permission); nothing was acknowledged."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw record and its position in the source: a redelivery carries the same position.

    ``raw`` is the record as the source holds it (dead letters keep it); ``size`` its bytes;
    ``arrival_time`` the source's own receive time (epoch seconds), which stands in for a
    missing timestamp, so a redelivered record gets the same time as the first delivery.
    """

    position: str
    raw: Any
    size: int
    arrival_time: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that is not a valid event, with why: dead letters keep the original and the reason."""

    record: SourceRecord
    error: EventValidationError

    @property
    def reason(self) -> str:
        """``{"record": …, "field": …, "problem": …}`` as JSON text."""
        return json.dumps(self.error.as_dict())


class Source(ABC):
    """A stream of raw event records read in batches and acknowledged once they are durable."""

    #: ``kind:stream`` (``redis:clicks``): names the source in messages and metrics, and prefixes
    #: derived event ids, so it must stay the same across restarts.
    name: str

    def where(self, position: str) -> str:
        """The record's name in error messages, and the ``event_id`` of a record that has none."""
        return f"{self.name}:{position}"

    @abstractmethod
    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds when none is ready.

        Records a dead consumer left unacknowledged come back here too.
        """

    @abstractmethod
    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        """The event fields ``record`` holds, for :meth:`EventSchema.validate`.

        Raises :class:`EventValidationError` (named with :meth:`where`) when it holds none.
        """

    @abstractmethod
    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        """Write ``dead`` to the dead-letter destination, then let the source forget ``records``.

        Called only once every valid event of ``records`` is durable in the log.
        """

    @abstractmethod
    def lag(self) -> int | None:
        """Records not yet acknowledged by this consumer's group, or None if the source cannot tell."""

    def close(self) -> None:  # noqa: B027 (most sources hold a connection; those that do not need nothing)
        """Let go of connections; unacknowledged records stay pending."""

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
