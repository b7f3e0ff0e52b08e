"""Several server processes (``serve --workers N``), the per-user result cache, one update at a time."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from streamrec import experiments
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home, UpdateInProgress
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving import updates
from streamrec.serving.runtime import Runtime
from streamrec.serving.updates import UpdateJobs
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

STREAM = StreamConfig(users=60, items=80, events=2000, seed=5)
SMALL_MODEL = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64)
TEXT_MODEL = "all-MiniLM-L6-v2"
KEY = "test-admin-key"
ADMIN = {"X-API-Key": KEY}
USERS = ("u1", "u2", "u3")


@pytest.fixture(scope="module")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home serving v0001, with v0002 registered but not promoted."""
    stream = generate(STREAM)
    home = tmp_path_factory.mktemp("workers-home")
    schema = EventSchema()
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
    for promote in (True, False):
        train_and_register(
            Home(home, Settings()), SMALL_MODEL, text_model=TEXT_MODEL, promote=promote, progress=False
        )
    return home


# ----- the result cache -----


def test_recommend_cache_hits_until_a_new_event_or_a_promotion(home: Path) -> None:
    lookups: list[bool] = []
    with Runtime.open(home, on_cache=lookups.append) as runtime:
        first = runtime.recommend("u3", 5)
        assert first["source"] == "model" and runtime.recommend("u3", 5) is first
        assert lookups == [False, True]
        assert runtime.recommend("u3", 4) is not first  # other parameters, another entry

        # A new event for the user: the next answer is computed afresh and leaves the item out.
        top = first["items"][0]["item_id"]
        event = {"user_id": "u3", "item_id": top, "event_type": "click"}
        runtime.store.log.append([EventSchema().validate(event)])
        lookups.clear()
        fresh = runtime.recommend("u3", 5)
        assert lookups == [False] and top not in [entry["item_id"] for entry in fresh["items"]]
        assert runtime.recommend("u3", 5) is fresh

        # A promotion (here or by another process): a new version, a new, empty cache.
        runtime.promote("v0002")
        lookups.clear()
        promoted = runtime.recommend("u3", 5)
        assert lookups == [False] and promoted["model_version"] == "v0002"

        # Trending answers follow everyone's events: never cached.
        lookups.clear()
        assert runtime.recommend("nobody", 5)["source"] == "trending"
        runtime.recommend("nobody", 5)
        assert lookups == [False, False]


# ----- one update at a time across server processes -----


def test_a_second_server_process_cannot_start_an_update_while_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``UpdateJobs`` stand for two worker processes (flock tells open files apart, not processes)."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(updates, "_streamrec", lambda *_: sleeper)
    first, second = UpdateJobs(tmp_path), UpdateJobs(tmp_path)
    assert first.start()["running"]
    with pytest.raises(UpdateInProgress, match="another server process"):
        second.start()
    assert not second.status()["running"]
    first._process.terminate()  # the update ends: its child held the lock, so it is free again
    first._process.wait(10)
    started = second.start()
    try:
        assert started["running"]
        with pytest.raises(UpdateInProgress):
            first.start()
    finally:
        second._process.kill()
        second._process.wait(10)


