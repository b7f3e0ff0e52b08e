"""The consumer loop on the in-process source: batching, dead letters, acknowledge only after durable."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamrec.cli import main
from streamrec.home import Home
from streamrec.sources import MAX_RECORD_BYTES, DeadLetter, SourceRecord, consume
from streamrec.sources.consumer import read_statuses
from streamrec.sources.memory import MemorySource
from streamrec.sources.metrics import SourceMetrics


def good(i: int, **extra: object) -> dict[str, object]:
    return {
        "user_id": f"u{i % 5}",
        "item_id": f"i{i}",
        "event_type": "click",
        "timestamp": 1_700_000_000 + i,
        **extra,
    }


def run(source: MemorySource, home: Path, **options: object):
    return consume(source, Home.open(home), drain=True, handle_signals=False, **options)


def logged(home: Path) -> list:
    with Home.open(home).open_store() as store:
        return [entry.event for entry in store.log.read_after(0)]


class CrashBeforeAck(MemorySource):
    """Dies where a consumer process could: after the log committed, before the source heard of it."""

    def acknowledge(self, records: Sequence[SourceRecord], dead: Sequence[DeadLetter]) -> None:
        raise RuntimeError("killed before the acknowledgement")


def test_events_land_once_even_when_the_batch_comes_again(tmp_path: Path) -> None:
    records = [good(i) for i in range(10)] + [good(10, event_id="own-id")]
    crashed = CrashBeforeAck(records)
    with pytest.raises(RuntimeError, match="killed"):
        run(crashed, tmp_path)
    assert len(logged(tmp_path)) == 11 and crashed.lag() == 11  # durable, but not acknowledged

    again = MemorySource(records)  # the same records at the same positions, as a broker redelivers
    summary = run(again, tmp_path)
    assert (summary.read, summary.stored, summary.duplicates, again.lag()) == (11, 0, 11, 0)
    events = logged(tmp_path)
    assert len(events) == 11
    assert [e.event_id for e in events[:2]] == ["memory:test:0", "memory:test:1"]  # from the position
    assert events[-1].event_id == "own-id"


def test_bad_records_become_dead_letters_and_the_good_ones_of_their_batch_are_stored(tmp_path: Path) -> None:
    deep = {"user_id": "u1", "item_id": "i1", "event_type": "click", "context": "[" * 5000}
    records = [
        good(0),
        {"user_id": "u1", "event_type": "click"},  # no item
        good(2, value="lots"),  # wrong type
        "not an object",
        good(4, extra="field"),
        good(5, context={"note": "x" * (MAX_RECORD_BYTES + 1)}),  # oversize
        deep,
        good(7),
    ]
    source = MemorySource(records)
    summary = run(source, tmp_path, max_batch=100)
    assert (summary.batches, summary.stored, summary.dead_lettered, source.lag()) == (1, 2, 6, 0)
    assert {e.item_id for e in logged(tmp_path)} == {"i0", "i7"}
    reasons = {reason["record"]: reason for _, reason in source.dead}
    assert reasons["memory:test:1"] == {
        "record": "memory:test:1",
        "field": "item_id",
        "problem": "is required",
    }
    assert reasons["memory:test:2"]["field"] == "value"
    assert reasons["memory:test:3"]["problem"] == "expected an object"
    assert reasons["memory:test:4"]["field"] == "extra"
    assert "bytes, more than" in reasons["memory:test:5"]["problem"]
    assert reasons["memory:test:6"]["problem"].startswith("could not be read (RecursionError")
    assert source.dead[0][0] == records[1]  # the original record travels with its reason


def test_batches_close_on_size_and_on_time(tmp_path: Path) -> None:
    summary = run(MemorySource([good(i) for i in range(10)]), tmp_path / "size", max_batch=3)
    assert (summary.batches, summary.stored) == (4, 10)

    class Trickle(MemorySource):
        def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
            time.sleep(0.02)
            return super().read(1, timeout)

    started = time.monotonic()
    summary = run(
        Trickle([good(i) for i in range(6)]), tmp_path / "time", max_batch=100, max_wait_seconds=0.03
    )
    assert summary.stored == 6 and 2 <= summary.batches <= 6  # the clock closed batches before 100
    assert time.monotonic() - started < 5


def test_stop_commits_and_acknowledges_the_batch_in_hand(tmp_path: Path) -> None:
    stop = threading.Event()

    class StopsMidBatch(MemorySource):
        def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
            stop.set()  # a signal arriving while the batch fills
            return super().read(2, timeout)

    source = StopsMidBatch([good(i) for i in range(5)])
    summary = consume(source, Home.open(tmp_path), stop=stop, handle_signals=False)
    assert (summary.stopped_by, summary.stored, summary.batches) == ("stop", 2, 1)
    assert source.lag() == 3 and len(logged(tmp_path)) == 2  # stored ⇔ acknowledged


def test_untimed_records_take_the_sources_arrival_time(tmp_path: Path) -> None:
    class Stamped(MemorySource):
        def read(self, max_records: int, timeout: float) -> list[SourceRecord]:
            return [
                SourceRecord(r.position, r.raw, r.size, 1_600_000_000.5) for r in super().read(9, timeout)
            ]

    record = {"user_id": "u1", "item_id": "i1", "event_type": "view"}
    run(Stamped([record]), tmp_path)
    assert logged(tmp_path)[0].timestamp == 1_600_000_000.5
    with Home.open(tmp_path).open_store() as store:
        assert store.stats()["events_without_timestamp"] == 1


def test_metrics_status_and_stats_show_the_consumer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = SourceMetrics()
    source = MemorySource([good(0), good(1), {"bad": 1}])
    run(source, tmp_path, metrics=metrics)
    run(MemorySource([good(0)]), tmp_path, metrics=metrics)  # a redelivery
    text = metrics.render().decode()
    assert 'streamrec_source_records_total{outcome="stored",source="memory:test"} 2.0' in text
    assert 'streamrec_source_records_total{outcome="duplicate",source="memory:test"} 1.0' in text
    assert 'streamrec_source_records_total{outcome="dead_letter",source="memory:test"} 1.0' in text
    assert 'streamrec_source_lag_records{source="memory:test"} 0.0' in text
    assert "streamrec_source_batch_duration_seconds_count" in text

    (status,) = read_statuses(Home.open(tmp_path))
    assert (status["source"], status["state"], status["lag"]) == ("memory:test", "stopped", 0)
    assert main(["stats", "--home", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sources"]["memory:test"]["lag"] == 0
    assert main(["stats", "--home", str(tmp_path)]) == 0
    assert "memory:test: lag 0" in capsys.readouterr().out


def test_bad_batch_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        run(MemorySource(), tmp_path, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_seconds"):
        run(MemorySource(), tmp_path, max_wait_seconds=-1)
