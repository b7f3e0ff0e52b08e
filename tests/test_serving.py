"""The HTTP API on a small trained home: reads, writes, search, admin, hot-swap, metrics, real HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamrec.config import Settings
from streamrec.data.synthetic import TOPIC_VOCABULARY, StreamConfig, SyntheticStream, generate
from streamrec.events import EventSchema
from streamrec.home import MODELS_DIR, Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.registry import Registry
from streamrec.serving.app import create_app
from streamrec.serving.runtime import RecommendRequest, Runtime
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

STREAM = StreamConfig(users=60, items=80, events=2000, seed=5)
SMALL_MODEL = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
TEXT_MODEL = "all-MiniLM-L6-v2"
KEY = "test-admin-key"
ADMIN = {"X-API-Key": KEY}
WRITE_KEY = "test-write-key"
WRITER = {"X-API-Key": WRITE_KEY}


@pytest.fixture(scope="module")
def stream() -> SyntheticStream:
    return generate(STREAM)


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory, stream: SyntheticStream) -> Path:
    home = tmp_path_factory.mktemp("serving-home")
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    train_and_register(Home(home, Settings()), SMALL_MODEL, text_model=TEXT_MODEL, progress=False)
    return home


@pytest.fixture(scope="module")
def client(built_home: Path) -> Iterator[TestClient]:
    """A read-only client on the shared home (tests that write use ``home`` copies)."""
    with TestClient(create_app(built_home, api_key=KEY)) as test_client:
        yield test_client


def topic_users(stream: SyntheticStream, topic: int) -> list[str]:
    """Users whose current (last-phase) main topic is ``topic``."""
    return [user for user, mains in stream.truth["user_main_topic"].items() if mains[-1] == topic]


def topic_query(stream: SyntheticStream, topic: int) -> str:
    return " ".join(TOPIC_VOCABULARY[stream.truth["topics"][topic]][:4])


def ids(response: httpx.Response) -> list[str]:
    return [entry["item_id"] for entry in response.json()["items"]]


# ----- recommendations -----


def test_recommend_known_user_from_the_model_and_unknown_user_from_trending(client: TestClient) -> None:
    known = client.get("/recommend/u3", params={"k": 5})
    assert known.status_code == 200
    body = known.json()
    assert body["user_id"] == "u3" and body["model_version"] == "v0001" and body["source"] == "model"
    assert len(body["items"]) == 5 and all(entry["title"] for entry in body["items"])
    unknown = client.get("/recommend/nobody-ever", params={"k": 3}).json()
    assert unknown["source"] == "trending" and len(unknown["items"]) == 3


def test_recommend_filters_by_category(client: TestClient, stream: SyntheticStream) -> None:
    category = {record["item_id"]: record["category"] for record in stream.items}
    response = client.get("/recommend/u3", params={"k": 4, "category": "book"})
    assert response.json()["source"] == "model"
    assert ids(response) and all(category[item] == "book" for item in ids(response))
    trending = client.get("/recommend/nobody-ever", params={"k": 4, "category": "book"})
    assert ids(trending) and all(category[item] == "book" for item in ids(trending))


def test_a_profile_counts_what_the_user_did_and_where_the_model_puts_them(
    client: TestClient, stream: SyntheticStream
) -> None:
    category = {record["item_id"]: record["category"] for record in stream.items}
    mine = [e for e in stream.events() if e["user_id"] == "u3"][-200:]
    body = client.get("/users/u3/profile").json()
    assert body["events_read"] == len(mine) and body["taste"]["model_version"] == "v0001"
    assert body["event_types"] == dict(Counter(e["event_type"] for e in mine).most_common())
    top, share = body["categories"][0]["category"], body["categories"][0]["share"]
    counts = Counter(category[e["item_id"]] for e in mine)
    assert share == pytest.approx(counts[top] / len(mine), abs=1e-4) and counts[top] == max(counts.values())
    assert [r["item_id"] for r in body["recent_items"]] == [e["item_id"] for e in mine[::-1][:10]]
    shares = body["taste"]["categories"]
    assert shares and sum(s["share"] for s in shares) <= 1.0 + 1e-6 and body["taste"]["state_norm"] > 0
    missing = client.get("/users/nobody-ever/profile")
    assert missing.status_code == 404 and "nobody-ever" in missing.json()["detail"]


def test_recommending_together_answers_as_one_at_a_time(built_home: Path, stream: SyntheticStream) -> None:
    """The micro-batcher's path (one forward pass for many users) gives each the answer it would get alone."""
    category = stream.items[0]["category"]
    requests = [
        RecommendRequest("u1"),
        RecommendRequest("u2", k=3),
        RecommendRequest("u3", exclude_seen=False),
        RecommendRequest("nobody-at-all"),  # trending
        RecommendRequest("u4", category=category),  # scored apart: category walk
        RecommendRequest("u1", k=5),
    ]
    with Runtime.open(built_home) as alone, Runtime.open(built_home) as together:
        expected = [alone.recommend_many([r])[0] for r in requests]
        answers = together.recommend_many(requests)
        assert together.recommend_many(requests) == answers  # the second time, from the cache
    assert [a["source"] for a in answers] == ["model", "model", "model", "trending", "model", "model"]
    for answer, wanted in zip(answers, expected, strict=True):
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in wanted["items"]]
        scores = [i["score"] for i in wanted["items"]]
        assert [i["score"] for i in answer["items"]] == pytest.approx(scores, abs=1e-4)


