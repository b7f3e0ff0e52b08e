"""``streamrec bench serve``: the HTTP API measured the way clients see it.

The server runs as its own process (``python -m streamrec.cli serve``), exactly
as deployed, and is driven over real loopback HTTP by asyncio workers in this
process, so serialisation, the event loop and the thread pool are all paid for.
Three phases, each ``duration`` seconds (freshness: a fixed number of probes):

* ``recommend``: ``GET /recommend/{user}?k=10`` for users drawn from the log;
* ``events``: ``POST /events`` with batches of synthetic ``view`` events on known
  users and items, each with a unique ``event_id`` so nothing is deduplicated;
* ``freshness``: one at a time, post a click on the top-1 item of a user's
  current top-10 and poll until the answer no longer contains it (seen items
  are excluded), i.e. until the event shapes the recommendation. Measured from
  the POST's response to the first reflecting response.

Latencies are client-side, so they include the client's own queueing: the
client's CPU time per phase is recorded next to the server's, and a note says
when one Python client process was probably the bottleneck.

By default the server runs on a temporary copy of the home, so the benchmark's
synthetic events never enter the real log (``in_place=True`` skips the copy).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from streamrec.bench.report import write_result
from streamrec.home import Home
from streamrec.serving.access import WRITE_KEY_ENV
from streamrec.store import open_store

K = 10
STARTUP_SECONDS = 180.0  # model load + catalogue embeddings on a cold server
FRESHNESS_TIMEOUT = 5.0  # a probe not reflected after this long counts as unreflected
REQUEST_TIMEOUT = 60.0
CLIENT_BOUND_SHARE = 0.8  # client CPU above this share of one core: the client likely limits throughput


@dataclass
class PhaseStats:
    """What the workers of one phase saw; latencies of successful requests only."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    units: int = 0  # requests, or events for the events phase
    seconds: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(message[:300])


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all threads); None when it is gone or cannot be read."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return times.user + times.system


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _check_home(home: Path) -> None:
    """Fail before any process starts, with a message the CLI can print as is."""
    if not home.exists():
        raise ValueError(f"no streamrec home at {home} (run `streamrec ingest` first)")
    opened = Home.open(home)
    if not opened.has_registry() or opened.registry.live() is None:
        raise ValueError(f"no live model in {home}: run `streamrec train --home {home}` first")


WRITE_KEY = secrets.token_hex(16)  # the key this run's server takes events with


@contextmanager
def _server(home: Path, port: int, log_path: Path):
    """``streamrec serve`` as a child process; yields its pid once ``/health`` answers, always stops it."""
    # no worker: an update training beside the load would measure the update, not the server
    command = [
        *(sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)),
        "--no-worker",
    ]
    env = {**os.environ, WRITE_KEY_ENV: WRITE_KEY}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with status {process.returncode} before answering:\n"
                    + log_path.read_text()[-3000:]
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not answer /health within {STARTUP_SECONDS:.0f}s:\n"
                    + log_path.read_text()[-3000:]
                )
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


async def _run_phase(
    client: httpx.AsyncClient,
    concurrency: int,
    duration: float,
    one: Callable[[httpx.AsyncClient, random.Random], Awaitable[int]],
    seed: int,
    server_pid: int,
) -> PhaseStats:
    """``concurrency`` workers call ``one`` back to back until ``duration`` has passed.

    ``one`` returns the units it completed (1 request, or the events in a batch) or
    raises; requests in flight at the deadline finish and are counted.
    """
    stats = PhaseStats()
    cpu, server_cpu = time.process_time(), _process_cpu_seconds(server_pid)
    started = time.perf_counter()
    deadline = started + duration

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                units = await one(client, rng)
            except Exception as error:  # a failed request is a measurement, not a crash
                stats.error(f"{type(error).__name__}: {error}")
                continue
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            stats.units += units

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    stats.seconds = time.perf_counter() - started
    stats.client_cpu = time.process_time() - cpu
    after = _process_cpu_seconds(server_pid)
    stats.server_cpu = None if after is None or server_cpu is None else after - server_cpu
    return stats


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


