"""Redis Streams into the log against a real ``redis-server`` (started by ``tests/redis_server.py``).

Each test reads its own stream, so they share one server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis

from redis_server import _free_port, redis_url  # noqa: F401 (the fixture)
from streamrec.cli import main
from streamrec.home import Home
from streamrec.sources import DeadLetter, SourceRecord, consume
from streamrec.sources.redis import ENTRY_ID_FIELD, REASON_FIELD, RedisStreamSource

T0 = 1_700_000_000


@pytest.fixture
def stream(redis_url: str) -> tuple[redis.Redis, str, str]:  # noqa: F811
    """A client, a fresh stream's name and the consume URL for it."""
    name = f"clicks-{uuid.uuid4().hex[:8]}"
    return redis.Redis.from_url(redis_url), name, f"{redis_url}?stream={name}"


def as_fields(i: int) -> dict[str, str]:
    """The event's own fields, no event_id: the log's id comes from the entry id."""
    return {"user_id": f"u{i % 7}", "item_id": f"i{i}", "event_type": "click", "timestamp": str(T0 + i)}


def as_json(i: int) -> dict[str, str]:
    """The whole event as JSON in one ``event`` field, with its own event_id."""
    event = {"user_id": f"u{i % 7}", "item_id": f"i{i}", "event_type": "view", "timestamp": T0 + i}
    return {"event": json.dumps({**event, "event_id": f"e{i}"})}


def produce(client: redis.Redis, stream: str, numbers: range) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for i in numbers:
        pipe.xadd(stream, as_json(i) if i % 2 else as_fields(i))
    return [entry_id.decode() for entry_id in pipe.execute()]


def drain(url: str, home: Path, **options: object):
    with RedisStreamSource(url) as source:
        return consume(
            source, Home.open(home), drain=True, handle_signals=False, max_wait_seconds=0, **options
        )


def logged(home: Path) -> list:
    with Home.open(home).open_store() as store:
        return [entry.event for entry in store.log.read_after(0)]


def test_both_entry_shapes_land_in_the_log_once(stream, tmp_path: Path) -> None:
    client, name, url = stream
    ids = produce(client, name, range(6))
    client.xadd(name, {"user_id": "u9", "item_id": "i9", "event_type": "purchase", "value": "2.5",
                       "context": '{"page": "home"}', "event_id": "own"})  # fmt: skip
    untimed = client.xadd(name, {"user_id": "u9", "item_id": "i10", "event_type": "view"}).decode()
    summary = drain(url, tmp_path)
    assert (summary.read, summary.stored, summary.dead_lettered, summary.lag) == (8, 8, 0, 0)
    events = {event.item_id: event for event in logged(tmp_path)}
    assert events["i0"].event_id == f"redis:{name}:{ids[0]}" and events["i0"].timestamp == T0
    assert events["i1"].event_id == "e1" and events["i1"].event_type == "view"
    assert (events["i9"].value, events["i9"].context, events["i9"].event_id) == (2.5, {"page": "home"}, "own")
    assert events["i10"].timestamp == int(untimed.split("-")[0]) / 1000  # the entry id's time

    again = drain(url, tmp_path)  # everything was acknowledged: nothing comes back
    assert (again.read, len(logged(tmp_path))) == (0, 8)
    assert main(["consume", url, "--home", str(tmp_path), "--drain", "--json", "--max-wait", "0"]) == 0


