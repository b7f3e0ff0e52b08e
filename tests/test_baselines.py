"""Baselines: exact popularity, recency windows, item-KNN far above popularity, incremental = batch."""

import numpy as np
import pytest

from streamrec.evaluation.offline import evaluate, leave_one_out
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.baselines import ItemKNN, MostPopular, RecentPopular

N_ITEMS = 200
DAY = 86400.0


def zipf_probabilities(n: int, exponent: float = 1.0) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


def chain_data(users: int = 300, seed: int = 0) -> TrainingData:
    """Walks i → i+1 (mod N) from a Zipf(0.8)-popular start; 15% of steps jump to a Zipf-random item."""
    rng = np.random.default_rng(seed)
    popular = zipf_probabilities(N_ITEMS, 0.8)
    sequences, timestamps = [], []
    for _ in range(users):
        item = int(rng.choice(N_ITEMS, p=popular))
        walk = []
        for _ in range(int(rng.integers(10, 21))):
            walk.append(item)
            item = (item + 1) % N_ITEMS if rng.random() < 0.85 else int(rng.choice(N_ITEMS, p=popular))
        sequences.append(np.array(walk, dtype=np.int64))
        timestamps.append(np.sort(rng.uniform(0, 100 * DAY, len(walk))))
    return TrainingData(sequences, N_ITEMS, timestamps=timestamps)


def split_each_user(data: TrainingData, seed: int = 1) -> tuple[TrainingData, TrainingData]:
    """Old events (a random prefix per user) and new ones (the rest, plus users that only appear new)."""
    rng = np.random.default_rng(seed)
    users = len(data.sequences)
    old_users = users - 20  # the last 20 users appear only in the new part
    cuts = [int(rng.integers(0, len(s) + 1)) for s in data.sequences[:old_users]]

    def part(arrays: list[np.ndarray] | None, new: bool) -> list[np.ndarray] | None:
        if arrays is None:
            return None
        if new:
            return [a[c:] for a, c in zip(arrays, cuts, strict=False)] + arrays[old_users:]
        return [a[:c] for a, c in zip(arrays, cuts, strict=False)]

    old = TrainingData(part(data.sequences, False) or [], data.n_items, part(data.timestamps, False))
    new = TrainingData(part(data.sequences, True) or [], data.n_items, part(data.timestamps, True))
    return old, new


def test_most_popular_ranks_by_count_exactly() -> None:
    data = chain_data()
    counts = np.bincount(np.concatenate(data.sequences), minlength=N_ITEMS)
    model = MostPopular().fit(data)
    scores = model.score([data.sequences[0], np.array([3])])
    np.testing.assert_array_equal(scores, np.tile(counts.astype(np.float32), (2, 1)))
    items, _ = model.recommend(np.zeros(0, dtype=np.int64), k=N_ITEMS)
    assert np.all(np.diff(counts[items]) <= 0)


def recency_data() -> TrainingData:
    """Items 0..9 were popular for months; items 40, 41, 42 trend in the last week (day 53..60)."""
    rng = np.random.default_rng(2)
    old_popular = zipf_probabilities(10)
    sequences, timestamps = [], []
    for _ in range(50):
        sequences.append(rng.choice(10, 20, p=old_popular))
        timestamps.append(np.sort(rng.uniform(0, 50 * DAY, 20)))
    trending = [40] * 5 + [41] * 4 + [42] * 3
    sequences.append(np.array([43, *trending]))  # 43: just before the window, never counted as recent
    timestamps.append(np.array([52.9 * DAY, *np.linspace(54 * DAY, 60 * DAY, len(trending))]))
    return TrainingData(sequences, N_ITEMS, timestamps=timestamps)


def test_recent_popular_favours_the_recent_window() -> None:
    data = recency_data()
    model = RecentPopular(window_seconds=7 * DAY).fit(data)
    assert model.newest == 60 * DAY
    assert model.recent[[40, 41, 42, 43]].tolist() == [5, 4, 3, 0]
    assert model.recent[:10].sum() == 0
    items, _ = model.recommend(np.zeros(0, dtype=np.int64), k=6)
    total = np.bincount(np.concatenate(data.sequences), minlength=N_ITEMS)
    assert items[:3].tolist() == [40, 41, 42]
    # with no recent events, all-time popularity breaks the ties
    assert items[3:].tolist() == np.argsort(-total[:10], kind="stable")[:3].tolist()
    assert total[0] > total[40]  # the old favourite really is more popular all-time


