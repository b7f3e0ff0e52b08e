"""The event log's contract: ordered offsets, idempotency, the reads training and serving use."""

import sqlite3
from pathlib import Path

import numpy as np

from streamrec.events import Event
from streamrec.items import Item
from streamrec.store import open_store


def ev(user: str, item: str, ts: float, event_id: str | None = None) -> Event:
    return Event(user, item, "view", ts, None, event_id, None)


def test_offsets_strictly_increase_across_batches(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        first = store.log.append([ev("u1", "a", 3), ev("u2", "b", 1)])
        second = store.log.append([ev("u1", "c", 2)])
        assert (first.first_offset, first.last_offset) == (1, 2)
        assert (second.first_offset, second.last_offset) == (3, 3)
        offsets = [logged.offset for logged in store.log.read_after(0)]
        assert offsets == [1, 2, 3]
        assert [logged.event.item_id for logged in store.log.read_after(1, limit=1)] == ["b"]
        assert store.log.last_offset() == 3


def test_event_id_makes_resending_idempotent(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.log.append([ev("u1", "a", 1, "e1"), ev("u1", "b", 2, "e2")])
        again = store.log.append([ev("u1", "a", 1, "e1"), ev("u1", "c", 3, "e3"), ev("u1", "c", 3, "e3")])
        assert (again.accepted, again.duplicates) == (1, 2)
        assert again.first_offset == again.last_offset == 3
        stats = store.stats()
        assert stats["events"] == 3
        assert stats["duplicates_skipped"] == 2
        nothing = store.log.append([ev("u1", "a", 1, "e1")])
        assert (nothing.accepted, nothing.first_offset) == (0, 0)


def test_recent_items_orders_by_time_then_offset(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        # Out-of-order arrival and a timestamp tie: (ts, offset) decides.
        store.log.append(
            [ev("u1", "late", 10), ev("u1", "early", 1), ev("u1", "tie1", 5), ev("u1", "tie2", 5)]
        )
        store.log.append([ev("u2", "x", 1)])
        assert store.log.recent_items("u1", 10) == ["early", "tie1", "tie2", "late"]
        assert store.log.recent_items("u1", 2) == ["tie2", "late"]
        assert store.log.recent_items("nobody", 5) == []


def test_time_range(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.log.append([ev("u1", "a", 1), ev("u1", "b", 5), ev("u2", "c", 5), ev("u2", "d", 9)])
        assert [e.event.item_id for e in store.log.time_range(5, 9)] == ["b", "c"]


def test_sequences_export_is_sorted_and_coded(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.log.append([ev("u2", "b", 2), ev("u1", "a", 9), ev("u1", "b", 1), ev("u2", "a", 2)])
        store.log.append([ev("u1", "c", 9)])
        table = store.log.sequences()
        decoded = {
            table.users[u]: [table.items[i] for i in table.user_items(u)] for u in range(len(table.users))
        }
        assert decoded == {"u1": ["b", "a", "c"], "u2": ["b", "a"]}
        assert np.all(np.diff(table.user_codes) >= 0)
        partial = store.log.sequences(through_offset=2)
        assert len(partial) == 2


def test_catalog_upsert_keeps_created_at(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.catalog.upsert([Item("i1", "Old title", created_at=100.0)])
        store.catalog.upsert([Item("i1", "New title", created_at=999.0), Item("i2", "Other")])
        item = store.catalog.get("i1")
        assert item is not None
        assert (item.title, item.created_at) == ("New title", 100.0)
        assert len(store.catalog) == 2
        assert [i.item_id for i in store.catalog.all()] == ["i1", "i2"]
        assert store.catalog.get("missing") is None


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.log.append([ev("u1", "a", 1)])
        try:
            with store.transaction():
                store.log.append([ev("u1", "b", 2)])
                store.catalog.upsert([Item("i9", "x")])
                raise RuntimeError("crash in the middle")
        except RuntimeError:
            pass
        assert store.log.last_offset() == 1
        assert len(store.catalog) == 0


def test_database_is_wal_and_intact(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.log.append([ev("u1", "a", 1)])
        path = store.database.path
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