async def _freshness(
    client: httpx.AsyncClient,
    users: list[str],
    probes: int,
    rng: random.Random,
    event_ts: Callable[[], float],
) -> dict[str, Any]:
    """Sequential probes: click the top-1 item, poll until the answer drops it (it is now seen)."""
    tag = uuid.uuid4().hex[:12]
    times_ms: list[float] = []
    polls: list[int] = []
    unreflected = errors = 0
    for n, user in enumerate(rng.sample(users, min(probes, len(users)))):
        try:
            before = _check(await client.get(f"/recommend/{user}", params={"k": K})).json()["items"]
            if not before:
                continue
            item = before[0]["item_id"]
            event = {
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "timestamp": event_ts(),
                "event_id": f"bench-serve-fresh-{tag}-{n}",
            }
            _check(await client.post("/events", json=[event]))
            posted = time.perf_counter()
            count = 0
            while True:
                count += 1
                answer = _check(await client.get(f"/recommend/{user}", params={"k": K})).json()["items"]
                if item not in {entry["item_id"] for entry in answer}:
                    times_ms.append((time.perf_counter() - posted) * 1000)
                    polls.append(count)
                    break
                if time.perf_counter() - posted > FRESHNESS_TIMEOUT:
                    unreflected += 1
                    break
        except (httpx.HTTPError, RuntimeError):
            errors += 1
    return {
        "probes": len(times_ms),
        "p50_ms": _percentile(times_ms, 50),
        "p95_ms": _percentile(times_ms, 95),
        "max_ms": round(max(times_ms), 3) if times_ms else None,
        "mean_polls": round(float(np.mean(polls)), 3) if polls else None,
        "max_polls": max(polls) if polls else None,
        "unreflected": unreflected,
        "errors": errors,
        "definition": (
            "time from the POST /events response (a click on the user's current top-1) to the first"
            f" GET /recommend response that no longer lists it (exclude_seen); sequential, no other load;"
            f" unreflected = not reflected within {FRESHNESS_TIMEOUT:.0f}s"
        ),
    }