def test_session_recommendations_ignore_unknown_items(client: TestClient) -> None:
    session = client.post("/recommend", json={"items": ["i1", "i2", "no-such-item"], "k": 5}).json()
    assert session["user_id"] is None and session["source"] == "model"
    assert len(session["items"]) == 5 and not {"i1", "i2"} & set(ids_of(session))
    nothing_known = client.post("/recommend", json={"items": ["no-such-item"], "k": 3}).json()
    assert nothing_known["source"] == "trending" and len(nothing_known["items"]) == 3
    assert client.post("/recommend", json={"items": [], "k": 0}).status_code == 422


def ids_of(body: dict) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


def test_similar_items_by_model_embeddings_and_404_for_unknown(client: TestClient) -> None:
    similar = client.get("/items/i1/similar", params={"k": 5})
    assert similar.status_code == 200 and similar.json()["source"] == "model"
    assert len(ids(similar)) == 5 and "i1" not in ids(similar)
    scores = [entry["score"] for entry in similar.json()["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    missing = client.get("/items/no-such-item/similar")
    assert missing.status_code == 404 and "no-such-item" in missing.json()["detail"]


# ----- search -----


def test_search_returns_the_topic_of_the_query_words(client: TestClient, stream: SyntheticStream) -> None:
    topic_of = stream.truth["item_topic"]
    shares = []
    for topic in range(STREAM.topics):
        response = client.get("/search", params={"q": topic_query(stream, topic), "k": 10})
        body = response.json()
        assert body["source"] == "search" and body["query"] == topic_query(stream, topic)
        shares.append(np.mean([topic_of[item] == topic for item in ids(response)]))
    assert np.mean(shares) >= 0.8 and min(shares) >= 0.5


def test_personalised_search_stays_on_topic_and_follows_the_model(
    client: TestClient, stream: SyntheticStream
) -> None:
    topic_of = stream.truth["item_topic"]
    shares = []
    for topic in range(STREAM.topics):
        outsider = next(u for u in stream.truth["user_main_topic"] if u not in topic_users(stream, topic))
        response = client.get("/search", params={"q": topic_query(stream, topic), "user_id": outsider})
        assert response.json()["source"] == "personalised"
        shares.append(np.mean([topic_of[item] == topic for item in ids(response)]))
    assert np.mean(shares) >= 0.8
    # With an overwhelming personal weight the order is the model's order among the candidates.
    runtime = client.app.state.runtime
    personal = runtime.search(topic_query(stream, 0), 5, user_id="u3", personal_weight=1e6)
    model_order = runtime.recommend("u3", k=len(runtime.loaded.items), exclude_seen=False)
    candidates = set(ids_of(runtime.search(topic_query(stream, 0), 100)))
    assert ids_of(personal) == [item for item in ids_of(model_order) if item in candidates][:5]


def test_put_item_without_a_category_gets_the_versions_guess(home: Path, stream: SyntheticStream) -> None:
    """The synthetic descriptions say what an item is ("A poster about…"): the head learns to read it."""
    info = Registry(home / MODELS_DIR).get("v0001")
    assert info.categories["accuracy_text_only"] > info.categories["accuracy_majority_class"]
    kinds = {item["category"] for item in stream.items}
    with TestClient(create_app(home, write_key=WRITE_KEY), headers=WRITER) as client:
        for kind in sorted(kinds)[:3]:
            body = {"title": "Harbor Nebula Orchard", "description": f"A {kind} about tide and comet."}
            answer = client.put(f"/items/new-{kind}", json=body).json()
            assert answer["category_guessed"] and answer["category"] == kind, answer
            assert answer["category_probability"] >= 0.5
        sent = client.put("/items/sent", json={"title": "Harbor", "category": "mug"}).json()
        assert sent["category"] == "mug" and not sent["category_guessed"]
    with open_store(home) as store:
        assert store.catalog.get(f"new-{sorted(kinds)[0]}").category == sorted(kinds)[0]


def test_put_item_is_searchable_and_recommendable_at_once(home: Path, stream: SyntheticStream) -> None:
    """One new 'zine' per topic, worded like the topic; users should prefer their own topic's zine."""
    names = stream.truth["topics"]
    with TestClient(create_app(home, write_key=WRITE_KEY), headers=WRITER) as client:
        bad = client.put("/items/z0", json={"title": "x" * 10_001})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "title"
        assert len(bad.text) < 1000  # a short excerpt of the input at most
        for topic, name in enumerate(names):
            words = TOPIC_VOCABULARY[name]
            response = client.put(
                f"/items/zine{topic}",
                json={
                    "title": " ".join(word.capitalize() for word in words[10:14]),
                    "description": f"A zine about {words[14]} and {words[9]}.",
                    "category": "zine",
                },
            )
            assert response.status_code == 200
            assert response.json() == {
                "item_id": f"zine{topic}",
                "searchable": True,
                "recommendable": True,
                "model_version": "v0001",
                "category": "zine",
                "category_guessed": False,
                "category_probability": None,
            }
        written = time.perf_counter()
        target = len(names) - 1
        title = " ".join(TOPIC_VOCABULARY[names[target]][10:14])
        assert ids(client.get("/search", params={"q": f"{title} zine"}))[0] == f"zine{target}"
        found = any(
            f"zine{target}" in ids(client.get(f"/recommend/{user}", params={"k": 10}))
            for user in topic_users(stream, target)
        )
        assert found and time.perf_counter() - written < 1.0
        # Over every user: their own topic's zine ranks high among the eight zines (chance: 3.5 of 0..7).
        ranks = []
        for user, mains in stream.truth["user_main_topic"].items():
            zines = ids(client.get(f"/recommend/{user}", params={"k": 8, "category": "zine"}))
            ranks.append(zines.index(f"zine{mains[-1]}"))
        assert np.mean(ranks) < 2.75
        similar = client.get(f"/items/zine{target}/similar", params={"k": 3})
        assert similar.status_code == 200 and f"zine{target}" not in ids(similar)
    with open_store(home) as store:
        assert store.catalog.get("zine0").category == "zine"


# ----- events -----


def test_bad_events_are_all_reported_and_nothing_is_written(home: Path) -> None:
    with open_store(home) as store:
        before = store.log.last_offset()
    batch = [
        {"user_id": "u1", "item_id": "i1", "event_type": "click"},
        {"user_id": "u1", "event_type": "click"},
        {"user_id": "u2", "item_id": "i2", "event_type": "teleport"},
        {"user_id": "u3", "item_id": "i3", "event_type": "view", "timestamp": "yesterday"},
        "not an object",
    ]
    with TestClient(create_app(home, write_key=WRITE_KEY), headers=WRITER) as client:
        response = client.post("/events", json=batch)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Unprocessable Entity"
    problems = response.json()["errors"]
    assert [(p["record"], p["field"]) for p in problems] == [
        ("events[1]", "item_id"),
        ("events[2]", "event_type"),
        ("events[3]", "timestamp"),
        ("events[4]", None),
    ]
    assert all(p["problem"] for p in problems)
    with open_store(home) as store:
        assert store.log.last_offset() == before


def test_good_events_are_durable_and_shape_the_next_answer(home: Path) -> None:
    with TestClient(create_app(home, write_key=WRITE_KEY), headers=WRITER) as client:
        top = ids(client.get("/recommend/u3", params={"k": 5}))[0]
        event = {"user_id": "u3", "item_id": top, "event_type": "click", "event_id": "web-1"}
        accepted = client.post("/events", json=[event])
        assert accepted.status_code == 200
        assert accepted.json() == {"accepted": 1, "duplicates": 0, "first_offset": 2001, "last_offset": 2001}
        assert top not in ids(client.get("/recommend/u3", params={"k": 5}))
        again = client.post("/events", json=[event]).json()
        assert again["accepted"] == 0 and again["duplicates"] == 1
        stranger = client.post(
            "/events", json=[{"user_id": "new-user", "item_id": "i5", "event_type": "view"}]
        )
        assert stranger.status_code == 200
        assert client.get("/recommend/new-user").json()["source"] == "model"
        assert "streamrec_events_ingested_total 2.0" in client.get("/metrics").text
    with open_store(home) as store:
        assert store.log.recent_items("u3", 1) == [top]


# ----- admin and protection -----


def test_admin_needs_the_key(client: TestClient) -> None:
    assert client.get("/admin/models").status_code == 401
    assert client.get("/admin/models", headers={"X-API-Key": "wrong"}).status_code == 401
    models = client.get("/admin/models", headers=ADMIN)
    assert models.status_code == 200
    assert models.json()["live"] == "v0001" and [v["version"] for v in models.json()["versions"]] == ["v0001"]
    assert client.post("/admin/rollback", headers=ADMIN).status_code == 409
    assert client.post("/admin/promote/v0099", headers=ADMIN).status_code == 404


def test_writes_need_a_key_unless_opened_and_each_key_opens_its_role(
    built_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("STREAMREC_API_KEY", "STREAMREC_WRITE_KEY", "STREAMREC_READ_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with TestClient(create_app(built_home)) as client:
        refused = client.post("/events", json=[])
        assert refused.status_code == 401 and "server.open_writes" in refused.json()["detail"]
        assert client.put("/items/i1", json={"title": "x"}).status_code == 401
        assert client.get("/recommend/u3").status_code == 200  # reads are open without a read key
        disabled = client.get("/admin/models", headers=ADMIN)
        assert disabled.status_code == 403 and "STREAMREC_API_KEY" in disabled.json()["detail"]
        assert client.get("/admin/models").status_code == 401

    monkeypatch.setenv("STREAMREC_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("STREAMREC_READ_KEY", "reader")
    monkeypatch.setenv("STREAMREC_API_KEY", KEY)
    with TestClient(create_app(built_home)) as client:
        assert client.get("/recommend/u3").status_code == 401  # a read key closes reads
        assert client.get("/health").status_code == 200  # ops stay open for load balancers
        assert client.get("/recommend/u3", headers={"X-API-Key": "reader"}).status_code == 200
        assert client.post("/events", json=[], headers={"X-API-Key": "reader"}).status_code == 401
        assert client.post("/events", json=[], headers=WRITER).json()["accepted"] == 0
        assert client.get("/recommend/u3", headers=WRITER).status_code == 200
        assert client.get("/admin/models", headers=WRITER).status_code == 401
        assert client.post("/events", json=[], headers=ADMIN).status_code == 200
        assert client.get("/admin/models", headers=ADMIN).status_code == 200


def test_open_writes_is_an_explicit_setting(tmp_path: Path, built_home: Path) -> None:
    home = tmp_path / "open"
    shutil.copytree(built_home, home)
    (home / "streamrec.toml").write_text("[server]\nopen_writes = true\n")
    with TestClient(create_app(home)) as client:
        assert client.post("/events", json=[]).status_code == 200


def test_requests_are_bounded_and_errors_never_echo_the_input(tmp_path: Path, built_home: Path) -> None:
    home = tmp_path / "bounded"
    shutil.copytree(built_home, home)
    (home / "streamrec.toml").write_text(
        '[server]\nmax_body_bytes = 100_000\nmax_events_per_request = 50\nrate_limit = "40/minute"\n'
    )
    event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
    with TestClient(create_app(home, write_key=WRITE_KEY), headers=WRITER) as client:
        huge = client.post(
            "/events", content=b"[" + b"1," * 100_000 + b"1]", headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413 and "server.max_body_bytes" in huge.json()["detail"]
        many = client.post("/events", json=[event] * 51)
        assert many.status_code == 422 and "max_events_per_request" in many.json()["errors"][0]["problem"]
        bad = client.post("/events", json=[{**event, "event_type": "x" * 5000}] * 10)
        assert bad.status_code == 422 and len(bad.text) < 5000
        malformed = client.post("/events", content=b"[{", headers={"content-type": "application/json"})
        assert malformed.status_code == 422 and malformed.json()["errors"][0]["record"] == "body"
        strict = client.post("/recommend", json={"items": ["i1"], "exclude_seen": 0})
        assert strict.status_code == 422 and strict.json()["errors"][0]["field"] == "exclude_seen"
        assert client.get("/nowhere").json()["status"] == 404
        statuses = [client.get("/recommend/u3").status_code for _ in range(40)]
        assert 429 in statuses  # 40 a minute, the requests above included
        limited = client.get("/recommend/u3")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_promote_during_a_burst_of_requests_never_fails_a_request(home: Path) -> None:
    """Threads keep asking while v2 trains and is promoted; then a rollback, then an outside promotion."""
    answers: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def hammer(client: TestClient, user: str) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get(f"/recommend/{user}", params={"k": 5})
            version = response.json().get("model_version") if response.status_code == 200 else None
            answers.append((started, response.status_code, version))
            time.sleep(0.01)

    with TestClient(create_app(home, api_key=KEY)) as client:
        threads = [threading.Thread(target=hammer, args=(client, f"u{i}")) for i in (1, 2, 3)]
        for thread in threads:
            thread.start()
        try:
            candidate = train_and_register(
                Home(home, Settings()), SMALL_MODEL, text_model=TEXT_MODEL, promote=False, progress=False
            )
            assert candidate.version == "v0002"
            promoted = client.post("/admin/promote/v0002", headers=ADMIN)
            promoted_at = time.perf_counter()
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert promoted.status_code == 200 and promoted.json() == {"live": "v0002", "previous": "v0001"}
        assert answers and all(status == 200 for _, status, _ in answers)
        assert {version for _, _, version in answers} == {"v0001", "v0002"}
        assert all(version == "v0002" for at, _, version in answers if at > promoted_at)

        rolled = client.post("/admin/rollback", headers=ADMIN).json()
        assert rolled == {"live": "v0001", "previous": "v0002"}
        assert client.get("/health").json()["model_version"] == "v0001"
        # Another process promotes: the watcher swaps within about a second.
        Registry(home / MODELS_DIR).promote("v0002")
        deadline = time.monotonic() + 10
        while client.get("/health").json()["model_version"] != "v0002":
            assert time.monotonic() < deadline, "the server did not pick up the outside promotion"
            time.sleep(0.1)
        assert 'streamrec_live_model{version="v0002"} 1.0' in client.get("/metrics").text


# ----- ops -----


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_version"] == "v0001"
    assert health["last_offset"] == health["trained_through_offset"] == 2000
    client.get("/recommend/u1")
    scraped = client.get("/metrics")
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    text = scraped.text
    for name in (
        "streamrec_http_requests_total",
        "streamrec_http_request_duration_seconds_bucket",
        "streamrec_http_request_duration_seconds_count",
        "streamrec_events_ingested_total",
        "streamrec_model_last_update_timestamp_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_count')}" in text, name
    assert 'streamrec_http_requests_total{method="GET",route="/recommend/{user_id}",status="200"}' in text
    assert 'streamrec_live_model{version="v0001"} 1.0' in text
    assert client.get("/openapi.json").status_code == 200


def test_metrics_merge_worker_processes_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two processes count into PROMETHEUS_MULTIPROC_DIR; a third one's scrape adds them up."""
    worker = (
        "from streamrec.serving.metrics import ServingMetrics; m = ServingMetrics();"
        "m.events_ingested.inc(2); m.set_model('v0001', 1.0)"
    )
    scrape = "import sys; from streamrec.serving.metrics import ServingMetrics;"
    scrape += "sys.stdout.buffer.write(ServingMetrics().render())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True)
    run = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, capture_output=True, text=True)
    assert "streamrec_events_ingested_total 4.0" in run.stdout
    assert run.stdout.count('version="v0001"} 1.0') == 2  # one per worker, told apart by a pid label
    assert "process_resident_memory_bytes" not in run.stdout


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_real_http_server(home: Path, tmp_path: Path) -> None:
    """uvicorn in a subprocess on loopback: health, recommend, events, admin; stops cleanly on SIGTERM."""
    port = free_loopback_port()
    code = f"from streamrec.serving.app import serve; serve({str(home)!r}, port={port}, api_key={KEY!r})"
    with (tmp_path / "server.log").open("w") as server_log:
        server = subprocess.Popen([sys.executable, "-c", code], stdout=server_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/recommend/u3").json()["source"] == "model"
            event = {"user_id": "http-user", "item_id": "i7", "event_type": "click"}
            assert http.post("/events", json=[event], headers=ADMIN).json()["accepted"] == 1
            assert http.get("/recommend/http-user").json()["source"] == "model"
            assert http.get("/admin/models").status_code == 401
            assert http.get("/admin/models", headers=ADMIN).json()["live"] == "v0001"
    finally:
        server.terminate()
        returncode = server.wait(timeout=30)
    log = (tmp_path / "server.log").read_text()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15).
    assert returncode in (0, -15) and "Application shutdown complete" in log, log
