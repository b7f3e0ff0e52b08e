"""Prequential evaluation: cutting a log into periods, test-then-train examples, scoring, the benchmark."""

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.evaluation.prequential import Examples, cut_at_quantiles, cut_into_periods, score_examples
from streamrec.models.base import Recommender, TrainingData


def small_log() -> TrainingData:
    """12 events at t = 1..12 over 3 users; item 8 is in the catalogue but never touched."""
    sequences = [np.array([0, 1, 2, 3]), np.array([4, 0, 5]), np.array([2, 6, 4, 7, 1])]
    timestamps = [np.array([1, 2, 7, 10]), np.array([3, 5, 11]), np.array([4, 6, 8, 9, 12])]
    return TrainingData(
        sequences,
        9,
        timestamps=timestamps,
        event_types=[np.arange(len(s)) % 2 for s in sequences],
        type_names=["view", "click"],
    )


def random_log(users: int = 40, items: int = 50, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    sequences, timestamps = [], []
    for _ in range(users):
        n = int(rng.integers(1, 20))
        sequences.append(rng.integers(items, size=n))
        timestamps.append(np.sort(rng.choice(100_000, size=n, replace=False)))
    return TrainingData(sequences, items, timestamps=timestamps)


def test_periods_hold_equal_event_counts_and_items_are_coded_by_first_appearance() -> None:
    data = small_log()
    split = cut_into_periods(data, 3)
    assert split.n_periods == 3
    assert [int(sum((p == k).sum() for p in split.periods)) for k in range(3)] == [4, 4, 4]
    # t 1-4 | 5-8 | 9-12: items first seen in period 0 are 0, 1, 4, 2; then 6; then 7, 3, 5
    assert split.item_order.tolist() == [0, 1, 4, 2, 6, 7, 3, 5, 8]
    assert split.n_items.tolist() == [4, 5, 8]
    for recoded, original in zip(split.data.sequences, data.sequences, strict=True):
        assert split.item_order[recoded].tolist() == original.tolist()
    assert split.data.n_items == 9


@pytest.mark.parametrize("periods", [2, 3, 5])
def test_period_properties_on_a_random_log(periods: int) -> None:
    data = random_log()
    split = cut_into_periods(data, periods)
    counts = np.array([sum(int((p == k).sum()) for p in split.periods) for k in range(periods)])
    total = sum(len(s) for s in data.sequences)
    assert counts.sum() == total and counts.max() - counts.min() <= 2
    assert np.all(np.diff(split.n_items) >= 0) and split.n_items[-1] <= data.n_items
    first_period = {}
    for sequence, period in zip(split.data.sequences, split.periods, strict=True):
        assert np.all(np.diff(period) >= 0)  # a user's periods follow their time order
        for item, p in zip(sequence, period, strict=True):
            first_period[int(item)] = min(first_period.get(int(item), periods), int(p))
    for item, p in first_period.items():
        low = split.n_items[p - 1] if p > 0 else 0
        assert low <= item < split.n_items[p]
    assert sorted(split.item_order.tolist()) == list(range(data.n_items))
    for recoded, original in zip(split.data.sequences, data.sequences, strict=True):
        assert np.array_equal(split.item_order[recoded], original)


def test_through_keeps_earlier_periods_and_marks_the_last_one_to_learn() -> None:
    split = cut_into_periods(small_log(), 3)
    data = split.through(1)
    assert data.n_items == 5 and data.type_names == ["view", "click"]
    # in new codes: 0→0, 1→1, 2→3, 3→6, 4→2, 5→7, 6→4, 7→5
    assert [s.tolist() for s in data.sequences] == [[0, 1, 3], [2, 0], [3, 4, 2]]
    assert [t.tolist() for t in data.timestamps] == [[1, 2, 7], [3, 5], [4, 6, 8]]
    assert [t.tolist() for t in data.event_types] == [[0, 1, 0], [0, 1], [0, 1, 0]]
    assert [m.tolist() for m in data.learn] == [[False, False, True], [False, True], [False, True, True]]
    assert all(s.max() < data.n_items for s in data.sequences)
    first = split.through(0)
    assert [s.tolist() for s in first.sequences] == [[0, 1], [2], [3]]
    assert all(m.all() for m in first.learn)
    last = split.through(2)
    assert sum(len(s) for s in last.sequences) == 12 and last.n_items == 8


def test_examples_are_each_event_of_the_period_with_its_history() -> None:
    split = cut_into_periods(small_log(), 3)
    rng = np.random.default_rng(0)
    examples = split.examples(1, None, rng)
    assert examples.n_items == 5
    pairs = sorted((h.tolist(), int(t)) for h, t in zip(examples.histories, examples.targets, strict=True))
    # period 1 events: user 0 → 3 (t 7), user 1 → 0 (t 5), user 2 → 4 (t 6) and 2 (t 8)
    assert pairs == [([0, 1], 3), ([2], 0), ([3], 4), ([3, 4], 2)]
    cold = {int(t): bool(c) for t, c in zip(examples.targets, examples.cold, strict=True)}
    assert cold == {3: False, 0: False, 4: True, 2: False}  # item 4 (originally 6) first appeared in 1
    last = split.examples(2, None, rng)
    assert len(last) == 4 and last.n_items == 8
    # period 2 targets, new codes: 6 (t 10), 7 (t 11), 5 (t 9), 1 (t 12); all but 1 are new
    assert sorted(zip(last.targets.tolist(), last.cold.tolist(), strict=True)) == [
        (1, False),
        (5, True),
        (6, True),
        (7, True),
    ]
    for history, target in zip(last.histories, last.targets, strict=True):
        n = len(history)  # the history is exactly the user's events before the target
        assert any(
            len(s) > n and s[:n].tolist() == history.tolist() and s[n] == target for s in split.data.sequences
        )
    # a user's first event has no history and is not an example
    assert len(split.examples(0, None, rng)) == 1


def test_examples_limit_samples_without_replacement() -> None:
    split = cut_into_periods(random_log(users=60), 3)
    everything = split.examples(2, None, np.random.default_rng(0))
    keys = {
        (tuple(h.tolist()), int(t)) for h, t in zip(everything.histories, everything.targets, strict=True)
    }
    assert len(keys) == len(everything)
    sample = split.examples(2, 25, np.random.default_rng(1))
    assert len(sample) == 25
    picked = [(tuple(h.tolist()), int(t)) for h, t in zip(sample.histories, sample.targets, strict=True)]
    assert len(set(picked)) == 25 and set(picked) <= keys
    known = split.n_items[1]
    assert np.array_equal(sample.cold, sample.targets >= known)
    assert len(split.examples(2, 10 * len(everything), np.random.default_rng(2))) == len(everything)


class FixedScores(Recommender):
    """Item ``i`` scores ``-i``; extra columns past the ranked items score high (must be ignored)."""

    def __init__(self, n_items: int, extra: int = 5) -> None:
        self.n_items = n_items + extra
        self.scores = np.r_[-np.arange(n_items, dtype=np.float32), np.full(extra, 100.0, np.float32)]
        self.seen: list[list[int]] = []

    def fit(self, data: TrainingData) -> "FixedScores":
        return self

    def partial_fit(self, data: TrainingData) -> "FixedScores":
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self.seen.extend(h.tolist() for h in histories)
        return np.tile(self.scores, (len(histories), 1))


def test_score_examples_matches_hand_computed_metrics() -> None:
    histories = [np.array([0]), np.array([5]), np.array([0, 1, 2]), np.array([3]), np.array([4])]
    # ranks after removing seen items: 0, 3, 9, 12 (miss), target seen → miss
    examples = Examples(
        histories,
        np.array([1, 3, 12, 13, 4]),
        np.array([False, True, True, False, False]),
        15,
    )
    model = FixedScores(15)
    metrics = score_examples(model, examples, batch_size=2)
    assert model.seen == [h.tolist() for h in histories]
    gains = [1.0, 1 / math.log2(5), 1 / math.log2(11)]
    assert metrics["examples"] == 5 and metrics["cold_examples"] == 2
    assert metrics["hr@10"] == pytest.approx(3 / 5)
    assert metrics["ndcg@10"] == pytest.approx(sum(gains) / 5)
    assert metrics["cold_hr@10"] == pytest.approx(1.0)
    assert metrics["cold_ndcg@10"] == pytest.approx((gains[1] + gains[2]) / 2)
    warm_only = Examples(histories[:1], np.array([1]), np.array([False]), 15)
    warm = score_examples(model, warm_only)
    assert warm["cold_examples"] == 0 and math.isnan(warm["cold_hr@10"]) and math.isnan(warm["cold_ndcg@10"])


def test_cut_into_periods_needs_timestamps_and_two_periods() -> None:
    data = small_log()
    with pytest.raises(ValueError, match="timestamps"):
        cut_into_periods(TrainingData(data.sequences, data.n_items), 3)
    with pytest.raises(ValueError, match="at least 2"):
        cut_into_periods(data, 1)


def test_cut_at_quantiles_sizes_each_period_by_its_share_of_the_events() -> None:
    split = cut_at_quantiles(small_log(), [0, 0.5, 0.75, 1])  # t 1-6 | 7-9 | 10-12
    assert [int(sum((p == k).sum() for p in split.periods)) for k in range(3)] == [6, 3, 3]
    assert split.n_items.tolist() == [5, 6, 8]  # 0, 1, 4, 2, 6 | 7 | 3, 5
    for bad in ([0, 1], [0.1, 0.5, 1], [0, 0.5, 0.5, 1], [0, 0.5, 0.9]):
        with pytest.raises(ValueError, match="quantiles: must rise from 0 to 1"):
            cut_at_quantiles(small_log(), bad)


def test_stream_benchmark_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrec.bench.stream import run_stream_benchmark
    from streamrec.config import UpdateSettings
    from streamrec.data.synthetic import simulate
    from streamrec.models.sasrec import SASRecConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the text cache goes to scratch
    simulate(tmp_path / "stream", users=60, items=80, events=3000, seed=0)
    out = tmp_path / "out" / "stream.json"
    strategies = ("static", "finetune", "replay-distill:id")
    result = run_stream_benchmark(
        dataset="synthetic",
        data=tmp_path / "stream",
        out=out,
        periods=3,
        strategies=strategies,
        config=SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64, item_tower="hybrid"),
        update=UpdateSettings(epochs=1, full_epochs=2, replay_users=10),
        eval_limit=200,
        progress=False,
    )
    written = json.loads(out.read_text())
    assert written["dataset"] == "synthetic" and written["periods"] == 3
    assert set(written["strategies"]) == set(strategies)
    for name, values in written["strategies"].items():
        for key in ("ndcg@10_mean", "hr@10_mean", "update_seconds_median"):
            assert isinstance(values[key], float), (name, key)
        assert len(values["ndcg@10_per_period"]) == 2
        assert all(0 <= v <= 1 for v in values["ndcg@10_per_period"])
        assert values["ndcg@10_mean"] == pytest.approx(np.mean(values["ndcg@10_per_period"]), abs=1e-5)
        assert "cold_hr@10_mean" in values and "forgetting" in values
    static = written["strategies"]["static"]
    assert "verdicts" not in static and "cost_vs_full" not in static
    for name in ("finetune", "replay-distill:id"):
        learner = written["strategies"][name]
        assert len(learner["update_seconds"]) == 1 and learner["update_seconds_median"] > 0
        (verdict,) = learner["verdicts"]  # one guarded update per learned period
        assert verdict["strategy"] == name.split(":")[0] and verdict["learned_events"] > 0
        assert verdict["examples"] > 0 and verdict["promoted"] == (learner["promoted"] == 1)
        assert learner["promoted"] + learner["rejected"] == 1
        assert learner["forgetting"] == 0.0  # one update: the curve has a single point
    # the first period is scored before any update, so static and finetune agree there
    assert static["ndcg@10_per_period"][0] == written["strategies"]["finetune"]["ndcg@10_per_period"][0]
    assert out.with_suffix(".png").stat().st_size > 0
    assert result["strategies"] == written["strategies"]