async def _drive(
    base: str,
    server_pid: int,
    *,
    users: list[str],
    items: list[str],
    duration: float,
    concurrency: int,
    event_batch: int,
    freshness_probes: int,
    seed: int,
    event_ts: Callable[[], float],
) -> tuple[PhaseStats, PhaseStats, dict[str, Any], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    tag = uuid.uuid4().hex[:12]
    counter = iter(range(1 << 62))

    async def recommend(client: httpx.AsyncClient, rng: random.Random) -> int:
        _check(await client.get(f"/recommend/{rng.choice(users)}", params={"k": K}))
        return 1

    async def post_events(client: httpx.AsyncClient, rng: random.Random) -> int:
        ts = event_ts()
        batch = [
            {
                "user_id": user,
                "item_id": item,
                "event_type": "view",
                "timestamp": ts,
                "event_id": f"bench-serve-{tag}-{next(counter)}",
            }
            for user, item in zip(
                rng.choices(users, k=event_batch), rng.choices(items, k=event_batch), strict=True
            )
        ]
        body = _check(await client.post("/events", json=batch)).json()
        if body["accepted"] != event_batch:
            raise RuntimeError(f"{event_batch} events posted, {body['accepted']} accepted: {body}")
        return event_batch

    async with httpx.AsyncClient(
        base_url=base,
        limits=limits,
        timeout=REQUEST_TIMEOUT,
        trust_env=False,
        headers={"X-API-Key": WRITE_KEY},
    ) as client:
        warm = time.perf_counter()  # connections opened, first-request costs paid, nothing recorded
        await _run_phase(client, concurrency, min(1.0, duration / 5), recommend, seed + 99, server_pid)
        warm_seconds = time.perf_counter() - warm
        rec = await _run_phase(client, concurrency, duration, recommend, seed, server_pid)
        ev = await _run_phase(client, concurrency, duration, post_events, seed + 1, server_pid)
        cpu, server_cpu = time.process_time(), _process_cpu_seconds(server_pid)
        started = time.perf_counter()
        fresh = await _freshness(client, users, freshness_probes, random.Random(seed + 2), event_ts)
        fresh["seconds"] = round(time.perf_counter() - started, 3)
        fresh["client_cpu"] = time.process_time() - cpu
        after = _process_cpu_seconds(server_pid)
        fresh["server_cpu"] = None if after is None or server_cpu is None else after - server_cpu
    return rec, ev, fresh, warm_seconds


def _cpu_note(shares: dict[str, float], server_shares: dict[str, float | None], cpus: int | None) -> str:
    """Whether one Python client process could have been what limited the measured throughput."""
    phase, share = max(shares.items(), key=lambda kv: kv[1])
    server = server_shares.get(phase)
    where = f"client and server shared {cpus} CPU cores"
    if server is not None:
        where += f"; the server used {server:.2f} cores in that phase"
    if share >= CLIENT_BOUND_SHARE:
        return (
            f"the single Python client used {share:.0%} of one core in the {phase} phase, so it probably"
            f" limited throughput: the server's capacity is at least what is reported ({where})"
        )
    return (
        f"the client used at most {share:.0%} of one core ({phase} phase), so it was probably not the"
        f" bottleneck; its CPU time was still taken from the server ({where})"
    )


def _plot(path: Path, rec: PhaseStats, ev: PhaseStats, fresh: dict[str, Any], title: str) -> None:
    import matplotlib.pyplot as plt  # the report module has selected the Agg backend

    figure, (bars, hist) = plt.subplots(1, 2, figsize=(11, 4))
    groups = {
        "recommend (per request)": [_percentile(rec.latencies_ms, q) for q in (50, 95, 99)],
        "events (per batch)": [_percentile(ev.latencies_ms, q) for q in (50, 95, 99)],
        "freshness": [fresh["p50_ms"], fresh["p95_ms"], None],
    }
    width = 0.27
    for j, (label, colour) in enumerate(
        zip(("p50", "p95", "p99"), ("#4C72B0", "#DD8452", "#C44E52"), strict=True)
    ):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        values = [v[j] or 0.0 for v in groups.values()]
        drawn = bars.bar(xs, values, width, label=label, color=colour)
        bars.bar_label(drawn, labels=[f"{v:.1f}" if v else "" for v in values], fontsize=7)
    bars.set_xticks(range(len(groups)), list(groups), fontsize=8)
    bars.set_ylabel("milliseconds (client side)")
    bars.set_yscale("symlog", linthresh=1.0)
    bars.legend(fontsize=8)
    bars.set_title("latency percentiles", fontsize=10)
    if rec.latencies_ms:
        hist.hist(rec.latencies_ms, bins=60, color="#4C72B0")
    hist.set_xlabel("GET /recommend latency, ms")
    hist.set_ylabel("requests")
    hist.set_title("recommend latency histogram", fontsize=10)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_serve_benchmark(
    home: Path,
    *,
    duration: float,
    concurrency: int,
    out: Path,
    port: int | None = None,
    event_batch: int = 500,
    seed: int = 0,
    command: str = "",
    freshness_probes: int = 50,
    in_place: bool = False,
) -> dict:
    """Run the three phases against a ``streamrec serve`` child process; write JSON + PNG to ``out``.

    Raises ``ValueError`` (a message for the user) when the home has no live model or no events,
    and ``RuntimeError`` (with the server's log) when the server does not come up.
    """
    home = Path(home)
    out = Path(out)
    if duration <= 0 or concurrency < 1 or event_batch < 1:
        raise ValueError("duration must be positive, concurrency and event batch at least 1")
    _check_home(home)
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-serve-") as tmp:
        target = home
        if not in_place:  # the synthetic events must not end up in the real log
            target = Path(tmp) / "home"
            shutil.copytree(home, target, ignore=shutil.ignore_patterns("*-shm"))
        with open_store(target) as store:
            stats = store.stats()
            table = store.log.sequences()
        users, items = list(table.users), list(table.items)
        del table
        if not users:
            raise ValueError(f"the event log in {home} is empty: ingest events before benchmarking")
        # Benchmark events must be each user's newest, whatever clock the log's timestamps follow.
        floor = max(time.time(), float(stats["last_timestamp"] or 0.0) + 1.0)
        offset = floor - time.time()

        def event_ts() -> float:
            return time.time() + offset

        port = port or _free_loopback_port()
        log_path = Path(tmp) / "server.log"
        with _server(target, port, log_path) as server:
            base = f"http://127.0.0.1:{port}"
            health = httpx.get(f"{base}/health", timeout=10, trust_env=False).json()
            rec, ev, fresh, warm_seconds = asyncio.run(
                _drive(
                    base,
                    server.pid,
                    users=users,
                    items=items,
                    duration=duration,
                    concurrency=concurrency,
                    event_batch=event_batch,
                    freshness_probes=freshness_probes,
                    seed=seed,
                    event_ts=event_ts,
                )
            )
        server_alive = server.poll() is None

    cpus = os.cpu_count()
    shares = {
        "recommend": rec.client_cpu / rec.seconds,
        "events": ev.client_cpu / ev.seconds,
    }
    server_shares = {
        "recommend": None if rec.server_cpu is None else rec.server_cpu / rec.seconds,
        "events": None if ev.server_cpu is None else ev.server_cpu / ev.seconds,
    }
    default_command = (
        f"streamrec bench serve --home {home} --duration {duration} --concurrency {concurrency} --out {out}"
    )
    result: dict[str, Any] = {
        "benchmark": "serve",
        "command": command or default_command,
        "home_stats": {"events": stats["events"], "users": stats["users"], "items": stats["items"]},
        "home_copied": not in_place,
        "model_version": health["model_version"],
        "duration_s": duration,
        "concurrency": concurrency,
        "warmup_s": round(warm_seconds, 3),
        "recommend": {
            "rps": round(rec.units / rec.seconds, 2),
            "p50_ms": _percentile(rec.latencies_ms, 50),
            "p95_ms": _percentile(rec.latencies_ms, 95),
            "p99_ms": _percentile(rec.latencies_ms, 99),
            "errors": rec.errors,
            "requests": rec.units,
            "seconds": round(rec.seconds, 3),
            "k": K,
            "error_examples": rec.error_examples,
        },
        "events": {
            "events_per_s": round(ev.units / ev.seconds, 2),
            "p50_ms": _percentile(ev.latencies_ms, 50),
            "p99_ms": _percentile(ev.latencies_ms, 99),
            "errors": ev.errors,
            "batches": len(ev.latencies_ms),
            "batch_size": event_batch,
            "seconds": round(ev.seconds, 3),
            "error_examples": ev.error_examples,
        },
        "freshness_ms_p50": fresh["p50_ms"],
        "freshness_ms_p95": fresh["p95_ms"],
        "freshness": {k: v for k, v in fresh.items() if k not in ("client_cpu", "server_cpu")},
        "client_cpu_seconds": {
            "recommend": round(rec.client_cpu, 3),
            "events": round(ev.client_cpu, 3),
            "freshness": round(fresh["client_cpu"], 3),
        },
        "server_cpu_seconds": {
            "recommend": None if rec.server_cpu is None else round(rec.server_cpu, 3),
            "events": None if ev.server_cpu is None else round(ev.server_cpu, 3),
            "freshness": None if fresh["server_cpu"] is None else round(fresh["server_cpu"], 3),
        },
        "client_cpu_share_of_one_core": {phase: round(share, 3) for phase, share in shares.items()},
        "client_cpu_note": _cpu_note(shares, server_shares, cpus),
        "server": {
            "command": "python -m streamrec.cli serve --home HOME --port PORT (uvicorn, one worker,"
            " access log on)",
            "pid": server.pid,
            "stopped": not server_alive,
        },
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": cpus,
            "platform": platform.platform(),
        },
    }
    write_result(out, result)
    _plot(
        out.with_suffix(".png"),
        rec,
        ev,
        fresh,
        f"streamrec serve: {concurrency} concurrent clients, {duration:g}s per phase,"
        f" {stats['events']:,} events in the log",
    )
    return json.loads(json.dumps(result))
