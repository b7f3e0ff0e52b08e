"""Redis Streams as a source: a consumer group reads, ``XACK`` follows the durable append.

The URL is redis-py's plus the stream's options in the query::

    redis://127.0.0.1:6379/0?stream=clicks&group=streamrec&consumer=web-1&dead=clicks:dead&min_idle_ms=60000

``stream`` is required; ``group`` defaults to ``streamrec`` (created if missing, with
``MKSTREAM``, reading the stream from its start), ``consumer`` to the host name, ``dead`` to
``<stream>:dead``, ``min_idle_ms`` (how long another consumer's entry stays unacknowledged
before this one re-claims it with ``XAUTOCLAIM``) to 60,000. redis-py's own options
(``socket_timeout=…``) pass through.

An entry holds the event's fields as its own (``user_id``, ``item_id``, ``event_type``,
``timestamp``, ``event_id``, ``value``, ``context`` as JSON text), or the whole event as JSON
in one field named ``event``. A dead letter is the original entry's fields plus
``streamrec_reason`` (record/field/problem as JSON) and ``streamrec_entry_id``; it is added
in the same ``MULTI`` as the ``XACK`` of its batch, so it is written exactly once.

>>> parse_redis_url("redis://127.0.0.1:6379/0?stream=clicks")[1]
RedisStreamOptions(stream='clicks', group='streamrec', consumer=None, dead='clicks:dead', min_idle_ms=60000)
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from streamrec.events import EventValidationError, excerpt
from streamrec.sources.base import DeadLetter, Source, SourceError, SourceRecord

SCHEMES = ("redis", "rediss", "unix")
EVENT_FIELD = "event"
REASON_FIELD = b"streamrec_reason"
ENTRY_ID_FIELD = b"streamrec_entry_id"
CONNECT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class RedisStreamOptions:
    stream: str
    group: str = "streamrec"
    consumer: str | None = None  # None: this host's name, so a restarted consumer finds its own pending
    dead: str = ""
    min_idle_ms: int = 60_000


def parse_redis_url(url: str) -> tuple[str, RedisStreamOptions]:
    """Split ``url`` into redis-py's connection URL and the stream's options; errors name the option."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        schemes = ", ".join(f"{scheme}://" for scheme in SCHEMES)
        raise ValueError(f"redis URL: the scheme must be one of {schemes}, got {url!r}")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in RedisStreamOptions.__dataclass_fields__:
            ours[key] = value
        elif key in URL_QUERY_ARGUMENT_PARSERS:
            theirs.append((key, value))
        else:
            known = [*RedisStreamOptions.__dataclass_fields__, *URL_QUERY_ARGUMENT_PARSERS]
            raise ValueError(f"redis URL: unknown option {key!r} (known: {', '.join(known)})")
    stream = ours.pop("stream", "").strip()
    if not stream:
        raise ValueError(f"redis URL: add the stream to read, as ?stream=NAME (got {url!r})")
    for key in ("group", "consumer", "dead"):
        if key in ours and not ours[key].strip():
            raise ValueError(f"redis URL: {key} must not be blank")
    try:
        min_idle_ms = int(ours.pop("min_idle_ms", RedisStreamOptions.min_idle_ms))
    except ValueError:
        raise ValueError("redis URL: min_idle_ms must be a whole number of milliseconds") from None
    if min_idle_ms < 0:
        raise ValueError("redis URL: min_idle_ms must be 0 or more")
    options = RedisStreamOptions(
        stream=stream,
        group=ours.get("group", RedisStreamOptions.group),
        consumer=ours.get("consumer"),
        dead=ours.get("dead") or f"{stream}:dead",
        min_idle_ms=min_idle_ms,
    )
    return urlunsplit(parts._replace(query=urlencode(theirs))), options


