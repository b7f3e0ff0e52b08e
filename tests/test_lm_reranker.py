"""The LM reranker: a cross-encoder correction on the model's top candidates, trained, shipped, served."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from streamrec.config import ModelSettings, Settings, UpdateSettings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.reranker import CANDIDATES, LMReranker, Reranked, top_candidates
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving.runtime import Runtime
from streamrec.store import open_store
from streamrec.training.continual import run_update, train_and_register

N = 60
TEXTS = [f"{'red apple fruit' if i % 2 == 0 else 'blue ocean water'} item {i}" for i in range(N)]


class Noise:
    """A recommender that knows nothing: fixed random scores (so the text is the only signal)."""

    n_items = N

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        seeds = [int(h.sum()) for h in histories]
        return np.stack([np.random.default_rng(s).normal(size=N) for s in seeds]).astype(np.float32)


def colour_examples(users: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Each user keeps to one colour: five items of it, then a sixth as the target."""
    rng = np.random.default_rng(seed)
    histories, targets = [], []
    for user in range(users):
        items = rng.choice(np.arange(user % 2, N, 2), size=6, replace=False)
        histories.append(items[:5])
        targets.append(items[5])
    return histories, np.array(targets, dtype=np.int64)


def test_an_untrained_reranker_keeps_the_models_ranking() -> None:
    histories, _ = colour_examples(6)
    model = Noise()
    reranked = Reranked(model, LMReranker("all-MiniLM-L6-v2"), TEXTS).score(histories)
    for before, after, history in zip(model.score(histories), reranked, histories, strict=True):
        candidates = top_candidates(before, history, CANDIDATES)
        assert len(candidates) == CANDIDATES and not set(candidates) & set(history)
        np.testing.assert_allclose(after[candidates], before[candidates], atol=1e-6)  # zero correction
        others = np.setdiff1d(np.arange(N), candidates)
        assert after[others].max() < after[candidates].min()  # the candidates stay on top …
        assert (np.argsort(-after[others]) == np.argsort(-before[others])).all()  # … the rest in order


def test_it_learns_what_the_text_says_checks_itself_and_reloads(tmp_path: Path) -> None:
    histories, targets = colour_examples(60)
    reranker = LMReranker("all-MiniLM-L6-v2").fit(Noise(), histories, targets, TEXTS, minutes=2, lr=3e-3)
    report = reranker.report
    assert report["learned"] == 48 and report["check_examples"] == 12, report
    # The model alone ranks at random; the reranker learned that users keep to their colour.
    assert report["check_ndcg@10_with"] > report["check_ndcg@10_without"], report
    assert reranker.enabled
    reranker.save(tmp_path)
    loaded = LMReranker.load(tmp_path)
    assert loaded is not None and loaded.report == report
    base = np.zeros(4, dtype=np.float32)
    texts = [TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[3]]
    history = [TEXTS[i] for i in histories[0]]
    np.testing.assert_allclose(loaded.rescore(base, history, texts), reranker.rescore(base, history, texts))
    assert LMReranker.load(tmp_path / "absent") is None


def test_too_few_examples_leave_it_off() -> None:
    histories, targets = colour_examples(5)
    reranker = LMReranker("all-MiniLM-L6-v2").fit(Noise(), histories, targets, TEXTS, minutes=1)
    assert not reranker.enabled and "fewer than" in reranker.report["reason"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("lm-rerank-home")
    stream = generate(StreamConfig(users=40, items=80, events=1600, seed=8))
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([EventSchema().validate(event) for event in stream.events()])
    return home


SETTINGS = Settings(
    model=ModelSettings(rerank_minutes=0.1),
    update=UpdateSettings(tune_min_examples=10, min_events=10),
)


def test_train_and_update_fit_it_on_events_the_version_did_not_learn(home: Path) -> None:
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
    info = train_and_register(
        Home(home, SETTINGS), config, text_model="all-MiniLM-L6-v2", rerank="lm", progress=False
    )
    # The tuned fit learned through the tuning update's holdout: those events taught the reranker.
    with open_store(home) as store:
        unseen = store.log.last_offset() - info.trained_through_offset
    assert unseen > 0 and info.reranker["examples"] == unseen, (unseen, info.reranker)
    assert info.reranker["learned"] > 0
    folder = Home(home, SETTINGS).registry.path(info.version)
    assert (folder / "reranker.json").exists() == info.reranker["enabled"]

    stream = generate(StreamConfig(users=40, items=80, events=400, seed=9))
    with open_store(home) as store:
        store.log.append([EventSchema().validate(event) for event in stream.events()])
    outcome = run_update(Home(home, Settings(update=SETTINGS.update)), progress=False)
    assert outcome.version is not None
    assert outcome.version.reranker["learned"] > 0  # the parent had one: the update keeps learning it


class Reverse:
    """A reranker double that turns the candidates' order around."""

    def rescore(self, base: np.ndarray, history_texts: list[str], candidate_texts: list[str]) -> np.ndarray:
        assert history_texts and len(candidate_texts) == len(base)
        return -np.asarray(base, dtype=np.float32)


def test_the_server_answers_from_the_reranked_candidates(home: Path) -> None:
    with Runtime.open(home) as runtime:
        user = runtime.store.log.read_after(0, 1)[0].event.user_id
        plain = dataclasses.replace(runtime.loaded, reranker=None)
        runtime.loaded = plain
        wide = runtime.recommend(user, k=CANDIDATES)["items"]
        runtime.loaded = dataclasses.replace(plain, reranker=Reverse())
        reranked = runtime.recommend(user, k=10)
    assert reranked["source"] == "model"
    assert [e["item_id"] for e in reranked["items"]] == [e["item_id"] for e in wide[::-1][:10]]
