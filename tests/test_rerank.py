"""Diversity (maximal marginal relevance) and explanations, alone and through the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving.app import create_app
from streamrec.serving.rerank import because, intra_list_diversity, mmr
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

KEY = "rerank-test-key"
ADMIN = {"X-API-Key": KEY}


def test_mmr_trades_relevance_for_variety() -> None:
    # Candidates 0-3 point one way (and score best), 4-7 another.
    rows = [[1, 0.01 * n] for n in range(4)] + [[0.01 * n, 1] for n in range(4)]
    vectors = np.array(rows, dtype=np.float32)
    scores = np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=np.float32)
    assert mmr(scores, vectors, 4, 0.0).tolist() == [0, 1, 2, 3]  # λ = 0: the ranking as it was
    spread = mmr(scores, vectors, 4, 0.5).tolist()
    assert spread[0] == 0 and {4, 5, 6, 7} & set(spread[:2])  # the other direction comes in second
    assert intra_list_diversity(vectors[spread]) > intra_list_diversity(vectors[[0, 1, 2, 3]]) + 0.3
    assert len(mmr(scores[:3], vectors[:3], 10, 0.5)) == 3  # fewer candidates than k


def test_because_names_the_closest_history_items() -> None:
    history = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    shown = np.array([[0.1, 0.9, 0], [0, 0.2, 1]], dtype=np.float32)
    found = because(shown, history, top=2)
    assert [j for j, _ in found[0]] == [1, 0] and [j for j, _ in found[1]] == [2, 1]
    assert found[0][0][1] == pytest.approx(0.9 / np.hypot(0.1, 0.9), abs=1e-5)
    assert because(shown, np.zeros((0, 3), np.float32)) == [[], []]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("rerank-home")
    stream = generate(StreamConfig(users=40, items=80, events=1600, seed=8))
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
    train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    return home


def test_recommend_explains_and_diversifies_over_http(home: Path) -> None:
    with open_store(home) as store:
        users = sorted({e.event.user_id for e in store.log.read_after(0, 400)})[:8]
        histories = {user: store.log.recent_items(user, 20) for user in users}
    with TestClient(create_app(home, api_key=KEY)) as client:
        runtime = client.app.state.runtime
        loaded = runtime.loaded

        def diversity_of(answer: dict) -> float:
            return intra_list_diversity(runtime.item_vectors(loaded, [e["item_id"] for e in answer["items"]]))

        plain, varied = [], []
        for user in users:
            ranked = client.get(f"/recommend/{user}", params={"k": 8}, headers=ADMIN).json()
            spread = client.get(f"/recommend/{user}", params={"k": 8, "diversity": 0.7}, headers=ADMIN).json()
            assert len(spread["items"]) == 8
            assert ranked["items"][0] == spread["items"][0]  # the best stays first
            assert all(entry["because"] is None for entry in ranked["items"])
            plain.append(diversity_of(ranked))
            varied.append(diversity_of(spread))
        assert np.mean(varied) > np.mean(plain) + 0.05, (plain, varied)

        user = users[0]
        explained = client.get(f"/recommend/{user}", params={"k": 5, "explain": True}, headers=ADMIN).json()
        for entry in explained["items"]:
            assert 1 <= len(entry["because"]) <= 3
            assert all(reason["item_id"] in histories[user] for reason in entry["because"])
        # A new history: the explanations follow it.
        fresh = [i for i in runtime.loaded.items if i not in histories[user]][:3]
        events = [{"user_id": user, "item_id": item, "event_type": "view"} for item in fresh * 7]
        assert client.post("/events", json=events, headers=ADMIN).status_code == 200
        after = client.get(f"/recommend/{user}", params={"k": 5, "explain": True}, headers=ADMIN).json()
        named = {reason["item_id"] for entry in after["items"] for reason in entry["because"]}
        assert named & set(fresh)
        assert after["items"] != explained["items"]

        session = {"items": fresh, "k": 4, "explain": True, "diversity": 0.3}
        answer = client.post("/recommend", json=session, headers=ADMIN).json()
        assert all({r["item_id"] for r in e["because"]} <= set(fresh) for e in answer["items"])
        searched = client.get("/search", params={"q": "topic", "k": 5, "diversity": 0.5}, headers=ADMIN)
        assert searched.status_code == 200 and len(searched.json()["items"]) == 5
        refused = client.get(f"/recommend/{user}", params={"diversity": 2}, headers=ADMIN)
        assert refused.status_code == 422 and "diversity" in refused.text
