"""The ingest pipeline: all-or-nothing by default, rejects on request, idempotent, crash-safe."""

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamrec.data.base import Dataset
from streamrec.events import EventSchema
from streamrec.ingest import IngestError, ingest_dataset
from streamrec.store import open_store


def make_dataset(records: list[dict], items: list[dict] | None = None, source: Path | None = None) -> Dataset:
    return Dataset(
        name="fixture",
        events=lambda: ((f"events.jsonl line {n}", r) for n, r in enumerate(records, start=1)),
        items=lambda: ((f"items.jsonl line {n}", r) for n, r in enumerate(items or [], start=1)),
        has_timestamps=True,
        source_files=[source] if source else [],
    )


def good(n: int) -> dict:
    return {"user_id": f"u{n % 3}", "item_id": f"i{n}", "event_type": "view", "timestamp": 1000 + n}


def test_fail_mode_commits_nothing_and_names_line_and_field(tmp_path: Path) -> None:
    records = [good(1), good(2), {**good(3), "event_type": "teleport"}, good(4)]
    with open_store(tmp_path) as store:
        with pytest.raises(IngestError) as raised:
            ingest_dataset(
                make_dataset(records, [{"item_id": "i1", "title": "One"}]),
                store,
                EventSchema(),
                batch_size=1,
                progress=False,
            )
        assert "events.jsonl line 3: field 'event_type': unknown type 'teleport'" in str(raised.value)
        assert "nothing from this dataset was committed" in str(raised.value)
        assert store.log.last_offset() == 0
        assert len(store.catalog) == 0


def test_skip_mode_writes_rejects_and_counts(tmp_path: Path) -> None:
    records = [
        good(1),
        {**good(2), "timestamp": "noon"},
        {"__invalid__": "invalid JSON: Expecting value"},
        good(4),
    ]
    items = [{"item_id": "i1", "title": "One"}, {"title": "no id"}]
    rejects = tmp_path / "rejects.jsonl"
    with open_store(tmp_path / "home") as store:
        summary = ingest_dataset(
            make_dataset(records, items),
            store,
            EventSchema(),
            on_error="skip",
            reject_path=rejects,
            progress=False,
        )
        assert (summary.accepted, summary.rejected, summary.items, summary.items_rejected) == (2, 2, 1, 1)
        assert store.log.last_offset() == 2
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["record"], r["field"]) for r in lines] == [
        ("items.jsonl line 2", "item_id"),
        ("events.jsonl line 2", "timestamp"),
        ("events.jsonl line 3", None),
    ]
    assert lines[1]["raw"]["timestamp"] == "noon"
    assert "invalid JSON" in lines[2]["problem"]


def test_reingesting_the_same_source_is_idempotent(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("stand-in for the file's bytes\n")
    records = [good(n) for n in range(50)]
    with open_store(tmp_path / "home") as store:
        first = ingest_dataset(make_dataset(records, source=source), store, EventSchema(), progress=False)
        stats = store.stats()
        second = ingest_dataset(make_dataset(records, source=source), store, EventSchema(), progress=False)
        assert (first.accepted, first.duplicates) == (50, 0)
        assert (second.accepted, second.duplicates) == (0, 50)
        assert {k: v for k, v in store.stats().items() if k != "duplicates_skipped"} == {
            k: v for k, v in stats.items() if k != "duplicates_skipped"
        }


def test_untimed_events_keep_source_order(tmp_path: Path) -> None:
    records = [{"user_id": "u", "item_id": f"i{n}", "event_type": "rating"} for n in (3, 1, 2)]
    with open_store(tmp_path) as store:
        ingest_dataset(make_dataset(records), store, EventSchema(), progress=False)
        assert store.log.recent_items("u", 10) == ["i3", "i1", "i2"]
        assert store.stats()["events_without_timestamp"] == 3


CRASHING_INGEST = textwrap.dedent(
    """
    import sys
    from streamrec.data.base import Dataset
    from streamrec.events import EventSchema
    from streamrec.ingest import ingest_dataset
    from streamrec.store import open_store

    def records():
        for n in range(10_000_000):
            yield f"line {n}", {"user_id": f"u{n % 97}", "item_id": f"i{n % 501}", "event_type": "view",
                                "timestamp": n, "event_id": f"e{n}"}

    dataset = Dataset("endless", records, lambda: iter(()), True)
    with open_store(sys.argv[1]) as store:
        ingest_dataset(dataset, store, EventSchema(), on_error="skip", batch_size=1000, progress=False,
                       on_commit=lambda accepted: print(accepted, flush=True))
    """
)


def test_sigkill_mid_ingest_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    """Kill -9 a writer after a few acknowledged batches: they all survive, no partial batch does."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_INGEST, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    acknowledged = 0
    for line in process.stdout:
        acknowledged = int(line)
        if acknowledged >= 5000:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    connection = sqlite3.connect(tmp_path / "streamrec.sqlite")
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count, low, high = connection.execute("SELECT COUNT(*), MIN(offset), MAX(offset) FROM events").fetchone()
    connection.close()
    assert count >= acknowledged  # nothing acknowledged was lost
    assert count % 1000 == 0  # and no batch was half-written
    assert (low, high) == (1, count)  # offsets are contiguous
    with open_store(tmp_path) as store:  # the store reopens and keeps appending in order
        ids = [logged.event.event_id for logged in store.log.read_after(0)]
        assert ids == [f"e{n}" for n in range(count)]
        assert store.log.append([store.log.read_after(count - 1)[0].event]).duplicates == 1