class RedisStreamSource(Source):
    """One consumer of a consumer group on one stream.

    It reads its own pending entries first (those it held when it last died, under the same
    consumer name), then re-claims entries other consumers left idle for ``min_idle_ms``,
    then new entries (``XREADGROUP >``). Re-claiming is repeated every ``min_idle_ms / 2``.
    """

    def __init__(self, url: str, *, client: redis.Redis | None = None) -> None:
        connection_url, self.options = parse_redis_url(url)
        self.stream = self.options.stream
        self.group = self.options.group
        self.consumer = self.options.consumer or socket.gethostname()
        self.name = f"redis:{self.stream}"
        self._claim_every = max(self.options.min_idle_ms / 2000, 0.1)
        self._history: str | None = "0"  # where our own pending list is read from; None once read
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        if client is None:
            settings = {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS}
            client = redis.Redis.from_url(connection_url, **settings)  # the URL's own value wins
        self.client = client
        self._where_server = _describe(connection_url)
        with self._errors("connect to"):
            self.client.ping()
            try:
                self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        with self._errors("read from"):
            if self._history is not None:  # what this consumer held when it last stopped, each once
                entries = self._read_group(self._history, max_records, None)
                if entries:
                    self._history = entries[-1][0].decode()
                    return self._records(entries)
                self._history = None
            if time.monotonic() >= self._next_claim:
                entries = self._claim(max_records)
                if entries:
                    return self._records(entries)
            block = int(timeout * 1000)
            return self._records(self._read_group(">", max_records, block if block > 0 else None))

    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        try:
            fields = {name.decode(): value.decode() for name, value in record.raw.items()}
        except UnicodeDecodeError:
            raise self._not_text(record) from None
        if EVENT_FIELD not in fields:
            return fields
        if len(fields) > 1:
            other = next(key for key in fields if key != EVENT_FIELD)
            problem = f"an entry holds either the event's fields or one field {EVENT_FIELD!r}, not both"
            raise EventValidationError(self.where(record.position), other, problem)
        try:
            return json.loads(fields[EVENT_FIELD])
        except json.JSONDecodeError as error:
            problem = f"is not valid JSON ({error.msg})"
            raise EventValidationError(self.where(record.position), EVENT_FIELD, problem) from None

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        if not records:
            return
        with self._errors("acknowledge on"):
            pipe = self.client.pipeline(transaction=True)  # MULTI: dead letters and XACK together
            for letter in dead:
                fields = {
                    **letter.record.raw,
                    REASON_FIELD: letter.reason,
                    ENTRY_ID_FIELD: letter.record.position,
                }
                pipe.xadd(self.options.dead, fields)
            pipe.xack(self.stream, self.group, *(record.position for record in records))
            pipe.execute()

    def lag(self) -> int | None:
        """Entries the group has not been handed yet, plus those handed out and not acknowledged."""
        with self._errors("ask the lag of"):
            for group in self.client.xinfo_groups(self.stream):
                name = group["name"]
                if (name.decode() if isinstance(name, bytes) else name) == self.group:
                    undelivered = group.get("lag")
                    return None if undelivered is None else int(undelivered) + int(group["pending"])
        return None

    def close(self) -> None:
        self.client.close()

    def _read_group(self, start: str, count: int, block: int | None) -> list[tuple[bytes, dict]]:
        streams = {self.stream: start}
        reply = self.client.xreadgroup(self.group, self.consumer, streams, count=count, block=block)
        return reply[0][1] if reply else []

    def _claim(self, count: int) -> list[tuple[bytes, dict]]:
        """Entries idle longer than ``min_idle_ms`` in other consumers' hands, now ours."""
        cursor, entries, *_ = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.options.min_idle_ms, self._claim_cursor, count=count
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":  # scanned the whole pending list: rest a while
            self._next_claim = time.monotonic() + self._claim_every
        return entries

    def _records(self, entries: list[tuple[bytes, dict]]) -> list[SourceRecord]:
        records, deleted = [], []
        for entry_id, fields in entries:
            position = entry_id.decode()
            if not fields:  # trimmed or deleted from the stream while pending: nothing left to store
                deleted.append(position)
                continue
            size = sum(map(len, fields)) + sum(map(len, fields.values()))
            arrival = int(position[: position.index("-")]) / 1000  # the entry id's milliseconds
            records.append(SourceRecord(position, fields, size, arrival))
        if deleted:
            self.client.xack(self.stream, self.group, *deleted)
        return records

    def _not_text(self, record: SourceRecord) -> EventValidationError:
        """The first field whose name or value is not UTF-8."""
        for name, value in record.raw.items():
            try:
                key = name.decode()
            except UnicodeDecodeError:
                return EventValidationError(self.where(record.position), excerpt(name), "name is not UTF-8")
            try:
                value.decode()
            except UnicodeDecodeError:
                return EventValidationError(self.where(record.position), key, "is not UTF-8 text")
        return EventValidationError(self.where(record.position), None, "is not UTF-8 text")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """redis-py's connection and server errors as a :class:`SourceError` that says what failed where."""
        try:
            yield
        except redis.RedisError as error:
            raise SourceError(
                f"cannot {action} Redis at {self._where_server} (stream {self.stream!r}): {error}"
            ) from error


def _describe(connection_url: str) -> str:
    """Where the server is, without any password the URL holds."""
    parts = urlsplit(connection_url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
