"""Store → text-aware model → registry → runtime, on the synthetic stream with planted topics."""

from pathlib import Path

import numpy as np
import pytest

from streamrec.config import Settings, UpdateSettings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.evaluation.offline import evaluate
from streamrec.events import EventSchema
from streamrec.home import MODELS_DIR, TEXT_CACHE_FILE, Home
from streamrec.items import validate_item
from streamrec.models.baselines import MostPopular
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.registry import Registry
from streamrec.serving.runtime import Runtime
from streamrec.store import open_store
from streamrec.training.continual import train_and_register
from streamrec.training.fit import VALIDATION_MIN_USERS, VALIDATION_SCORES, prepare, validation_users

HELD_OUT_PER_TOPIC = 3
SMALL_MODEL = SASRecConfig(hidden=32, layers=1, max_len=30, epochs=12, patience=20, lr=3e-3, batch_size=64)


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    """A home whose catalogue has items that never appear in any event (held out by topic)."""
    stream = generate(StreamConfig(users=150, items=200, events=8000, topics=4, drift_at=(), seed=11))
    truth = stream.truth
    by_topic: dict[int, list[str]] = {}
    for item in truth["new_items"]:
        by_topic.setdefault(truth["item_topic"][item], []).append(item)
    held_out = [item for items in by_topic.values() for item in items[:HELD_OUT_PER_TOPIC]]
    home = tmp_path_factory.mktemp("home")
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(e) for e in stream.events() if e["item_id"] not in held_out])
    # A plain fit of every event (tests/test_tuning.py covers the fit that tunes the updates).
    plain = Settings(update=UpdateSettings(tune=False))
    train_and_register(Home(home, plain), SMALL_MODEL, text_model="all-MiniLM-L6-v2", progress=False)
    return home, truth, held_out


def test_registers_a_live_version_with_offset_and_metrics(trained_home: tuple[Path, dict, list[str]]) -> None:
    home, _, _ = trained_home
    registry = Registry(home / MODELS_DIR)
    (version,) = registry.versions()
    assert registry.live() == version.version == "v0001"
    assert version.status == "live"
    with open_store(home) as store:
        assert version.trained_through_offset == store.log.last_offset()
    assert version.metrics["ndcg@10"] > 0
    assert len(registry.items("v0001")) == 200  # held-out catalogue items are in the vocabulary
    assert set(version.timings) == {"train_seconds"}  # a fit is timed, never priced
    # the epochs it ran (all: patience outlasts them) go with it, for an update's budget to count
    assert SASRec.load(registry.path("v0001")).fit_epochs == SMALL_MODEL.epochs
    assert (home / TEXT_CACHE_FILE).exists()  # item texts were encoded through the home's cache


def test_unseen_items_are_scored_from_text_near_their_topic(
    trained_home: tuple[Path, dict, list[str]],
) -> None:
    """For each user, held-out items of the user's own topic outscore held-out items of other topics."""
    home, truth, held_out = trained_home
    with Runtime.open(home) as runtime:
        loaded = runtime.loaded
        cold_codes = np.array([loaded.index[item] for item in held_out])
        cold_topics = np.array([truth["item_topic"][item] for item in held_out])
        users = sorted(truth["user_main_topic"])[:100]
        histories = [
            np.array([loaded.index[i] for i in runtime.store.log.recent_items(u, 30)], dtype=np.int64)
            for u in users
        ]
        scores = loaded.model.score(histories)[:, cold_codes]
    aucs = []
    for user, row in zip(users, scores, strict=True):
        topic = truth["user_main_topic"][user][-1]
        own, other = row[cold_topics == topic], row[cold_topics != topic]
        aucs.append((own[:, None] > other[None, :]).mean())
    assert np.mean(aucs) > 0.75


def test_recommendations_follow_new_events_without_retraining(
    trained_home: tuple[Path, dict, list[str]],
) -> None:
    home, _, _ = trained_home
    with Runtime.open(home) as runtime:
        before = runtime.recommend("u3", k=5)
        assert before["source"] == "model" and before["model_version"] == "v0001"
        assert len(before["items"]) == 5 and all(entry["title"] for entry in before["items"])
        clicked = before["items"][0]["item_id"]
        runtime.store.log.append(
            [EventSchema().validate({"user_id": "u3", "item_id": clicked, "event_type": "click"})]
        )
        after = runtime.recommend("u3", k=5)
        assert clicked not in [entry["item_id"] for entry in after["items"]]
        newcomer = runtime.recommend("someone-new", k=3)
        assert newcomer["source"] == "trending" and len(newcomer["items"]) == 3


def test_beats_most_popular_by_a_wide_margin_on_the_synthetic_stream(
    trained_home: tuple[Path, dict, list[str]],
) -> None:
    """Same held-out items (each user's last), same full ranking: the sequence model vs popularity."""
    home, _, _ = trained_home
    with open_store(home) as store:
        data = prepare(store).data
    drops = [1 if len(s) >= 2 else 0 for s in data.sequences]
    held = [u for u, d in enumerate(drops) if d]
    train = data.without_last(drops)
    histories = [train.sequences[u] for u in held]
    targets = np.array([data.sequences[u][-1] for u in held])
    popular = evaluate(MostPopular().fit(train), histories, targets)["ndcg@10"]
    model = Registry(home / MODELS_DIR).get("v0001").metrics["ndcg@10"]
    assert model > 2 * popular


def test_a_large_catalogue_validates_on_a_fixed_sample_of_users() -> None:
    held = list(range(0, 80_000, 2))  # 40,000 users with a last item to hold out
    assert validation_users(held, 12_000) == held  # Beauty-sized: every user ranks
    sample = validation_users(held, 1_400_000)
    assert len(sample) == VALIDATION_MIN_USERS  # 2^30 scores / 1.4 M items is under the floor
    assert set(sample) <= set(held) and sample == sorted(sample)
    assert validation_users(held, 1_400_000) == sample  # the same users at every epoch and refit
    assert len(validation_users(held, 100_000)) == VALIDATION_SCORES // 100_000