def test_bad_records_go_to_the_dead_letter_stream_with_the_reason(stream, tmp_path: Path) -> None:
    client, name, url = stream
    huge = json.dumps({**as_fields(0), "context": {"note": "x" * 20_000}})
    bad = {
        "bad-json": {"event": "{not json"},
        "missing": {"user_id": "u1", "event_type": "click"},
        "wrong-type": {**as_fields(1), "value": "lots"},
        "bad-time": {**as_fields(2), "timestamp": "yesterday"},
        "oversize": {"event": huge},
        "not-utf8": {**as_fields(3), "user_id": b"\xff\xfe"},
        "both-shapes": {**as_fields(4), "event": "{}"},
        "unknown": {**as_fields(5), "colour": "red"},
    }
    entry_ids = {}
    for n, (label, fields) in enumerate(bad.items()):
        client.xadd(name, as_fields(100 + n))  # a good one beside each bad one, in the same batch
        entry_ids[label] = client.xadd(name, fields).decode()
    summary = drain(url, tmp_path)
    assert (summary.batches, summary.stored, summary.dead_lettered, summary.lag) == (1, 8, 8, 0)
    assert sorted(e.item_id for e in logged(tmp_path)) == sorted(f"i{100 + n}" for n in range(8))

    dead = {
        fields[ENTRY_ID_FIELD].decode(): (fields, json.loads(fields[REASON_FIELD]))
        for _, fields in client.xrange(f"{name}:dead")
    }
    assert len(dead) == len(bad)
    expected = {
        "bad-json": ("event", "is not valid JSON"),
        "missing": ("item_id", "is required"),
        "wrong-type": ("value", "must be a number"),
        "bad-time": ("timestamp", "expected epoch seconds"),
        "oversize": (None, "bytes, more than 16,384"),
        "not-utf8": ("user_id", "is not UTF-8 text"),
        "both-shapes": ("user_id", "either the event's fields or one field"),
        "unknown": ("colour", "is not an event field"),
    }
    for label, (field, problem) in expected.items():
        original, reason = dead[entry_ids[label]]
        assert reason["record"] == f"redis:{name}:{entry_ids[label]}"
        assert reason["field"] == field and problem in reason["problem"], (label, reason)
        kept = {key: value for key, value in original.items() if key not in (REASON_FIELD, ENTRY_ID_FIELD)}
        expected_fields = {
            k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in bad[label].items()
        }
        assert kept == expected_fields  # the original entry, byte for byte
    assert drain(url, tmp_path).read == 0 and client.xlen(f"{name}:dead") == len(bad)  # written once


class DiesBeforeAck(RedisStreamSource):
    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        raise RuntimeError("killed between the commit and XACK")


def test_a_batch_committed_but_not_acknowledged_comes_back_and_is_stored_once(stream, tmp_path: Path) -> None:
    client, name, url = stream
    produce(client, name, range(20))
    with DiesBeforeAck(f"{url}&consumer=c1") as source, pytest.raises(RuntimeError, match="XACK"):
        consume(source, Home.open(tmp_path), handle_signals=False, max_wait_seconds=0)
    assert len(logged(tmp_path)) == 20 and client.xpending(name, "streamrec")["pending"] == 20

    with RedisStreamSource(f"{url}&consumer=c1") as again:  # its own pending list, each entry once
        assert [len(again.read(15, timeout=0)) for _ in range(3)] == [15, 5, 0]
    summary = drain(f"{url}&consumer=c1", tmp_path)  # the same name after a restart: its own pending first
    assert (summary.read, summary.stored, summary.duplicates, summary.lag) == (20, 0, 20, 0)
    assert len(logged(tmp_path)) == 20


def test_a_dead_consumers_pending_entries_are_reclaimed_by_another(stream, tmp_path: Path) -> None:
    client, name, url = stream
    produce(client, name, range(10))
    with RedisStreamSource(f"{url}&consumer=dead-one") as source:
        assert len(source.read(100, timeout=0)) == 10  # and it dies holding them
        assert source.lag() == 10  # delivered, not acknowledged
    other = f"{url}&consumer=other&min_idle_ms=300"
    assert drain(other, tmp_path).read == 0  # not idle long enough yet
    time.sleep(0.4)
    summary = drain(other, tmp_path)
    assert (summary.read, summary.stored, summary.lag) == (10, 10, 0)
    consumers = {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(name, "streamrec")}
    assert consumers == {"dead-one": 0, "other": 0}


def test_cli_errors_are_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "recs")
    cases = [
        (f"redis://127.0.0.1:{_free_port()}/0?stream=x", 1, "cannot connect to Redis at 127.0.0.1:"),
        ("redis://127.0.0.1:6379/0", 2, "add the stream to read"),
        ("redis://127.0.0.1:6379/0?stream=x&colour=red", 2, "unknown option 'colour'"),
        ("redis://127.0.0.1:6379/0?stream=x&min_idle_ms=soon", 2, "min_idle_ms must be a whole number"),
        ("http://127.0.0.1/0?stream=x", 2, "unsupported URL"),
    ]
    for url, code, message in cases:
        assert main(["consume", url, "--home", home, "--quiet"]) == code, url
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err


