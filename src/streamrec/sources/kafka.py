"""Kafka as a source: a consumer group reads, offsets are committed after the durable append.

The URL names the brokers and the topic; the query holds the source's options and any
librdkafka property (``session.timeout.ms``, ``security.protocol``, ``sasl.username``, …)::

    kafka://127.0.0.1:9092,127.0.0.2:9092/clicks?group=streamrec&dead=clicks.dead

``group`` defaults to ``streamrec`` (a new group reads the topic from its start), ``dead``
to ``<topic>.dead`` (created with one partition if missing). The topic must exist. With
``group.instance.id=NAME`` the consumer is a static member: restarted under the same name,
it takes its partitions back without waiting ``session.timeout.ms`` for the old process.

A message's value is one event as JSON, as ``POST /events`` takes it, or a JSON array of
events; an array's element ``i`` is its own record, at ``partition:offset:i``. A dead
letter is the original message (or the array's element, as JSON), its key and headers,
plus the headers ``streamrec_reason`` (record/field/problem as JSON) and
``streamrec_position``. It is produced and confirmed by the broker before the batch's
offsets are committed, so it is written at least once (twice if the consumer dies between).

>>> options = parse_kafka_url("kafka://127.0.0.1:9092/clicks?session.timeout.ms=6000")
>>> options.servers, options.topic, options.group, options.dead, options.librdkafka
('127.0.0.1:9092', 'clicks', 'streamrec', 'clicks.dead', {'session.timeout.ms': '6000'})
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from streamrec.events import EventValidationError
from streamrec.sources.base import DeadLetter, Source, SourceError, SourceRecord

REASON_HEADER = "streamrec_reason"
POSITION_HEADER = "streamrec_position"
CONNECT_TIMEOUT_SECONDS = 5.0
JOIN_WAIT_SECONDS = 60.0  # longest a first read waits for the group to assign partitions
FIRST_FETCH_SECONDS = 10.0  # longest the read after an assignment waits for the first messages
REQUEST_TIMEOUT_SECONDS = 30.0  # a lag query or a dead letter's delivery the broker has not answered by then
# Set here, because the guarantees rest on them: offsets are stored and committed by acknowledge() only.
OURS = ("bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store")
# A commit the group refused because it rebalanced: the new owner reads those records again.
REBALANCED = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())  # librdkafka's own lines go here, not to stderr


@dataclass(frozen=True)
class KafkaOptions:
    servers: str
    topic: str
    group: str = "streamrec"
    dead: str = ""
    librdkafka: dict[str, str] = field(default_factory=dict)


def parse_kafka_url(url: str) -> KafkaOptions:
    """The brokers, topic and options ``url`` names; errors name what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ValueError(f"kafka URL: the scheme must be kafka://, not {parts.scheme}://")
    servers = parts.netloc
    if "@" in servers:
        raise ValueError("kafka URL: give credentials as sasl.username=…&sasl.password=…, not in the host")
    if not servers:
        raise ValueError("kafka URL: add the brokers, as kafka://HOST:PORT/TOPIC")
    topic = unquote(parts.path.strip("/"))
    if not topic or "/" in topic:
        raise ValueError("kafka URL: add the topic to read, as kafka://HOST:PORT/TOPIC")
    ours: dict[str, str] = {}
    theirs: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("group", "dead"):
            if not value.strip():
                raise ValueError(f"kafka URL: {key} must not be blank")
            ours[key] = value
        elif key in OURS:
            raise ValueError(f"kafka URL: streamrec sets {key} (offsets are committed after the log commit)")
        else:
            theirs[key] = value
    return KafkaOptions(
        servers=servers,
        topic=topic,
        group=ours.get("group", KafkaOptions.group),
        dead=ours.get("dead") or f"{topic}.dead",
        librdkafka=theirs,
    )


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """What a :class:`SourceRecord` of this source holds: enough to re-send it as a dead letter.

    ``value`` is the message's value, or for element ``index`` of an array that element as
    JSON (``element`` is the element itself, already parsed). ``ends_message``: no record of
    the message comes after this one, so once it is acknowledged the next offset is committed.
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    index: int | None = None
    element: Any = None
    ends_message: bool = True


class KafkaSource(Source):
    """One member of a consumer group on one topic.

    It joins the group at its first :meth:`read`, not before, so opening one only to ask its
    :meth:`lag` does not make the group rebalance.
    """

    def __init__(self, url: str) -> None:
        self.options = parse_kafka_url(url)
        self.topic = self.options.topic
        self.name = f"kafka:{self.topic}"
        self._common = {**self.options.librdkafka, "bootstrap.servers": self.options.servers, "logger": _log}
        settings = {
            "group.id": self.options.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # (a librdkafka property in the URL wins)
            "error_cb": self._on_error,
            **self._common,
        }
        self._last_error: KafkaError | None = None
        self._unreachable: KafkaError | None = None  # why no broker answers, once every one is down
        try:
            self.consumer = Consumer(settings)
        except (KafkaException, ValueError, TypeError) as error:
            raise ValueError(f"kafka URL: {_message(error)}") from None
        self._producer: Producer | None = None  # for dead letters, made at the first
        self._admin: AdminClient | None = None  # for the ends of partitions, made at the first lag
        self._subscribed = False
        self._assigned: set[int] = set()
        self._joined = False  # the group has assigned this member partitions (maybe none) once
        self._assigned_lately = False  # partitions were assigned, and no read has waited for them yet
        self._buffer: list[SourceRecord] = []  # an array message's records beyond the last read's count
        with self._errors("connect to"):
            self._check_topics()

    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        with self._errors("read from"):
            if not self._subscribed:
                self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                        on_lost=self._on_revoke)  # fmt: skip
                self._subscribed = True
            if not self._buffer:
                for message in self._consume(max_records, timeout):
                    self._buffer.extend(self._records(message))
            batch, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
            return batch

    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        message: KafkaMessage = record.raw
        where = self.where(record.position)
        if message.index is None:
            if message.value is None:
                raise EventValidationError(where, None, "has no value (a tombstone)")
            try:
                fields = json.loads(message.value)
            except UnicodeDecodeError:
                raise EventValidationError(where, None, "is not UTF-8 text") from None
            except json.JSONDecodeError as error:
                raise EventValidationError(where, None, f"is not valid JSON ({error.msg})") from None
            if fields == []:
                raise EventValidationError(where, None, "is an empty array: it holds no event")
        else:
            fields = message.element
        if not isinstance(fields, dict):
            problem = f"must be a JSON object (an event) or an array of them, not {type(fields).__name__}"
            raise EventValidationError(where, None, problem)
        return fields

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        if dead:
            self._send_dead_letters(dead)
        done: dict[int, int] = {}  # partition -> the next offset to read
        for record in records:
            message: KafkaMessage = record.raw
            after = message.offset + 1 if message.ends_message else message.offset
            done[message.partition] = max(done.get(message.partition, 0), after)
        # A partition the group has since given to another member: that one reads it again.
        offsets = [TopicPartition(self.topic, p, offset) for p, offset in done.items() if p in self._assigned]
        if not offsets:
            return
        with self._errors("commit offsets on"):
            try:
                committed = self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as error:
                if error.args[0].code() in REBALANCED:
                    _log.info("%s: a rebalance refused the commit; the records come again", self.name)
                    return
                raise
            failed = [tp for tp in committed or () if tp.error is not None]
            if failed:
                raise KafkaException(failed[0].error)

    def lag(self) -> int | None:
        """Messages of the topic the group has not committed: per partition, high watermark − committed.

        The whole group's lag, over every partition of the topic (as Redis's lag is), so a
        source that has not joined can tell it too. A message of an array counts once.
        """
        with self._errors("ask the lag of"):
            metadata = self.consumer.list_topics(self.topic, timeout=REQUEST_TIMEOUT_SECONDS)
            return sum(self._uncommitted(metadata.topics[self.topic].partitions).values())

    def close(self) -> None:
        self.consumer.close()  # a dynamic member leaves the group; a static one keeps its place
        if self._producer is not None:
            self._producer.flush(REQUEST_TIMEOUT_SECONDS)

    def _consume(self, max_records: int, timeout: float) -> list[Message]:
        """Messages; a first read waits for the group to assign partitions (joining takes seconds),
        and the read after an assignment for the first fetch, so that nothing means nothing is there."""
        messages: list[Message] = []
        deadline = time.monotonic() + JOIN_WAIT_SECONDS
        while not self._joined and not messages and time.monotonic() < deadline:
            messages = self.consumer.consume(max_records, 0.1)
        if not self._assigned_lately:
            return messages or self.consumer.consume(max_records, timeout)
        deadline = time.monotonic() + FIRST_FETCH_SECONDS
        while not messages and time.monotonic() < deadline and not self._caught_up():
            messages = self.consumer.consume(max_records, 0.1)
        self._assigned_lately = False
        return messages

    def _caught_up(self) -> bool:
        """Whether this member has read every assigned partition up to its high watermark."""
        assigned = [TopicPartition(self.topic, p) for p in sorted(self._assigned)]
        read = {tp.partition: tp.offset for tp in self.consumer.position(assigned) if tp.offset >= 0}
        return not any(self._uncommitted(self._assigned, read).values())

    def _uncommitted(
        self, partitions: Iterable[int], read: Mapping[int, int] | None = None
    ) -> dict[int, int]:
        """Per partition, messages between the group's committed offset (or ``read``, where this
        member has read further, or else the first) and the end.

        The ends come from an admin client: the consumer's own connection would answer only
        after its fetch in flight (up to ``fetch.wait.max.ms``).
        """
        if self._admin is None:
            self._admin = AdminClient(self._common)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        starts = {tp.partition: tp.offset for tp in self.consumer.committed(tps, REQUEST_TIMEOUT_SECONDS)}
        starts.update(read or {})
        ends = self._offsets(tps, OffsetSpec.latest())
        never = [tp for tp in tps if starts[tp.partition] < 0]  # nothing committed: from the first
        starts.update(self._offsets(never, OffsetSpec.earliest()) if never else {})
        return {p: max(0, ends[p] - starts[p]) for p in ends}

    def _offsets(self, tps: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
        assert self._admin is not None
        answers = self._admin.list_offsets({tp: spec for tp in tps}, request_timeout=REQUEST_TIMEOUT_SECONDS)
        return {tp.partition: answer.result().offset for tp, answer in answers.items()}

    def _records(self, message: Message) -> list[SourceRecord]:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF or (error.retriable() and not error.fatal()):
                return []
            raise KafkaException(error)
        partition, offset, value = message.partition(), message.offset(), message.value()
        kind, millis = message.timestamp()
        arrival = millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE and millis >= 0 else None
        key, headers = message.key(), tuple(message.headers() or ())
        elements = _array(value)
        if not elements:
            raw = KafkaMessage(partition, offset, key, value, headers)
            return [SourceRecord(f"{partition}:{offset}", raw, len(value or b""), arrival)]
        records = []
        for index, element in enumerate(elements):
            text = json.dumps(element).encode()
            last = index == len(elements) - 1
            raw = KafkaMessage(partition, offset, key, text, headers, index, element, last)
            records.append(SourceRecord(f"{partition}:{offset}:{index}", raw, len(text), arrival))
        return records

    def _send_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Produce ``dead`` and wait until the broker has every one: only then are offsets committed."""
        with self._errors("write dead letters to"):
            if self._producer is None:
                self._producer = Producer({"enable.idempotence": True, "linger.ms": 5, **self._common})
            failures: list[KafkaError] = []

            def delivered(error: KafkaError | None, _message: Message) -> None:
                if error is not None:
                    failures.append(error)

            for letter in dead:
                message: KafkaMessage = letter.record.raw
                headers = [*message.headers, (REASON_HEADER, letter.reason.encode()),
                           (POSITION_HEADER, letter.record.position.encode())]  # fmt: skip
                self._produce(message.value, message.key, headers, delivered)
            left = self._producer.flush(REQUEST_TIMEOUT_SECONDS)
            if failures or left:
                raise KafkaException(failures[0] if failures else KafkaError(KafkaError._TIMED_OUT))

    def _produce(self, value: bytes | None, key: bytes | None, headers: list, delivered: Any) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(self.options.dead, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:  # the producer's queue is full: let it send some
                self._producer.poll(0.1)

    def _check_topics(self) -> None:
        """The topic must exist; the dead-letter topic is created (one partition) where it does not."""
        topics = self._topics()
        if self.topic not in topics:
            raise SourceError(f"Kafka at {self.options.servers} has no topic {self.topic!r}: create it first")
        if self.options.dead not in topics:
            self._admin = AdminClient(self._common)
            future = self._admin.create_topics([NewTopic(self.options.dead, num_partitions=1)])[
                self.options.dead
            ]
            try:
                future.result(CONNECT_TIMEOUT_SECONDS)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _topics(self) -> dict[str, Any]:
        """The cluster's topics; where every broker refuses, fail at once rather than at the timeout."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            try:
                return self.consumer.list_topics(timeout=0.25).topics
            except KafkaException:
                self.consumer.poll(0)  # (not subscribed yet: it only hands errors to _on_error)
                if self._unreachable is not None:
                    raise KafkaException(self._unreachable) from None
                if time.monotonic() >= deadline:
                    raise

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's client-wide errors, logged (it retries by itself); the first connection
        fails at once on "all brokers are down", with the error before it as the reason."""
        _log.warning("%s: %s", self.name, error.str())
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            self._last_error = error  # refused, unresolvable, TLS, authentication, …
        else:
            self._unreachable = self._last_error or error

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        self._joined = self._assigned_lately = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Records of a partition no longer ours are left to its next owner."""
        gone = {tp.partition for tp in partitions}
        self._assigned -= gone
        self._buffer = [record for record in self._buffer if record.raw.partition not in gone]

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """librdkafka's errors as a :class:`SourceError` that says what failed where."""
        try:
            yield
        except KafkaException as error:
            raise SourceError(
                f"cannot {action} Kafka at {self.options.servers} (topic {self.topic!r}): {_message(error)}"
            ) from error


def _array(value: bytes | None) -> list[Any] | None:
    """The elements of a value that is a non-empty JSON array; None for anything else (decode says why)."""
    if not value or value.lstrip()[:1] != b"[":
        return None
    try:
        elements = json.loads(value)
    except Exception:  # bad JSON, not UTF-8, too deep: one record, and decode names the problem
        return None
    return elements if isinstance(elements, list) and elements else None


def _message(error: Exception) -> str:
    """A librdkafka error's own words (``KafkaError.str()``), or the exception's."""
    first = error.args[0] if error.args else error
    return first.str() if isinstance(first, KafkaError) else str(first)
