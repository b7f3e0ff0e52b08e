"""The store's contract, one suite that every backend passes: SQLite and PostgreSQL.

A backend joins by subclassing :class:`StoreContract` with a ``location`` fixture (what
``open_store`` takes) that gives each test an empty store. PostgreSQL runs on a server the
tests start themselves (``pg_server.py``) and skips, saying why, where that cannot run.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from streamrec.events import Event
from streamrec.items import Item
from streamrec.store import Impression, Store, open_store
from streamrec.store.postgres import scratch_schema, with_search_path


def ev(user: str, item: str, ts: float, event_id: str | None = None) -> Event:
    return Event(user, item, "view", ts, None, event_id, None)


# Each writer process appends BATCHES batches of its own events; every fifth batch also
# re-sends events that every writer sends (same event_id), which exactly one of them stores.
WRITERS, BATCHES, SIZE, SHARED = 4, 15, 20, 5
WRITER = textwrap.dedent(
    f"""
    import pathlib, sys, time
    from streamrec.events import Event
    from streamrec.store import open_store

    location, me, go = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
    with open_store(location) as store:
        while not go.exists():
            time.sleep(0.002)
        for b in range({BATCHES}):
            batch = [Event(f"w{{me}}", f"i{{j}}", "view", float(b), None, f"w{{me}}-{{b}}-{{j}}")
                     for j in range({SIZE})]
            if b % 5 == 0:
                batch += [Event("shared", f"s{{j}}", "click", 0.0, None, f"shared-{{b}}-{{j}}")
                          for j in range({SHARED})]
            store.log.append(batch)
    """
)


class StoreContract:
    """What every backend of ``open_store`` must do; subclasses give ``location``."""

    @pytest.fixture
    def store(self, location: str) -> Iterator[Store]:
        with open_store(location) as store:
            yield store

    def test_offsets_strictly_increase_across_batches(self, store: Store) -> None:
        first = store.log.append([ev("u1", "a", 3), ev("u2", "b", 1)])
        second = store.log.append([ev("u1", "c", 2)])
        assert (first.first_offset, first.last_offset) == (1, 2)
        assert (second.first_offset, second.last_offset) == (3, 3)
        offsets = [logged.offset for logged in store.log.read_after(0)]
        assert offsets == [1, 2, 3]
        assert [logged.event.item_id for logged in store.log.read_after(1, limit=1)] == ["b"]
        assert [logged.offset for logged in store.log.read_after(2)] == [3]
        assert store.log.read_after(3) == []
        assert store.log.last_offset() == 3

    def test_events_come_back_as_they_went_in(self, store: Store) -> None:
        sent = Event("u1", "i1", "purchase", 1.5, 4.25, "e1", {"page": "home", "rank": 3, "a": [1]})
        store.log.append([sent, ev("u2", "i2", 2.0)])
        logged = store.log.read_after(0)
        assert [entry.event for entry in logged] == [sent, ev("u2", "i2", 2.0)]
        assert list(logged[0].event.context or {}) == ["page", "rank", "a"]  # key order kept

    def test_event_id_makes_resending_idempotent(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 1, "e1"), ev("u1", "b", 2, "e2")])
        again = store.log.append([ev("u1", "a", 1, "e1"), ev("u1", "c", 3, "e3"), ev("u1", "c", 3, "e3")])
        assert (again.accepted, again.duplicates) == (1, 2)
        assert again.first_offset == again.last_offset == 3
        stats = store.stats()
        assert stats["events"] == 3
        assert stats["duplicates_skipped"] == 2
        nothing = store.log.append([ev("u1", "a", 1, "e1")])
        assert (nothing.accepted, nothing.first_offset) == (0, 0)
        mixed = store.log.append([ev("u1", "x", 4), ev("u1", "a", 1, "e1"), ev("u1", "y", 5)])
        assert (mixed.accepted, mixed.duplicates, mixed.first_offset, mixed.last_offset) == (2, 1, 4, 5)
        assert [e.offset for e in store.log.read_after(0)] == [1, 2, 3, 4, 5]  # no gap where e1 was

    def test_a_failing_batch_stores_nothing_and_leaves_no_gap(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 1)])
        broken = Event("u1", "c", "view", object(), None, "e-broken", None)  # type: ignore[arg-type]
        with pytest.raises(Exception):  # noqa: B017 — each backend's driver raises its own error
            store.log.append([ev("u1", "b", 2, "e-good"), broken])
        assert store.log.last_offset() == 1
        assert store.log.append([ev("u1", "b", 2, "e-good")]).first_offset == 2  # e-good was not kept

    def test_failed_transaction_leaves_nothing(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 1)])
        with pytest.raises(RuntimeError), store.transaction():
            store.log.append([ev("u1", "b", 2)])
            store.catalog.upsert([Item("i9", "x")])
            assert store.log.last_offset() == 2  # the transaction sees its own writes
            raise RuntimeError("crash in the middle")
        assert store.log.last_offset() == 1
        assert len(store.catalog) == 0

    def test_recent_items_orders_by_time_then_offset(self, store: Store) -> None:
        # Out-of-order arrival and a timestamp tie: (ts, offset) decides.
        store.log.append(
            [ev("u1", "late", 10), ev("u1", "early", 1), ev("u1", "tie1", 5), ev("u1", "tie2", 5)]
        )
        store.log.append([ev("u2", "x", 1), ev("u1", "tie3", 5)])
        assert store.log.recent_items("u1", 10) == ["early", "tie1", "tie2", "tie3", "late"]
        assert store.log.recent_items("u1", 2) == ["tie3", "late"]
        assert store.log.recent_items("nobody", 5) == []
        everything = store.log.user_events("u1")
        assert [e.event.item_id for e in everything] == store.log.recent_items("u1", 10)
        assert everything[0].event == ev("u1", "early", 1) and everything[0].offset == 2
        assert [e.event.item_id for e in store.log.user_events("u1", 2)] == ["tie3", "late"]
        assert store.log.user_events("nobody") == []
        # "tie3" was appended last: the newest offset, though "late" has the newest timestamp
        assert store.log.newest_offset("u1") == store.log.last_offset()
        assert store.log.newest_offset("nobody") == 0

    def test_time_range(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 1), ev("u2", "c", 5), ev("u1", "b", 5), ev("u2", "d", 9)])
        assert [e.event.item_id for e in store.log.time_range(5, 9)] == ["c", "b"]
        assert [e.offset for e in store.log.time_range(0, 100)] == [1, 2, 3, 4]

    def test_counts_by_time_buckets_events(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 100), ev("u2", "b", 159.5), ev("u1", "c", 160), ev("u3", "d", 400)])
        assert store.log.counts_by_time(100, 400, 60) == [(100, 2), (160, 1)]  # 400 is past the end

    def test_popular_items_counts_after_an_offset_ties_by_id(self, store: Store) -> None:
        store.log.append([ev("u1", "z", 1), ev("u1", "z", 2), ev("u2", "b", 1)])
        store.log.append([ev("u3", "a", 1), ev("u3", "b", 2), ev("u3", "B", 3), ev("u4", "z", 1)])
        assert store.log.popular_items(0, 10) == [("z", 3), ("b", 2), ("B", 1), ("a", 1)]
        assert store.log.popular_items(3, 2) == [("B", 1), ("a", 1)]  # bytes order: "B" < "a"

    def test_sequences_export_is_sorted_and_coded(self, store: Store) -> None:
        store.log.append([ev("u2", "b", 2), ev("u1", "a", 9), ev("u1", "b", 1), ev("u2", "a", 2)])
        store.log.append([ev("u1", "c", 9), Event("u1", "d", "rating", 10, 4.5)])
        table = store.log.sequences()
        decoded = {
            table.users[u]: [table.items[i] for i in table.user_items(u)] for u in range(len(table.users))
        }
        assert decoded == {"u1": ["b", "a", "c", "d"], "u2": ["b", "a"]}
        assert np.all(np.diff(table.user_codes) >= 0)
        assert table.offsets.tolist() == [1, 4, 3, 2, 5, 6]  # users coded in order of first event
        assert table.timestamps.tolist() == [2, 2, 1, 9, 9, 10]
        assert [table.type_names[t] for t in table.event_types] == ["view"] * 5 + ["rating"]
        assert np.isnan(table.values[:5]).all() and table.values[5] == 4.5
        assert len(store.log.sequences(through_offset=2)) == 2
        assert len(store.log.sequences(through_offset=0)) == 0

    def test_stats_count_the_log(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 5, "e1"), ev("u2", "a", 7)], untimed=1)
        store.log.append([ev("u1", "a", 5, "e1")])
        store.catalog.upsert([Item("a", "A")])
        stats = store.stats()
        expected = {"events": 2, "users": 2, "items": 1, "last_offset": 2, "duplicates_skipped": 1}
        assert {key: stats[key] for key in expected} == expected
        assert (stats["first_timestamp"], stats["last_timestamp"]) == (5, 7)
        assert stats["event_types"] == {"view": 2}
        assert stats["events_without_timestamp"] == 1
        assert stats["catalog_items"] == 1

    def test_catalog_upsert_keeps_created_at_and_first_position(self, store: Store) -> None:
        store.catalog.upsert([Item("i1", "Old title", created_at=100.0)])
        store.catalog.upsert(
            [Item("i3", "Third"), Item("i1", "New title", created_at=999.0), Item("i2", "x")]
        )
        item = store.catalog.get("i1")
        assert item is not None
        assert (item.title, item.created_at) == ("New title", 100.0)
        assert len(store.catalog) == 3
        assert [i.item_id for i in store.catalog.all()] == ["i1", "i3", "i2"]
        assert store.catalog.get("missing") is None

    def test_catalog_revision_counts_upserts_seen_by_every_connection(self, location: str) -> None:
        with open_store(location) as writer, open_store(location) as reader:
            assert reader.catalog.revision() == 0
            writer.catalog.upsert([Item("i1"), Item("i2")])
            writer.catalog.upsert([Item("i1", "renamed")])
            writer.catalog.upsert([])  # nothing written: no new revision
            assert reader.catalog.revision() == writer.catalog.revision() == 2
            writer.log.append([ev("u1", "i1", 1.0)])  # events are not catalogue writes
            assert reader.catalog.revision() == 2

    def test_catalog_keeps_every_field(self, store: Store) -> None:
        attributes = {"year": 1999, "genres": ["a", "b"], "brand": "Z"}
        store.catalog.upsert([Item("i1", "T", "D", "C", attributes, 12.5), Item("i2")])
        assert store.catalog.get("i1") == Item("i1", "T", "D", "C", attributes, 12.5)
        assert list(store.catalog.all()[0].attributes or {}) == ["year", "genres", "brand"]  # text order
        assert store.catalog.all()[1].attributes is None

    def test_impressions_come_back_by_request_id_and_time(self, location: str) -> None:
        shown = [
            Impression("r1", 10.0, "u1", "v0001", "recommend", ("i3", "i1"), None),
            Impression("r2", 12.5, None, "v0002", "session", (), "b"),
            Impression("r3", 11.0, "u2", "v0001+v0002", "recommend", ("é", "i\u00a0x"), "x0001/ab", "ba"),
        ]
        with open_store(location) as writer, open_store(location) as reader:
            writer.impressions.append(shown)
            writer.impressions.append([replace(shown[0], items=("changed",))])  # a known id stays as it was
            assert reader.impressions.get("r1") == shown[0] and reader.impressions.get("nope") is None
            assert reader.impressions.between(10.0, 12.5) == [shown[0], shown[2]]  # by time, end excluded
            assert len(reader.impressions) == 3
            assert writer.log.last_offset() == 0  # impressions are not events

    def test_forget_erases_a_user_keeps_other_offsets_and_never_gives_one_twice(self, location: str) -> None:
        from streamrec.privacy import forget_in

        with open_store(location) as store:
            store.log.append([ev("u1", "a", 1, "e1"), ev("gone", "b", 2, "g1"), ev("u2", "c", 3)])
            store.log.append([ev("gone", "d", 4, "g2"), ev("gone", "a", 5, "g3")])  # the newest events
            store.impressions.append([Impression("r1", 1.0, "gone", "v1", "recommend", ("a",))])
            store.impressions.append([Impression("r2", 1.0, "u1", "v1", "recommend", ("b",))])
            record = forget_in(store, "gone", "test", lambda first: ["v0001"] if first <= 2 else [])
            assert (record.events, record.impressions, record.first_offset, record.last_offset) == (
                3,
                1,
                2,
                5,
            )
            assert record.versions == ("v0001",) and store.log.forget_records() == [record]
            assert [(e.offset, e.event.user_id) for e in store.log.read_after(0)] == [(1, "u1"), (3, "u2")]
            assert store.log.user_events("gone") == [] and store.log.newest_offset("gone") == 0
            assert store.impressions.get("r1") is None and store.impressions.get("r2") is not None
            assert store.log.last_offset() == 5 and store.stats()["last_offset"] == 5  # not 3
            # Offsets 4 and 5 were given out: the next batch follows them, whatever came before.
            again = store.log.append([ev("gone", "e", 6, "g1"), ev("u1", "f", 7)])  # a fresh history
            assert (again.first_offset, again.last_offset, again.duplicates) == (6, 7, 0)
            assert [e.offset for e in store.log.read_after(0)] == [1, 3, 6, 7]
            table = store.log.sequences()
            assert sorted(table.users) == ["gone", "u1", "u2"] and len(table.items) == 4
            nothing = forget_in(store, "nobody", "test", lambda first: ["never"])
            assert (nothing.events, nothing.first_offset, nothing.versions) == (0, 0, ())
            assert len(store.log.forget_records()) == 2

    def test_purge_before_erases_expired_events_and_impressions_and_keeps_other_offsets(
        self, location: str
    ) -> None:
        with open_store(location) as store:
            store.log.append([ev("u1", "a", 50), ev("u2", "b", 10), ev("u1", "c", 20), ev("u2", "d", 5)])
            store.impressions.append([Impression("old", 9.0, "u1", "v1", "recommend", ("a",))])
            store.impressions.append([Impression("new", 60.0, "u1", "v1", "recommend", ("a",))])
            assert store.log.purge_before(20.0) == (2, 2, 4)  # ts 10 and 5 (offsets 2 and 4); 20 stays
            assert store.impressions.purge_before(20.0) == 1
            assert [(e.offset, e.event.timestamp) for e in store.log.read_after(0)] == [(1, 50.0), (3, 20.0)]
            assert store.impressions.get("old") is None and store.impressions.get("new") is not None
            assert store.log.last_offset() == 4 and store.log.append([ev("u3", "e", 70)]).first_offset == 5
            assert store.log.purge_before(1.0) == (0, 0, 0)

    def test_concurrent_writer_processes_get_gap_free_offsets_and_each_event_once(
        self, location: str, tmp_path: Path
    ) -> None:
        go = tmp_path / "go"
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, location, str(me), str(go)])
            for me in range(WRITERS)
        ]
        seen: list[int] = []
        failures: list[str] = []
        done = threading.Event()

        def read_while_they_write() -> None:  # a reader must never see offset N+1 before N
            with open_store(location) as reader:
                while not done.is_set():
                    for entry in reader.log.read_after(len(seen)):
                        if entry.offset != len(seen) + 1:
                            failures.append(f"read offset {entry.offset} after {len(seen)}")
                            return
                        seen.append(entry.offset)
                    time.sleep(0.001)

        with open_store(location):
            pass  # the schema exists before the reader starts (writers race to create it too)
        reader = threading.Thread(target=read_while_they_write)
        reader.start()
        go.touch()
        try:
            codes = [writer.wait(120) for writer in writers]
        finally:
            done.set()
            reader.join()
        assert codes == [0] * WRITERS
        assert failures == []
        with open_store(location) as store:
            logged = store.log.read_after(0)
        ids = [entry.event.event_id for entry in logged]
        shared = (BATCHES + 4) // 5 * SHARED
        assert len(logged) == WRITERS * BATCHES * SIZE + shared
        assert [entry.offset for entry in logged] == list(range(1, len(logged) + 1))
        assert len(set(ids)) == len(ids)
        assert sum(event_id.startswith("shared-") for event_id in ids) == shared
        for me in range(WRITERS):  # each writer's events in the order it sent them
            mine = [event_id for event_id in ids if event_id.startswith(f"w{me}-")]
            assert mine == [f"w{me}-{b}-{j}" for b in range(BATCHES) for j in range(SIZE)]
        assert len(seen) > 0


class TestSQLite(StoreContract):
    @pytest.fixture
    def location(self, tmp_path: Path) -> str:
        return str(tmp_path / "home")

    def test_a_sqlite_url_names_the_file(self, tmp_path: Path) -> None:
        with open_store(f"sqlite:///{tmp_path}/elsewhere.sqlite") as store:
            store.log.append([ev("u1", "a", 1)])
        assert (tmp_path / "elsewhere.sqlite").exists()

    def test_database_is_wal_and_intact(self, store: Store) -> None:
        store.log.append([ev("u1", "a", 1)])
        connection = sqlite3.connect(store.database.path)  # type: ignore[attr-defined]
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        connection.close()

    def test_an_older_impressions_table_gets_the_teams_column(self, tmp_path: Path) -> None:
        (tmp_path / "home").mkdir()
        older = sqlite3.connect(tmp_path / "home" / "streamrec.sqlite")
        older.execute(
            "CREATE TABLE impressions (request_id TEXT PRIMARY KEY, ts REAL NOT NULL, user_id TEXT,"
            " version TEXT NOT NULL, surface TEXT NOT NULL, arm TEXT, items TEXT NOT NULL) WITHOUT ROWID"
        )
        row = ("r0", 1.0, "u1", "v0001", "recommend", None, '["i1"]')
        older.execute("INSERT INTO impressions VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        older.commit()
        older.close()
        with open_store(tmp_path / "home") as store:
            interleaved = Impression("r1", 2.0, "u1", "v1+v2", "recommend", ("i2",), "x/ab", "b")
            store.impressions.append([interleaved])
            assert store.impressions.get("r0") == Impression("r0", 1.0, "u1", "v0001", "recommend", ("i1",))
            assert store.impressions.get("r1") == interleaved


class TestPostgreSQL(StoreContract):
    @pytest.fixture
    def location(self, pg_url: str) -> Iterator[str]:
        with scratch_schema(pg_url, f"test_{uuid.uuid4().hex[:12]}") as url:
            yield url

    def test_urls_pick_the_backend(self, location: str) -> None:
        with open_store(location.replace("postgresql://", "postgresql+psycopg://", 1)) as store:
            assert type(store.log).__name__ == "PostgresEventLog"
        with pytest.raises(ValueError, match="unsupported URL"):
            open_store("mysql://somewhere/db")

    def test_nul_characters_are_refused_with_a_clear_error(self, store: Store) -> None:
        with pytest.raises(ValueError, match="NUL"):
            store.log.append([ev("u\x00", "a", 1)])
        assert store.log.last_offset() == 0

    def test_connections_the_server_dropped_are_replaced(self, store: Store, pg_url: str) -> None:
        store.log.append([ev("u1", "a", 1)])
        assert store.log.last_offset() == 1  # a read connection is now in the pool
        database = store.database
        pids = [conn.info.backend_pid for conn in [database._conn, *database._idle]]  # type: ignore[attr-defined]
        with psycopg.connect(pg_url, autocommit=True) as admin:  # as a server restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        assert store.log.last_offset() == 1
        assert store.log.append([ev("u1", "b", 2)]).first_offset == 2

    def test_a_search_path_keeps_schemas_apart(self, pg_url: str) -> None:
        assert with_search_path("postgresql://u@h:1/db?sslmode=disable", "s1") == (
            "postgresql://u@h:1/db?sslmode=disable&options=-csearch_path%3Ds1"
        )
        with (
            scratch_schema(pg_url, "contract_a") as a,
            scratch_schema(pg_url, "contract_b") as b,
            open_store(a) as first,
            open_store(b) as second,
        ):
            first.log.append([ev("u1", "a", 1)])
            assert (first.log.last_offset(), second.log.last_offset()) == (1, 0)
