"""Team-draft interleaving: the merge, the credit of clicks, the judgement, and over HTTP."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamrec import experiments
from streamrec.cli import main
from streamrec.config import OnlineSettings, Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.evaluation.interleaving import interleave_answers, preferences, team_draft
from streamrec.events import Event, EventSchema
from streamrec.experiments import INTERLEAVED, ExperimentError
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.registry import Registry
from streamrec.serving.app import create_app
from streamrec.store import Impression, open_store
from streamrec.store.base import LoggedEvent
from streamrec.training.continual import train_and_register

KEY = "interleaving-test-key"
ADMIN = {"X-API-Key": KEY}


def test_team_draft_shares_the_list_fairly_and_keeps_each_rankers_order() -> None:
    a = [f"i{n}" for n in range(20)]
    b = [f"i{n}" for n in (3, 0, 11, 12, 13, 1, 14, 15, 16, 17)]
    for seed in range(50):
        merged = team_draft(a, b, 10, random.Random(seed))
        items = [item for item, _ in merged]
        assert len(items) == 10 == len(set(items))
        teams = "".join(team for _, team in merged)
        for n in range(2, 11, 2):  # after every round both teams hold as many positions
            assert teams[:n].count("a") == n // 2
        for team, ranking in (("a", a), ("b", b)):
            picked = [item for item, t in merged if t == team]
            assert picked == sorted(picked, key=ranking.index)  # each picks in its own order
    firsts = {team_draft(a, b, 2, random.Random(seed))[0][1] for seed in range(50)}
    assert firsts == {"a", "b"}  # the coin decides who picks first
    assert [item for item, _ in team_draft(a[:3], a[:3], 10)] == a[:3]  # used up: shorter list
    with_b_only = team_draft([], ["x", "y"], 5)
    assert with_b_only == [("x", "b"), ("y", "b")]


def test_interleaved_answers_keep_each_entry_and_name_both_versions() -> None:
    def answer(version: str, items: list[str]) -> dict:
        return {
            "user_id": "u1",
            "model_version": version,
            "source": "model",
            "items": [{"item_id": i, "score": float(-n), "version": version} for n, i in enumerate(items)],
        }

    merged, teams = interleave_answers(answer("v1", ["x", "y", "z"]), answer("v2", ["y", "w"]), 4)
    assert merged["model_version"] == "v1+v2" and merged["source"] == "model" and len(teams) == 4
    for entry, team in zip(merged["items"], teams, strict=True):
        assert entry["version"] == {"a": "v1", "b": "v2"}[team]  # the entry of the ranker that placed it


def logged(offset: int, user: str, item: str, ts: float, request_id: str, kind: str = "click") -> LoggedEvent:
    return LoggedEvent(offset, Event(user, item, kind, ts, context={"request_id": request_id}))


def test_clicks_credit_the_team_that_placed_the_item() -> None:
    shown = [
        Impression("r1", 100.0, "u1", "v1+v2", "recommend", ("p", "q", "s"), "x0001/ab", "abb"),
        Impression("r2", 200.0, "u1", "v1+v2", "recommend", ("p", "q"), "x0001/ab", "ba"),
        Impression("r3", 100.0, "u2", "v1+v2", "recommend", ("p", "q"), "x0001/ab", "ab"),
        Impression("r4", 100.0, "u3", "v1", "recommend", ("p",), "x0001/a"),  # not interleaved: skipped
    ]
    events = [
        logged(1, "u1", "q", 110.0, "r1"),  # b
        logged(2, "u1", "s", 111.0, "r1"),  # b: r1 won by b, 2 events to 0
        logged(3, "u1", "p", 210.0, "r2"),  # b placed p in r2
        logged(4, "u1", "q", 211.0, "r2"),  # a: r2 a tie
        logged(5, "u2", "z", 120.0, "r3"),  # an item r3 did not show: no credit
        logged(6, "u2", "p", 99_999.0, "r3"),  # after the window: no credit
        logged(7, "u2", "p", 121.0, "r3", kind="view"),  # not a click
    ]
    users = preferences(shown, events, event_types=["click"], window=3600)
    assert set(users) == {"u1", "u2"}
    u1, u2 = users["u1"], users["u2"]
    assert (u1.answers, u1.credited, u1.wins_a, u1.wins_b, u1.events_a, u1.events_b) == (2, 2, 0, 1, 1, 3)
    assert (u2.answers, u2.credited, u2.wins_a, u2.wins_b) == (1, 0, 0, 0)


def test_an_interleaved_experiment_finds_the_ranker_users_prefer(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    for _ in range(2):
        registry.add(lambda folder: None, ["i1"], {"status": "candidate", "trained_through_offset": 0})
    with pytest.raises(ExperimentError, match="clicks or conversions, not hits"):
        experiments.start(registry, "v0001", "v0002", method="interleave", metric="hits")
    rng = np.random.default_rng(4)
    with open_store(tmp_path) as store:
        for prefer_b, expected in ((0.5, "undecided"), (0.7, "b")):
            started = experiments.start(registry, "v0001", "v0002", method="interleave")
            now = time.time()
            impressions, events = [], []
            for u in range(300):
                for n in range(5):
                    request_id = f"{started.id}-{u}-{n}"
                    label = started.label(INTERLEAVED)
                    shown = Impression(request_id, now, f"u{u}", "v+w", "recommend", ("p", "q"), label, "ab")
                    impressions.append(shown)
                    if rng.random() < 0.5:  # a click on b's item with probability prefer_b
                        item = "q" if rng.random() < prefer_b else "p"
                        context = {"request_id": request_id}
                        events.append(Event(f"u{u}", item, "click", now + 1, context=context))
            store.impressions.append(impressions)
            store.log.append(events)
            judgement = experiments.judge(started, store, OnlineSettings())
            assert judgement["method"] == "interleave" and judgement["decision"] == expected
            assert judgement["arms"]["a"]["impressions"] == 1500
            wins = judgement["arms"]["b"]["wins"]["rate"] - judgement["arms"]["a"]["wins"]["rate"]
            assert judgement["difference"] == pytest.approx(wins, abs=1e-5)
            assert judgement["difference"] == pytest.approx(2 * prefer_b - 1, abs=0.08)
            experiments.stop(registry, judgement)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("interleaving-home")
    stream = generate(StreamConfig(users=30, items=40, events=900, seed=5))
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    settings = Home(home, Settings())
    for seed in (1, 2):  # two versions that rank differently
        config = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64, seed=seed)
        train_and_register(settings, config, text_model="all-MiniLM-L6-v2", progress=False)
    return home


def test_an_interleaved_experiment_over_http_merges_both_versions_and_credits_clicks(home: Path) -> None:
    with open_store(home) as store:
        users = sorted({e.event.user_id for e in store.log.read_after(0, 300)})[:6]
    with TestClient(create_app(home, api_key=KEY)) as client:
        body = {"a": "v0001", "b": "v0002", "method": "interleave"}
        started = client.post("/admin/ab", json=body, headers=ADMIN)
        assert started.status_code == 201 and started.json()["method"] == "interleave"
        answers = [client.get(f"/recommend/{user}", params={"k": 6}, headers=ADMIN).json() for user in users]
        for answer in answers:
            assert answer["arm"] == f"{started.json()['id']}/ab" and answer["model_version"] == "v0001+v0002"
            assert len(answer["items"]) == 6
        clicks = [
            {"user_id": user, "item_id": answer["items"][0]["item_id"], "event_type": "click",
             "request_id": answer["request_id"]}
            for user, answer in zip(users, answers, strict=True)
        ]  # fmt: skip
        assert client.post("/events", json=clicks, headers=ADMIN).status_code == 200
        client.app.state.impressions.flush()
        status = client.get("/admin/ab", headers=ADMIN).json()
        assert client.post("/admin/ab/stop", json={"promote": "none"}, headers=ADMIN).status_code == 200
    with open_store(home) as store:
        firsts = [store.impressions.get(answer["request_id"]).teams[0] for answer in answers]
    assert status["method"] == "interleave"
    for arm in ("a", "b"):  # each first item's click credited its team
        assert status["arms"][arm]["clicks"] == firsts.count(arm)
        assert status["arms"][arm]["impressions"] == len(users)


def test_the_ab_command_starts_and_reports_an_interleaved_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "recs"
    registry = Registry(home / "models")
    for _ in range(2):
        registry.add(lambda folder: None, ["i1"], {"status": "candidate", "trained_through_offset": 0})
    registry.promote("v0001")
    assert main(["ab", "start", "--home", str(home), "--b", "v0002", "--method", "interleave"]) == 0
    assert "b = v0002 interleaved in every answer" in capsys.readouterr().out
    assert main(["ab", "status", "--home", str(home)]) == 0
    printed = capsys.readouterr().out
    assert "interleave, metric clicks" in printed and "wins [95 % CI]" in printed
    assert main(["ab", "list", "--home", str(home)]) == 0
    assert "interleave" in capsys.readouterr().out