# ----- several server processes over HTTP -----


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(home: Path, tmp_path: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamrec serve --workers 2`` on a free loopback port, until it answers; stopped with SIGTERM.

    Its TMPDIR is private, to check that the metrics folder is gone afterwards.
    """
    port = free_loopback_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "STREAMREC_API_KEY": KEY, "TMPDIR": str(scratch)}
    command = [sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)]
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*command, "--workers", "2", *options], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()
            time.sleep(0.2)
        yield base, server
    finally:
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=60)
    log_text = log_path.read_text()
    assert returncode == 0 and log_text.count("Application shutdown complete") == 2, log_text
    assert not list(scratch.iterdir()), "the metrics folder outlived the server"


def one_request(base: str, path: str, **kwargs) -> httpx.Response:
    """A request on a new connection, so the kernel may hand it to either worker."""
    with httpx.Client(base_url=base, timeout=30) as http:
        return http.request(kwargs.pop("method", "GET"), path, **kwargs)


def worker_of(response: httpx.Response) -> int:
    return int(response.headers["x-streamrec-worker"])


def until_both_workers(base: str, path: str, check, deadline_s: float = 60) -> dict[int, httpx.Response]:
    """Request ``path`` until both workers have given an answer that ``check`` accepts."""
    seen: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + deadline_s
    while len(seen) < 2:
        assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered {path} as expected"
        response = one_request(base, path)
        if check(response):
            seen[worker_of(response)] = response
    return seen


def sample(text: str, name: str) -> float:
    """One sample's value from Prometheus text (``name`` with its labels, exactly as printed)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


@pytest.mark.slow
def test_two_workers_answer_on_one_port_and_swap_together(home: Path, tmp_path: Path) -> None:
    """Promote and roll back through one worker while a thread keeps asking: every answer is a 200,
    and both workers answer with the new version within 2 s. ``/metrics`` adds both workers up."""
    answers: list[tuple[float, int, str | None, int | None]] = []  # (sent at, status, version, pid)
    stop = threading.Event()

    def hammer(base: str) -> None:
        while not stop.is_set():
            for user in USERS:
                sent = time.monotonic()
                try:
                    response = one_request(base, f"/recommend/{user}", params={"k": 5})
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    answers.append((sent, response.status_code, version, worker_of(response)))
                except httpx.TransportError:
                    answers.append((sent, 0, None, None))

    def switched_within(version: str, since: float, until: float = float("inf")) -> float:
        """Seconds after ``since`` from which every answer (from either worker) is ``version``."""
        after = [(sent, v) for sent, _, v, _ in answers if since <= sent < until]
        late = [sent for sent, v in after if v != version]
        assert after[-1][1] == version
        return (max(late) - since) if late else 0.0

    with running_server(home, tmp_path, "--no-worker") as (base, _):
        pids = until_both_workers(base, "/health", lambda r: r.json()["model_version"] == "v0001")
        thread = threading.Thread(target=hammer, args=(base,))
        thread.start()
        try:
            time.sleep(1)
            promoted = one_request(base, "/admin/promote/v0002", method="POST", headers=ADMIN)
            promoted_at = time.monotonic()
            assert promoted.json() == {"live": "v0002", "previous": "v0001"}
            time.sleep(3)
            rollback_sent = time.monotonic()
            rolled = one_request(base, "/admin/rollback", method="POST", headers=ADMIN)
            rolled_at = time.monotonic()
            assert rolled.json() == {"live": "v0001", "previous": "v0002"}
            time.sleep(3)
        finally:
            stop.set()
            thread.join()
        assert answers and all(status == 200 for _, status, _, _ in answers), "a request failed"
        assert {pid for *_, pid in answers} == set(pids), "both workers answer /recommend"
        between = [a for a in answers if promoted_at + 2 <= a[0] < rollback_sent]
        assert {pid for *_, pid in between} == set(pids) and {a[2] for a in between} == {"v0002"}
        took = {"promote": switched_within("v0002", promoted_at, rollback_sent)}
        took["rollback"] = switched_within("v0001", rolled_at)
        assert all(seconds <= 2.0 for seconds in took.values()), took
        print(f"\nworkers {sorted(pids)}; {len(answers)} answers; every worker switched within {took} s")

        # /metrics from either worker counts both workers' requests and shows both live models.
        time.sleep(0.5)  # a request is counted just after its answer is sent
        served = sum(1 for _, status, _, _ in answers if status == 200)
        route = 'streamrec_http_requests_total{method="GET",route="/recommend/{user_id}",status="200"}'
        for text in (r.text for r in until_both_workers(base, "/metrics", lambda r: r.is_success).values()):
            assert sample(text, route) == served
            hits = sample(text, 'streamrec_recommend_cache_lookups_total{result="hit"}')
            misses = sample(text, 'streamrec_recommend_cache_lookups_total{result="miss"}')
            assert hits + misses == served and hits > 0
            for pid in pids:
                assert sample(text, f'streamrec_live_model{{pid="{pid}",version="v0001"}}') == 1.0
            assert "process_resident_memory_bytes" not in text  # one worker's figure would pass for all

        # An event taken by either worker shapes the next answer of both (their caches included).
        top = one_request(base, "/recommend/u1", params={"k": 5}).json()["items"][0]["item_id"]
        event = {"user_id": "u1", "item_id": top, "event_type": "click"}
        assert one_request(base, "/events", method="POST", json=[event], headers=ADMIN).is_success
        for _ in range(10):
            items = one_request(base, "/recommend/u1", params={"k": 5}).json()["items"]
            assert top not in [entry["item_id"] for entry in items]
        until_both_workers(base, "/recommend/u1?k=5", lambda r: top not in r.text)

        # An item written through one worker is found by both within 2 s (catalogue revision).
        item = {"title": "Quokka lantern umbrella", "description": "A gadget.", "category": "gadget"}
        written = one_request(base, "/items/quokka", method="PUT", json=item, headers=ADMIN)
        assert written.is_success, written.text
        written_at = time.monotonic()
        until_both_workers(base, "/search?q=quokka%20lantern&k=3", lambda r: '"quokka"' in r.text, 10)
        assert time.monotonic() - written_at <= 2 + 1, "a worker took longer than its 1 s poll to follow"


@pytest.mark.slow
def test_several_server_processes_run_one_update_worker(home: Path, tmp_path: Path) -> None:
    with running_server(home, tmp_path) as (base, server):
        until_both_workers(base, "/health", lambda r: r.is_success)
        parent = psutil.Process(server.pid)
        learners = [p for p in parent.children(recursive=True) if "worker" in p.cmdline()[3:5]]
        assert len(learners) == 1 and learners[0].ppid() == server.pid, [p.cmdline() for p in learners]
        answering = {p.pid for p in parent.children() if "spawn_main" in " ".join(p.cmdline())}
        assert len(answering) == 2
    assert not learners[0].is_running(), "the update worker outlived the server"


@pytest.mark.slow
def test_an_experiment_splits_users_alike_on_both_workers_and_counts_clicks_in_their_arm(
    home: Path, tmp_path: Path
) -> None:
    users = [f"u{n}" for n in range(1, 21)]
    with running_server(home, tmp_path) as (base, _):
        started = one_request(
            base, "/admin/ab", method="POST", json={"a": "v0001", "b": "v0002"}, headers=ADMIN
        )
        assert started.status_code == 201, started.text
        experiment = next(
            e for e in experiments.experiments(Home.open(home).registry) if e.id == started.json()["id"]
        )
        time.sleep(2)  # both workers' watchers have picked it up (1 s poll)
        answers: dict[str, list[dict]] = {user: [] for user in users}
        workers: set[int] = set()
        for _ in range(3):
            for user in users:
                response = one_request(base, f"/recommend/{user}", params={"k": 5})
                workers.add(worker_of(response))
                answers[user].append(response.json())
        assert len(workers) == 2  # both answered
        for user, seen in answers.items():
            arm = experiment.arm_of(user)
            assert {a["arm"] for a in seen} == {f"{experiment.id}/{arm}"}  # the same arm from either worker
            assert {a["model_version"] for a in seen} == {experiment.version_of(arm)}
        assert {experiment.arm_of(u) for u in users} == {"a", "b"}

        # One click, on what arm b showed its first user: counted for b only.
        in_b = next(u for u in users if experiment.arm_of(u) == "b")
        shown = answers[in_b][0]
        click = {
            "user_id": in_b,
            "item_id": shown["items"][0]["item_id"],
            "event_type": "click",
            "request_id": shown["request_id"],
        }
        assert one_request(base, "/events", method="POST", json=[click], headers=ADMIN).is_success
        time.sleep(1)  # each worker writes its impressions every 0.2 s
        status = one_request(base, "/admin/ab", headers=ADMIN).json()
        arms = status["arms"]
        assert arms["a"]["impressions"] + arms["b"]["impressions"] == 3 * len(users)
        assert (arms["a"]["clicks"], arms["b"]["clicks"]) == (0, 1)
        stopped = one_request(base, "/admin/ab/stop", method="POST", json={"promote": "b"}, headers=ADMIN)
        assert stopped.json()["promoted"] == "v0002"
        until_both_workers(
            base, "/recommend/u1", lambda r: r.json()["arm"] is None and r.json()["model_version"] == "v0002"
        )