# ---- the command in a child process: killed, stopped -------------------------------------------


def _consumer(url: str, home: Path, log: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamrec.cli", "consume", url, "--home", str(home), *extra]
    with log.open("a") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )


def _pending(client: redis.Redis, name: str) -> int:
    try:
        return client.xpending(name, "streamrec")["pending"]
    except redis.ResponseError:  # NOGROUP: the consumer has not created its group yet
        return 0


def _wait_for_a_batch_in_hand(
    client: redis.Redis, name: str, child: subprocess.Popen, log: Path, at_least: int = 1
) -> None:
    """Until the consumer holds at least ``at_least`` entries read and not yet acknowledged."""
    deadline = time.monotonic() + 60
    while _pending(client, name) < at_least:
        assert child.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no batch read in 60 s:\n{log.read_text()[-2000:]}"
        time.sleep(0.005)


def test_sigkilled_consumer_loses_and_duplicates_nothing(stream, tmp_path: Path) -> None:
    client, name, url = stream
    url = f"{url}&consumer=c1"
    home, log = tmp_path / "recs", tmp_path / "consume.log"
    produced, done = [0], threading.Event()

    def producer() -> None:  # keeps writing while the consumer is killed and restarted
        while not done.is_set():
            produce(client, name, range(produced[0], produced[0] + 50))
            produced[0] += 50
            time.sleep(0.01)

    writer = threading.Thread(target=producer)
    writer.start()
    killed_holding = 0
    try:
        for _ in range(3):
            child = _consumer(url, home, log, "--quiet", "--max-batch", "300", "--max-wait", "0.2")
            _wait_for_a_batch_in_hand(client, name, child, log)
            child.send_signal(signal.SIGKILL)
            child.wait()
            killed_holding += _pending(client, name) > 0
    finally:
        done.set()
        writer.join()
    assert killed_holding >= 2  # most kills landed between XREADGROUP and XACK

    child = _consumer(url, home, log, "--drain", "--json", "--max-wait", "0")
    assert child.wait(timeout=120) == 0, log.read_text()[-2000:]
    items = [event.item_id for event in logged(home)]
    assert len(items) == len(set(items)) == produced[0]  # nothing duplicated, nothing lost
    assert set(items) == {f"i{i}" for i in range(produced[0])}
    assert client.xpending(name, "streamrec")["pending"] == 0 and client.xlen(f"{name}:dead") == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_batch_in_hand_with_exit_0(stream, tmp_path: Path, stop_signal: int) -> None:
    client, name, url = stream
    home, log = tmp_path / "recs", tmp_path / "consume.log"
    child = _consumer(url, home, log, "--max-batch", "100000", "--max-wait", "30", "--progress-every", "0.2")
    produce(client, name, range(500))
    _wait_for_a_batch_in_hand(client, name, child, log, at_least=500)  # the batch waits 30 s to fill
    child.send_signal(stop_signal)
    assert child.wait(timeout=30) == 0, log.read_text()[-2000:]
    assert f"stopped by {signal.Signals(stop_signal).name}" in log.read_text()
    assert client.xpending(name, "streamrec")["pending"] == 0
    assert len(logged(home)) == 500


def test_the_consume_drill_runs_small(tmp_path: Path) -> None:
    """``scripts/consume_drill.py`` end to end with a kill of each kind, so the long drill stays sound."""
    from redis_server import REDIS_SERVER

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/install_servers.sh installs it with apt)")
    path = Path(__file__).resolve().parents[1] / "scripts" / "consume_drill.py"
    spec = importlib.util.spec_from_file_location("consume_drill", path)
    assert spec and spec.loader
    drill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drill)
    out = tmp_path / "drill.json"
    assert drill.main(["--events", "3000", "--kills", "2", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["lost"], result["duplicated"], result["kill_drill"]["in_log"]) == (0, 0, 3000)
    assert result["kill_drill"]["random_kills_holding_an_unacknowledged_batch"] == 1
    assert result["kill_drill"]["crash_point_kills_holding_a_committed_unacknowledged_batch"] == 1
    assert result["kill_drill"]["redelivered_records_skipped_as_duplicates"] > 0