def test_recent_popular_without_timestamps_uses_each_users_newest_events() -> None:
    rng = np.random.default_rng(3)
    old_popular = zipf_probabilities(10)
    sequences = [
        np.concatenate([rng.choice(10, 18, p=old_popular), [40, 41 if u % 3 else 40]]) for u in range(30)
    ]
    data = TrainingData(sequences, N_ITEMS)
    model = RecentPopular(window_fraction=0.1).fit(data)
    assert model.recent.sum() == 2 * 30  # the newest 10% of 20 events per user
    items, _ = model.recommend(np.zeros(0, dtype=np.int64), k=3)
    assert items[:2].tolist() == [40, 41]
    assert items[2] == 0  # then all-time popularity


def test_item_knn_beats_popularity_by_a_wide_margin() -> None:
    split = leave_one_out(chain_data())
    results = {}
    for name, model in [("pop", MostPopular()), ("recent", RecentPopular()), ("knn", ItemKNN())]:
        model.fit(split.train)
        results[name] = evaluate(model, split.test_histories, split.test_targets)["ndcg@10"]
    print("leave-one-out test NDCG@10:", {k: round(v, 4) for k, v in results.items()})
    assert results["knn"] > 0.5
    assert results["knn"] > 3 * results["pop"]


@pytest.mark.parametrize("make", [MostPopular, ItemKNN, RecentPopular])
@pytest.mark.parametrize("timed", [True, False])
def test_partial_fit_on_new_events_equals_fit_on_all(make: type[Recommender], timed: bool) -> None:
    data = chain_data(120, seed=4)
    if not timed:
        data = TrainingData(data.sequences, data.n_items)
    old, new = split_each_user(data)
    batch = make().fit(data)
    incremental = make().fit(old)
    incremental.partial_fit(new)  # type: ignore[attr-defined]
    histories = [*data.sequences[:50], np.zeros(0, dtype=np.int64)]
    np.testing.assert_array_equal(incremental.score(histories), batch.score(histories))


@pytest.mark.parametrize("make", [MostPopular, ItemKNN, RecentPopular])
def test_partial_fit_grows_the_catalogue(make: type[Recommender]) -> None:
    old = TrainingData([np.array([0, 1, 2]), np.array([1, 2])], n_items=3)
    new = TrainingData([np.array([3, 4]), np.array([]), np.array([4, 3])], n_items=5)
    together = TrainingData([np.array([0, 1, 2, 3, 4]), np.array([1, 2]), np.array([4, 3])], n_items=5)
    incremental = make().fit(old)
    incremental.partial_fit(new)  # type: ignore[attr-defined]
    assert incremental.n_items == 5
    histories = [np.array([2]), np.array([0, 3])]
    np.testing.assert_array_equal(incremental.score(histories), make().fit(together).score(histories))


@pytest.mark.parametrize("make", [MostPopular, ItemKNN, RecentPopular])
def test_score_shapes_dtypes_and_empty_histories(make: type[Recommender]) -> None:
    data = chain_data(60, seed=5)
    model = make().fit(data)
    assert model.n_items == N_ITEMS
    empty = np.zeros(0, dtype=np.int64)
    scores = model.score([data.sequences[0], empty, np.array([7])])
    assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    assert model.score([]).shape == (0, N_ITEMS)
    # an empty history falls back to popularity order
    counts = np.bincount(np.concatenate(data.sequences), minlength=N_ITEMS)
    items, _ = model.recommend(empty, k=N_ITEMS)
    if make is not RecentPopular:
        assert np.all(np.diff(counts[items]) <= 0)
    assert len(items) == N_ITEMS


def test_item_knn_keeps_top_neighbours_and_follows_the_chain() -> None:
    model = ItemKNN(neighbors=5).fit(chain_data())
    per_row = np.diff(model.similarity.indptr)
    assert per_row.max() <= 5
    # what follows an item is its strongest neighbour (forward counts fully, backward at half)
    best = np.array([model.similarity[[i]].toarray()[0].argmax() for i in range(20)])
    assert np.mean(best == (np.arange(20) + 1) % N_ITEMS) >= 0.9
    items, _ = model.recommend(np.array([10, 11, 12]), k=1)
    assert items.tolist() == [13]
