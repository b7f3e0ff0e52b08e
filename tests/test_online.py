"""Impressions and online metrics: every answer is recorded, events that send its request id back count."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.data.shoppers import Shoppers
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.evaluation.online import Ratio, online_metrics, outcomes
from streamrec.events import Event, EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving.app import create_app
from streamrec.store import Impression, open_store
from streamrec.store.base import LoggedEvent
from streamrec.training.continual import train_and_register

KEY = "online-test-key"
ADMIN = {"X-API-Key": KEY}


def logged(
    offset: int, user: str, item: str, kind: str, ts: float, request_id: str | None = None
) -> LoggedEvent:
    context = {"request_id": request_id} if request_id else None
    return LoggedEvent(offset, Event(user, item, kind, ts, context=context))


def test_outcomes_count_attributed_clicks_conversions_and_next_item_hits() -> None:
    shown = [
        Impression("r1", 100.0, "u1", "v1", "recommend", ("a", "b")),
        Impression("r2", 200.0, "u1", "v1", "recommend", ("c", "d")),
        Impression("r3", 100.0, "u2", "v2", "recommend", ("a", "e")),
        Impression("r4", 100.0, "u3", "v2", "recommend", ("f",)),
    ]
    events = [
        logged(1, "u1", "b", "click", 110.0, "r1"),  # click on a shown item: r1 clicked, and hit
        logged(2, "u1", "b", "purchase", 120.0, "r1"),  # r1 converted
        logged(3, "u2", "z", "click", 130.0, "r3"),  # names r3 but an item it did not show: no click
        logged(4, "u2", "e", "view", 140.0),  # u2's next event after r3 was z: no hit either
        logged(5, "u1", "c", "click", 99_999.0, "r2"),  # after the window: not counted
        logged(6, "u3", "f", "view", 150.0),  # not attributed, but the next item and shown: a hit
    ]
    groups = outcomes(shown, events, click_types=["click"], conversion_types=["purchase"], window=3600)
    v1, v2 = groups["v1"].summary(), groups["v2"].summary()
    assert (v1["impressions"], v1["users"], v1["clicks"], v1["conversions"]) == (2, 1, 1, 1)
    assert v1["ctr"]["rate"] == 0.5 and v1["hit_rate"]["rate"] == 0.5
    assert (v2["impressions"], v2["users"], v2["clicks"]) == (2, 2, 0)
    assert v2["hit_rate"]["rate"] == 0.5


def test_a_ratio_over_users_has_the_delta_method_interval() -> None:
    # Three users, 10 impressions each, 1, 2 and 3 clicks: 6/30, variance from the users' spread.
    ratio = Ratio.over_users([1, 2, 3], [10, 10, 10])
    assert ratio.rate == pytest.approx(0.2)
    # residuals -1, 0, 1 → sum of squares 2, / 30² · 3/2
    assert ratio.stderr == pytest.approx(math.sqrt(2 / 900 * 1.5))
    low, high = ratio.interval()
    assert low < 0.2 < high
    assert Ratio.over_users([1], [4]).interval() == (0.0, 1.0)  # one user: no spread to judge by


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("online-home")
    stream = generate(StreamConfig(users=30, items=40, events=900, seed=3))
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=False)
    return home


def test_every_answer_is_recorded_and_attributed_events_count_for_it(home: Path) -> None:
    with open_store(home) as store:
        users = sorted({e.event.user_id for e in store.log.read_after(0, 200)})[:5]
    with TestClient(create_app(home, api_key=KEY)) as client:
        answers = [client.get(f"/recommend/{user}", headers=ADMIN).json() for user in users]
        answers.append(client.post("/recommend", json={"items": ["nope"], "k": 3}, headers=ADMIN).json())
        answers.append(client.get("/search", params={"q": "topic words", "k": 4}, headers=ADMIN).json())
        request_ids = [answer["request_id"] for answer in answers]
        assert len(set(request_ids)) == len(answers)
        first = answers[0]
        clicked = first["items"][0]["item_id"]
        events = [
            {
                "user_id": users[0],
                "item_id": clicked,
                "event_type": "click",
                "request_id": first["request_id"],
            },
            {
                "user_id": users[0],
                "item_id": clicked,
                "event_type": "purchase",
                "context": {"request_id": first["request_id"], "page": "cart"},
            },
        ]
        assert client.post("/events", json=events, headers=ADMIN).status_code == 200
        version = first["model_version"]
    # The server has stopped: its recorder wrote what was left.
    with open_store(home) as store:
        for answer in answers:
            stored = store.impressions.get(answer["request_id"])
            assert stored is not None and stored.version == answer["model_version"]
            assert list(stored.items) == [entry["item_id"] for entry in answer["items"]]
        assert [store.impressions.get(r).surface for r in request_ids[-2:]] == ["session", "search"]
        figures = online_metrics(store, 0, 2e10)[version]
    assert figures["impressions"] == len(answers) and figures["clicks"] == 1 and figures["conversions"] == 1
    assert figures["ctr"]["rate"] == pytest.approx(1 / len(answers))


def test_recording_can_be_turned_off_and_answers_still_carry_a_request_id(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMREC_SERVER__RECORD_IMPRESSIONS", "false")
    with open_store(home) as store:
        before = len(store.impressions)
        user = store.log.read_after(0, 1)[0].event.user_id
    with TestClient(create_app(home, api_key=KEY)) as client:
        answer = client.get(f"/recommend/{user}", headers=ADMIN).json()
    assert len(answer["request_id"]) == 32
    with open_store(home) as store:
        assert len(store.impressions) == before and store.impressions.get(answer["request_id"]) is None


def test_simulated_shoppers_click_what_matches_their_taste() -> None:
    stream = generate(StreamConfig(users=50, items=80, events=2000, seed=6))
    shoppers = Shoppers(stream.truth, seed=1)
    by_topic: dict[int, list[str]] = {}
    for item, topic in stream.truth["item_topic"].items():
        by_topic.setdefault(topic, []).append(item)
    liked = disliked = 0
    for user in shoppers.users:
        preference = shoppers.preferences[user]
        best, worst = by_topic[int(preference.argmax())][:10], by_topic[int(preference.argmin())][:10]
        liked += sum(r.event_type == "click" for r in shoppers.react(user, best))
        disliked += sum(r.event_type == "click" for r in shoppers.react(user, worst))
    assert liked > 5 * max(disliked, 1)
    answer = {"request_id": "r1", "items": [{"item_id": item} for item in best]}
    events = shoppers.respond(shoppers.users[-1], answer)
    assert all(e["request_id"] == "r1" and e["item_id"] in best for e in events)
