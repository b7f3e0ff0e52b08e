"""The synthetic stream: deterministic, schema-valid, time-consistent, and its planted structure is real.

Later features (sequence models, drift detection, cold start from text) are
tested against this stream, so these tests check that each planted pattern
is strong enough to be found, not just present.
"""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from streamrec.data import open_dataset
from streamrec.data.synthetic import (
    CATEGORIES,
    GENERIC_WORDS,
    StreamConfig,
    SyntheticStream,
    generate,
    simulate,
    topic_names,
    write,
)
from streamrec.events import EventSchema
from streamrec.items import validate_item

SMALL = {"users": 60, "items": 120, "events": 3000, "seed": 3}
FILES = ("events.jsonl", "items.jsonl", "truth.json")


@pytest.fixture(scope="module")
def default_stream() -> SyntheticStream:
    """The default config (500 users, 800 items, 50k events), generated once."""
    return generate(StreamConfig())


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, **SMALL)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def item_codes(stream: SyntheticStream) -> dict[str, int]:
    return {record["item_id"]: code for code, record in enumerate(stream.items)}


def next_item_pairs(stream: SyntheticStream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous item, next item, next timestamp) for consecutive events of the same user."""
    order = np.lexsort((np.arange(stream.n_events), stream.user))
    user, item, ts = stream.user[order], stream.item[order], stream.timestamp[order]
    same = user[1:] == user[:-1]
    return item[:-1][same], item[1:][same], ts[1:][same]


def oracle_and_popularity(stream: SyntheticStream) -> tuple[float, float]:
    """Hit rate of "follow the planted successor" at 1, and of the 10 most popular items at 10."""
    codes = item_codes(stream)
    successor = np.full(len(stream.items), -1)
    for before, after in stream.truth["successors"].items():
        successor[codes[before]] = codes[after]
    created = np.array([record["created_at"] for record in stream.items])
    previous, following, ts = next_item_pairs(stream)
    guess = successor[previous]
    released = (guess >= 0) & (created[np.maximum(guess, 0)] <= ts)
    oracle = float(np.mean(released & (guess == following)))
    # Popularity counted over the whole stream, test events included: the most favourable case.
    counts = np.bincount(stream.item, minlength=len(stream.items))
    top10 = np.argsort(-counts, kind="stable")[:10]
    popular = float(np.mean(np.isin(following, top10)))
    return oracle, popular


class TestDeterminism:
    def test_same_seed_same_bytes(self, tmp_path: Path) -> None:
        simulate(tmp_path / "a", **SMALL)
        simulate(tmp_path / "b", **SMALL)
        for name in FILES:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    def test_different_seed_different_stream(self, tmp_path: Path) -> None:
        simulate(tmp_path / "a", **SMALL)
        simulate(tmp_path / "b", **{**SMALL, "seed": 4})
        for name in FILES:
            assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes(), name

    def test_events_method_matches_the_file(self, small_files: Path) -> None:
        stream = generate(StreamConfig(**SMALL))
        assert list(stream.events()) == read_jsonl(small_files / "events.jsonl")
        assert stream.items == read_jsonl(small_files / "items.jsonl")
        assert json.loads((small_files / "truth.json").read_text()) == stream.truth


class TestSchemaAndTime:
    def test_counts_and_validation(self, small_files: Path) -> None:
        events = read_jsonl(small_files / "events.jsonl")
        items = read_jsonl(small_files / "items.jsonl")
        assert len(events) == SMALL["events"] and len(items) == SMALL["items"]
        schema = EventSchema()
        for line, record in enumerate(events, 1):
            event = schema.validate(record, where=f"line {line}")
            assert event.value is None and event.context is None
        for line, record in enumerate(items, 1):
            validate_item(record, where=f"line {line}")
        # Stable ids: seed and position, so re-ingesting the file is idempotent.
        assert [e["event_id"] for e in events] == [f"sim-3-{i:06d}" for i in range(len(events))]
        assert len({i["item_id"] for i in items}) == len(items)

    def test_time_order_and_release(self, small_files: Path) -> None:
        events = read_jsonl(small_files / "events.jsonl")
        created = {i["item_id"]: i["created_at"] for i in read_jsonl(small_files / "items.jsonl")}
        truth = json.loads((small_files / "truth.json").read_text())
        times = [e["timestamp"] for e in events]
        assert all(isinstance(t, int) for t in times)
        assert times == sorted(times)  # the file is in global time order
        assert truth["start"] <= times[0] and times[-1] < truth["end"]
        assert all(e["timestamp"] >= created[e["item_id"]] for e in events)
        per_user: dict[str, list[int]] = {}
        for event in events:
            per_user.setdefault(event["user_id"], []).append(event["timestamp"])
        assert len(per_user) == SMALL["users"]
        assert min(len(ts) for ts in per_user.values()) >= 5
        assert all(ts == sorted(ts) for ts in per_user.values())

    def test_reader_and_ingest_layout(self, small_files: Path) -> None:
        dataset = open_dataset(small_files)
        assert dataset.has_timestamps
        assert sum(1 for _ in dataset.events()) == SMALL["events"]
        assert sum(1 for _ in dataset.items()) == SMALL["items"]

    def test_tiny_budget_and_many_topics(self) -> None:
        stream = generate(StreamConfig(users=50, items=40, events=20, topics=14, new_item_fraction=0.5))
        assert stream.n_events == 20
        assert stream.truth["topics"][12:] == ["astronomy-2", "cooking-2"] == topic_names(14)[12:]
        assert generate(StreamConfig(events=0, users=5, items=20)).n_events == 0

    @pytest.mark.parametrize(
        "bad",
        [
            {"drift_at": (0.6, 0.4)},
            {"drift_at": (1.0,)},
            {"sequential_strength": 1.5},
            {"items": 10, "topics": 8},  # 7 initial items cannot cover 8 topics
            {"users": 0},
        ],
    )
    def test_bad_config(self, bad: dict) -> None:
        with pytest.raises(ValueError):
            StreamConfig(**bad)

    def test_drift_at_list_becomes_tuple(self, tmp_path: Path) -> None:
        config = simulate(tmp_path, users=10, items=30, events=100, drift_at=[0.3, 0.7])
        assert config.drift_at == (0.3, 0.7)
        assert len(json.loads((tmp_path / "truth.json").read_text())["drift_timestamps"]) == 2


class TestPlantedStructure:
    def test_successor_oracle_far_above_popularity(self, default_stream: SyntheticStream) -> None:
        oracle, popular = oracle_and_popularity(default_stream)
        assert oracle > 0.4
        assert oracle >= 3 * popular, (oracle, popular)

    def test_no_sequential_strength_no_oracle(self) -> None:
        oracle, popular = oracle_and_popularity(
            generate(StreamConfig(sequential_strength=0.0, events=20_000))
        )
        assert oracle < popular

    def test_titles_share_words_within_topics(self, default_stream: SyntheticStream) -> None:
        topics = default_stream.truth["item_topic"]
        words = {
            r["item_id"]: set(r["title"].lower().split()) - set(GENERIC_WORDS) for r in default_stream.items
        }
        ids = list(words)[:300]
        within, across = [], []
        for a, b in combinations(ids, 2):
            jaccard = len(words[a] & words[b]) / len(words[a] | words[b])
            (within if topics[a] == topics[b] else across).append(jaccard)
        assert np.mean(within) > 0.1
        assert np.mean(across) == 0.0  # topic vocabularies are disjoint
        for record in default_stream.items:
            assert 3 <= len(record["title"].split()) <= 5

    def test_category_does_not_leak_the_topic(self, default_stream: SyntheticStream) -> None:
        topics = default_stream.truth["item_topic"]
        for topic in range(default_stream.config.topics):
            seen = {r["category"] for r in default_stream.items if topics[r["item_id"]] == topic}
            assert len(seen) >= len(CATEGORIES) - 2

    def test_drift_changes_users_main_topics(self, default_stream: SyntheticStream) -> None:
        changed, tv = self.drift_measures(default_stream)
        assert changed > 0.5, changed
        assert tv > 0.1, tv
        truth = default_stream.truth
        drifted = set(truth["drifted_users"][0])
        assert len(drifted) == round(0.8 * default_stream.config.users)
        for user, (before, after) in truth["user_main_topic"].items():
            assert (before != after) == (user in drifted)

    def test_without_drift_tastes_stay(self) -> None:
        changed, _ = self.drift_measures(generate(StreamConfig(drift_strength=0.0)))
        assert changed < 0.2, changed

    @staticmethod
    def drift_measures(stream: SyntheticStream) -> tuple[float, float]:
        """Share of active users whose most-used topic differs across the drift point,
        and the total-variation distance of the topic mix of all events before vs after."""
        codes = item_codes(stream)
        topic_of = np.zeros(len(stream.items), dtype=np.int64)
        for item_id, topic in stream.truth["item_topic"].items():
            topic_of[codes[item_id]] = topic
        topics = stream.config.topics
        after = stream.timestamp >= stream.truth["drift_timestamps"][0]
        event_topic = topic_of[stream.item]
        key = stream.user.astype(np.int64) * topics + event_topic
        size = stream.config.users * topics
        before_counts = np.bincount(key[~after], minlength=size).reshape(-1, topics)
        after_counts = np.bincount(key[after], minlength=size).reshape(-1, topics)
        active = (before_counts.sum(1) >= 10) & (after_counts.sum(1) >= 10)
        changed = np.mean(before_counts[active].argmax(1) != after_counts[active].argmax(1))
        mix_before = np.bincount(event_topic[~after], minlength=topics) / (~after).sum()
        mix_after = np.bincount(event_topic[after], minlength=topics) / after.sum()
        return float(changed), float(0.5 * np.abs(mix_before - mix_after).sum())

    def test_new_items_arrive_over_time_and_get_traffic(self, default_stream: SyntheticStream) -> None:
        truth, config = default_stream.truth, default_stream.config
        codes = item_codes(default_stream)
        new = np.array([codes[i] for i in truth["new_items"]])
        assert len(new) == round(config.items * config.new_item_fraction)
        created = np.array([default_stream.items[i]["created_at"] for i in new])
        span = (truth["end"] - truth["start"]) * 0.95
        assert created.min() < truth["start"] + 0.1 * span and created.max() > truth["start"] + 0.9 * span
        old_created = [
            r["created_at"] for r in default_stream.items if r["item_id"] not in truth["new_items"]
        ]
        assert max(old_created) < truth["start"]
        counts = np.bincount(default_stream.item, minlength=len(default_stream.items))
        assert np.mean(counts[new] > 0) > 0.9
        # Each new item is linked into a chain of its topic, behind an earlier item.
        predecessors = {after: before for before, after in truth["successors"].items()}
        for item_id in truth["new_items"]:
            before = predecessors[item_id]
            assert truth["item_topic"][before] == truth["item_topic"][item_id]
            assert truth["item_created_at"][before] <= truth["item_created_at"][item_id]
        # Traffic on new items grows over the timeline.
        is_new = np.isin(default_stream.item, new)
        quarter = default_stream.n_events // 4
        assert is_new[-quarter:].mean() > 3 * is_new[:quarter].mean()

    def test_purchases_follow_preference(self, default_stream: SyntheticStream) -> None:
        truth = default_stream.truth
        codes = item_codes(default_stream)
        topic_of = np.zeros(len(default_stream.items), dtype=np.int64)
        for item_id, topic in truth["item_topic"].items():
            topic_of[codes[item_id]] = topic
        phase = (default_stream.timestamp >= truth["drift_timestamps"][0]).astype(np.int64)
        main = np.array([truth["user_main_topic"][u] for u in default_stream.users])
        on_main = topic_of[default_stream.item] == main[default_stream.user, phase]
        purchase = default_stream.event_type == 3
        assert purchase[on_main].mean() > 2 * purchase[~on_main].mean()

    def test_event_ids_are_seeded(self) -> None:
        stream = generate(StreamConfig(users=10, items=30, events=50, seed=42))
        assert all(re.fullmatch(r"sim-42-\d{6}", e["event_id"]) for e in stream.events())


def test_write_accepts_a_str_path(tmp_path: Path) -> None:
    stream = generate(StreamConfig(users=5, items=20, events=30))
    write(stream, str(tmp_path / "nested" / "out"))
    assert sorted(p.name for p in (tmp_path / "nested" / "out").iterdir()) == sorted(FILES)
