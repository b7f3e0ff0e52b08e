"""Stream sources: events arrive from Redis Streams or Kafka and are consumed into a home's log.

:mod:`~streamrec.sources.base` holds the contract a source implements,
:mod:`~streamrec.sources.consumer` the one loop that drives any of them.
"""

from __future__ import annotations

from streamrec.sources.base import MAX_RECORD_BYTES, DeadLetter, Source, SourceError, SourceRecord
from streamrec.sources.consumer import ConsumeSummary, consume

__all__ = [
    "MAX_RECORD_BYTES",
    "ConsumeSummary",
    "DeadLetter",
    "Source",
    "SourceError",
    "SourceRecord",
    "consume",
    "open_source",
]


def open_source(url: str) -> Source:
    """The source a URL names: ``redis://``, ``rediss://`` or ``unix://`` (Redis Streams), ``kafka://``."""
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss", "unix"):
        from streamrec.sources.redis import RedisStreamSource

        return RedisStreamSource(url)
    if scheme == "kafka":
        from streamrec.sources.kafka import KafkaSource

        return KafkaSource(url)
    known = "redis://HOST:PORT/DB?stream=NAME, kafka://HOST:PORT/TOPIC"
    raise ValueError(f"source: unsupported URL {url!r} (known: {known})")
