"""Kafka into the log against a Kafka-protocol broker (Tansu, started by ``tests/kafka_server.py``).

Each test reads its own topic with its own group, so they share one broker. Consumers join
with :data:`FAST_GROUP`: Tansu answers a join after half the session timeout.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kafka_server import FAST_GROUP, _free_port, create_topics, kafka_servers  # noqa: F401 (the fixture)
from streamrec.cli import main
from streamrec.home import Home
from streamrec.sources import DeadLetter, SourceRecord, consume
from streamrec.sources.kafka import POSITION_HEADER, REASON_HEADER, KafkaSource

T0 = 1_700_000_000
QUIET = {"log_level": 0}


@pytest.fixture
def topic(kafka_servers: str) -> tuple[str, str, str]:  # noqa: F811
    """The brokers, a fresh topic (2 partitions) and the consume URL for it, with its own group."""
    name = f"clicks-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_servers, name, partitions=2)
    return kafka_servers, name, f"kafka://{kafka_servers}/{name}?group=g-{name}&{FAST_GROUP}"


def event(i: int, **extra: object) -> dict[str, object]:
    return {"user_id": f"u{i % 7}", "item_id": f"i{i}", "event_type": "click", "timestamp": T0 + i, **extra}


def produce(servers: str, topic: str, values: Sequence[object], partition: int = 0, **options: object):
    """Each value (bytes as they are, None as a tombstone, anything else as JSON) in its own batch,
    where Tansu's high watermark is right; returns each message's (partition, offset)."""
    producer = Producer({"bootstrap.servers": servers, **QUIET})
    where: list[tuple[int, int]] = []

    def delivered(error: object, message) -> None:
        assert error is None, error
        where.append((message.partition(), message.offset()))

    for value in values:
        raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
        producer.produce(topic, raw, partition=partition, on_delivery=delivered, **options)
        producer.flush(10)
    assert len(where) == len(values)
    return where


def drain(url: str, home: Path, **options: object):
    with KafkaSource(url) as source:
        return consume(
            source, Home.open(home), drain=True, handle_signals=False, max_wait_seconds=0, **options
        )


def logged(home: Path) -> list:
    with Home.open(home).open_store() as store:
        return [entry.event for entry in store.log.read_after(0)]


def committed(servers: str, topic: str, group: str, partitions: int = 2) -> list[int]:
    reader = Consumer({"bootstrap.servers": servers, "group.id": group, **QUIET})
    try:
        tps = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [max(tp.offset, 0) for tp in tps]
    finally:
        reader.close()


def read_topic(servers: str, topic: str, expected: int) -> list:
    """The messages of a one-partition topic, without joining a group: ``expected`` of them and any
    more that come within a second (Tansu's high watermark cannot tell the end of a batch)."""
    settings = {"bootstrap.servers": servers, "group.id": "peek", "enable.auto.commit": False, **QUIET}
    reader = Consumer(settings)
    reader.assign([TopicPartition(topic, 0, 0)])
    messages, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline and len(messages) < expected:
        messages += [m for m in reader.consume(100, 0.2) if m.error() is None]
    messages += [m for m in reader.consume(100, 1.0) if m.error() is None]
    reader.close()
    return messages


def test_single_events_and_arrays_land_in_the_log_once(topic, tmp_path: Path) -> None:
    servers, name, url = topic
    own = produce(servers, name, [event(0, event_id="own"), event(1)], partition=0)
    array = produce(servers, name, [[event(2), event(3, event_id="e3")]], partition=1)
    untimed = produce(servers, name, [{"user_id": "u9", "item_id": "i9", "event_type": "view"}], partition=1)
    with KafkaSource(url) as source:
        assert source.lag() == 4  # messages, not events
    summary = drain(url, tmp_path)
    assert (summary.read, summary.stored, summary.dead_lettered, summary.lag) == (5, 5, 0, 0)
    events = {event.item_id: event for event in logged(tmp_path)}
    assert events["i0"].event_id == "own" and events["i0"].timestamp == T0
    assert events["i1"].event_id == f"kafka:{name}:0:{own[1][1]}"
    assert events["i2"].event_id == f"kafka:{name}:1:{array[0][1]}:0" and events["i3"].event_id == "e3"
    assert abs(events["i9"].timestamp - time.time()) < 120  # the message's own time
    assert committed(servers, name, f"g-{name}") == [own[-1][1] + 1, untimed[0][1] + 1]

    again = drain(url, tmp_path)  # everything was committed: nothing comes back
    assert (again.read, len(logged(tmp_path))) == (0, 5)
    assert main(["consume", url, "--home", str(tmp_path), "--drain", "--json", "--max-wait", "0"]) == 0


def test_bad_records_go_to_the_dead_letter_topic_with_the_reason(topic, tmp_path: Path) -> None:
    servers, name, url = topic
    bad = {
        "bad-json": b"{not json",
        "missing": {"user_id": "u1", "event_type": "click"},
        "wrong-type": event(1, value="lots"),
        "bad-time": event(2, timestamp="yesterday"),
        "oversize": event(3, context={"note": "x" * 20_000}),
        "not-utf8": b'{"user_id": "\xff\xfe"}',
        "unknown": event(5, colour="red"),
        "not-an-object": 7,
        "empty-array": [],
        "tombstone": None,
    }
    values: list[object] = []
    for n, value in enumerate(bad.values()):
        values += [event(100 + n), value]  # a good one beside each bad one, in the same batch
    values.append([event(200), {"user_id": "u1", "item_id": "i201"}, event(202)])  # one bad element
    headers = [("trace", b"t-1")]
    where = produce(servers, name, values, key=b"k1", headers=headers)
    summary = drain(url, tmp_path)
    assert (summary.batches, summary.stored, summary.dead_lettered, summary.lag) == (1, 12, 11, 0)
    good = {f"i{100 + n}" for n in range(len(bad))} | {"i200", "i202"}
    assert {e.item_id for e in logged(tmp_path)} == good

    dead = {}
    for message in read_topic(servers, f"{name}.dead", len(bad) + 1):
        fields = dict(message.headers())
        dead[fields[POSITION_HEADER].decode()] = (message, json.loads(fields[REASON_HEADER]))
    expected = {
        "bad-json": (None, "is not valid JSON"),
        "missing": ("item_id", "is required"),
        "wrong-type": ("value", "must be a number"),
        "bad-time": ("timestamp", "expected epoch seconds"),
        "oversize": (None, "bytes, more than 16,384"),
        "not-utf8": (None, "is not UTF-8 text"),
        "unknown": ("colour", "is not an event field"),
        "not-an-object": (None, "must be a JSON object"),
        "empty-array": (None, "empty array"),
        "tombstone": (None, "has no value"),
    }
    for n, (label, (field, problem)) in enumerate(expected.items()):
        position = "{}:{}".format(*where[2 * n + 1])
        message, reason = dead.pop(position)
        assert reason["record"] == f"kafka:{name}:{position}"
        assert reason["field"] == field and problem in reason["problem"], (label, reason)
        original = bad[label]
        if original is not None and not isinstance(original, bytes):
            original = json.dumps(original).encode()
        assert message.value() == original and message.key() == b"k1", label  # the original message
        assert message.headers()[:1] == headers
    (position, (message, reason)), *rest = dead.items()  # the array's bad element, on its own
    assert position == "{}:{}:1".format(*where[-1]) and reason["field"] == "event_type" and not rest
    assert json.loads(message.value()) == {"user_id": "u1", "item_id": "i201"}
    assert drain(url, tmp_path).read == 0 and len(read_topic(servers, f"{name}.dead", 0)) == len(bad) + 1


class DiesBeforeCommit(KafkaSource):
    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        raise RuntimeError("killed between the log commit and the offset commit")


def test_a_batch_stored_but_not_committed_comes_back_and_is_stored_once(topic, tmp_path: Path) -> None:
    servers, name, url = topic
    produce(servers, name, [event(i) for i in range(20)])
    with DiesBeforeCommit(url) as source, pytest.raises(RuntimeError, match="offset commit"):
        consume(source, Home.open(tmp_path), handle_signals=False, max_wait_seconds=0)
    assert len(logged(tmp_path)) == 20 and committed(servers, name, f"g-{name}") == [0, 0]

    summary = drain(url, tmp_path)
    assert (summary.read, summary.stored, summary.duplicates, summary.dead_lettered) == (20, 0, 20, 0)
    assert summary.lag == 0 and len(logged(tmp_path)) == 20


def test_an_array_acknowledged_in_part_comes_back_whole(topic, tmp_path: Path) -> None:
    servers, name, url = topic
    [(_, offset)] = produce(servers, name, [[event(i) for i in range(5)]])
    with KafkaSource(url) as source:
        first = source.read(3, timeout=1)
        assert [r.position for r in first] == [f"0:{offset}:{i}" for i in range(3)]
        source.acknowledge(first, [])
        assert committed(servers, name, f"g-{name}") == [offset, 0]  # not past the array yet
        rest = source.read(10, timeout=1)
        assert [r.position for r in rest][:2] == [f"0:{offset}:3", f"0:{offset}:4"]
    summary = drain(url, tmp_path)  # the next consumer starts at the array again
    assert (summary.read, summary.stored, summary.dead_lettered) == (5, 5, 0)


def test_cli_errors_are_one_line_without_a_traceback(
    topic, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers, name, _ = topic
    home = str(tmp_path / "recs")
    cases = [
        (f"kafka://127.0.0.1:{_free_port()}/x", 1, "cannot connect to Kafka at 127.0.0.1:"),
        (f"kafka://{servers}/no-such-topic", 1, "has no topic 'no-such-topic'"),
        (f"kafka://{servers}", 2, "add the topic to read"),
        (f"kafka://{servers}/{name}?colour=red", 2, 'No such configuration property: "colour"'),
        (f"kafka://{servers}/{name}?enable.auto.commit=true", 2, "streamrec sets enable.auto.commit"),
        (f"kafka://{servers}/{name}?group=", 2, "group must not be blank"),
        (f"kafka://user:secret@{servers}/{name}", 2, "sasl.username"),
    ]
    for url, code, message in cases:
        assert main(["consume", url, "--home", home, "--quiet"]) == code, url
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and "secret" not in err, err


# ---- the command in a child process, SIGKILLed while a producer writes -------------------------


def test_sigkilled_consumer_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """``scripts/consume_drill.py``'s kill drill, small: ``streamrec consume kafka://…`` SIGKILLed at
    random times while events are produced (and once at the crash point between the log commit
    and the offset commit), restarted each time; then every event is in the log once."""
    from kafka_server import MISSING, TANSU

    if TANSU is None:
        pytest.skip(MISSING)
    path = Path(__file__).resolve().parents[1] / "scripts" / "consume_drill.py"
    spec = importlib.util.spec_from_file_location("consume_drill", path)
    assert spec and spec.loader
    drill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drill)
    source = drill.KafkaDrill()
    with source.server(tmp_path):
        result = drill.kill_drill(source, tmp_path, events=1500, kills=3, seed=0)
    assert (result["produced"], result["in_log"], result["lost"], result["duplicated"]) == (1500, 1500, 0, 0)
    assert result["unacknowledged_after"] == 0 and result["dead_letters"] == 0
    assert result["random_kills_holding_an_unacknowledged_batch"] == 2
    assert result["crash_point_kills_holding_a_committed_unacknowledged_batch"] == 1
    assert result["redelivered_records_skipped_as_duplicates"] > 0  # the crash point's batch, at least
    assert result["last_consumer_exit_code_after_sigterm"] == 0