def test_stream_benchmark_strategies_learn_each_period_side_by_side(
    tiny_stream: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.bench.stream import run_stream_benchmark

    options = {**tiny_stream, "periods": 4, "progress": True}
    run_stream_benchmark(**options, strategies=("finetune", "replay"))
    # Both learn period 1 before either learns period 2: their update times are measured together.
    lines = capsys.readouterr().out.splitlines()
    learned = [
        line.split(":")[0] for line in lines if line.startswith(("finetune", "replay")) and "learned" in line
    ]
    assert learned == ["finetune period 1", "replay period 1", "finetune period 2", "replay period 2"]


def test_cold_only_examples_are_exactly_the_cold_events_of_the_period() -> None:
    split = cut_into_periods(random_log(), 4)
    rng = np.random.default_rng(0)
    for period in range(1, 4):
        everything = split.examples(period, None, rng)
        cold = split.examples(period, None, rng, cold_only=True)
        assert cold.cold.all()
        assert len(cold) == int(everything.cold.sum())
        assert sorted(cold.targets.tolist()) == sorted(everything.targets[everything.cold].tolist())


def test_a_period_without_new_items_scores_its_empty_cold_set() -> None:
    """Scoring no examples (a period that brings no new items has no cold events) reports zeros."""
    from streamrec.models.baselines import MostPopular

    model = MostPopular().fit(TrainingData([np.array([0, 1, 2])], n_items=3))
    empty = Examples([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), 3)
    scores = score_examples(model, empty)
    assert scores["ndcg@10"] == 0.0 and scores["examples"] == 0 and scores["cold_examples"] == 0


def test_run_prequential_equals_a_hand_written_score_then_learn_loop() -> None:
    """The runner scores each period before learning it, for every learner, exactly as a plain loop would."""
    from streamrec.evaluation.prequential import Frozen, run_prequential
    from streamrec.models.baselines import ItemKNN, MostPopular

    split = cut_into_periods(random_log(users=60, items=40, seed=3), 5)

    def examples(period: int) -> dict[str, Examples]:
        return {"all": split.examples(period, None, np.random.default_rng(period))}

    learners: dict[str, Recommender] = {
        "mostpop": MostPopular(),
        "itemknn": ItemKNN(),
        "static": Frozen(ItemKNN()),
    }
    records = run_prequential(split, learners, examples)

    for name, fresh in (("mostpop", MostPopular()), ("itemknn", ItemKNN()), ("static", None)):
        model = fresh or ItemKNN()
        model.fit(dataclasses.replace(split.through(0), learn=None))
        expected = []
        for period in range(1, split.n_periods):
            expected.append(score_examples(model, examples(period)["all"])["ndcg@10"])
            if fresh is not None and period < split.n_periods - 1:
                model.partial_fit(split.through(period))
        assert [r["all"]["ndcg@10"] for r in records[name]] == pytest.approx(expected), name
        learned = [r for r in records[name] if "learn_seconds" in r]
        assert len(learned) == split.n_periods - 2  # the last period is scored, never learned
    # learning changed the learners' scores: the loop above would not catch a runner that never learned
    assert records["itemknn"][-1]["all"]["ndcg@10"] != records["static"][-1]["all"]["ndcg@10"]


def test_stream_benchmark_runs_through_periods_that_bring_no_new_items(
    tiny_stream: dict[str, Any], tmp_path: Path
) -> None:
    """A stream whose later periods only re-use known items (no cold events) runs to the end."""
    from streamrec.bench.stream import run_stream_benchmark

    events = [json.loads(line) for line in (tiny_stream["data"] / "events.jsonl").read_text().splitlines()]
    events.sort(key=lambda e: e["timestamp"])
    first_half = {e["item_id"] for e in events[: len(events) // 2]}
    kept = [e for e in events if e["item_id"] in first_half]
    (tiny_stream["data"] / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    result = run_stream_benchmark(**tiny_stream, strategies=("replay", "mostpop", "itemknn"))
    rows = result["strategies"]
    assert rows["replay"]["cold_hr@10_per_period"][-1] is None  # the last period brought no new item
    assert set(rows) == {"replay", "mostpop", "itemknn"}
    assert len(rows["mostpop"]["ndcg@10_per_period"]) == tiny_stream["periods"] - 1
