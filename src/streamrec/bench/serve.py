"""``streamrec bench serve``: the HTTP API measured the way clients see it.

The server runs as its own process tree (``python -m streamrec.cli serve --workers N``),
exactly as deployed, and is driven over real loopback HTTP by a load generator: ``wrk``
when it is installed, else an asyncio httpx client in this process
(:mod:`streamrec.bench.load`). Each phase lasts ``duration`` seconds, after a 1 s warm-up:

* ``mixed``: ``GET /recommend/{user}?k=10`` for users drawn from the log, one in ten right
  after a ``POST /events`` of one event of that user (the result cache answers the rest
  when it can);
* ``fresh``: every GET right after an event of that user, so no cached answer can serve it
  (the cache key holds the user's latest items); ``cache_hits`` from ``/metrics`` shows it;
* ``events``: ``POST /events`` with batches of synthetic ``view`` events on known users and
  items, each with a unique ``event_id`` so nothing is deduplicated;
* ``freshness`` (always the Python client, a fixed number of probes, no other load): post a
  click on the top-1 item of a user's current top-10 and poll until the answer no longer
  contains it (seen items are excluded), measured from the POST's response.

Latencies are the generator's, so they include its own queueing. The CPU of the server's
processes (all workers: the process tree) and of the generator is recorded per phase: on
a small machine they share the cores. ``promote_during`` adds a copy of the live version
to the registry and promotes it halfway through the mixed phase, counting the requests
that fail during the swap.

By default the server runs on a temporary copy of the home, so the benchmark's synthetic
events (and the promoted copy) never enter the real home (``in_place=True`` skips the copy).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from streamrec.bench.load import K, LoadGenerator, Phase, PhaseResult, Target
from streamrec.bench.load_python import PythonLoad
from streamrec.bench.load_wrk import WrkLoad, wrk_binary
from streamrec.bench.profile import Recording, py_spy_binary
from streamrec.bench.report import write_result
from streamrec.config import load_settings
from streamrec.home import Home
from streamrec.registry import ITEMS_FILE, VERSION_FILE
from streamrec.serving.access import ADMIN_KEY_ENV, WRITE_KEY_ENV
from streamrec.store import open_store

STARTUP_SECONDS = 180.0  # model load + catalogue embeddings on a cold server, every worker
FRESHNESS_TIMEOUT = 5.0  # a probe not reflected after this long counts as unreflected
REQUEST_TIMEOUT = 60.0
WARMUP_SECONDS = 1.0  # connections opened, first-request costs paid, nothing recorded
MIXED_AFTER_EVENT = 0.1  # the mixed phase's share of requests right after an event of the user
PYTHON_BOUND_SHARE = 0.8  # a Python generator above this share of one core likely limits throughput
GENERATORS = ("wrk", "python")

WRITE_KEY = secrets.token_hex(16)  # the key this run's load sends
ADMIN_KEY = secrets.token_hex(16)  # the key its promotion sends

PHASES = (
    Phase("mixed", "recommend", after_event=MIXED_AFTER_EVENT),
    Phase("fresh", "recommend", after_event=1.0),
)


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tree_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and all its descendants, by pid (gone ones left out)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def _cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the tree used in between; a process that started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _check_home(home: Path) -> None:
    """Fail before any process starts, with a message the CLI can print as is."""
    if not home.exists():
        raise ValueError(f"no streamrec home at {home} (run `streamrec ingest` first)")
    opened = Home.open(home)
    if not opened.has_registry() or opened.registry.live() is None:
        raise ValueError(f"no live model in {home}: run `streamrec train --home {home}` first")


def _pick_generator(asked: str | None) -> tuple[str, str | None]:
    """The generator to run and, when the default could not be ``wrk``, a note saying why."""
    if asked is not None and asked not in GENERATORS:
        raise ValueError(f"load generator must be one of {', '.join(GENERATORS)}, not {asked!r}")
    if asked == "wrk" and wrk_binary() is None:
        raise ValueError("--load-generator wrk: no wrk binary on PATH (Debian: apt-get install wrk)")
    if asked is not None:
        return asked, None
    if wrk_binary() is not None:
        return "wrk", None
    return "python", (
        "no wrk binary on PATH, so the Python client generated the load; it shares the CPU with the"
        " server and is usually the bottleneck (Debian: apt-get install wrk)"
    )


def _add_copy_of_live(home: Path) -> tuple[str, str]:
    """Register a copy of the live version's files as a new candidate: (live, copy).

    Identical weights, so answers do not change; what a promotion to it measures is the swap.
    """
    registry = Home.open(home).registry
    live = registry.live()
    assert live is not None  # _check_home
    source = registry.path(live)

    def write(folder: Path) -> None:
        for path in source.iterdir():
            if path.name in (VERSION_FILE, ITEMS_FILE) or path.name.startswith("."):
                continue
            if path.is_dir():
                shutil.copytree(path, folder / path.name)
            else:
                shutil.copy2(path, folder / path.name)

    info = registry.get(live).to_dict()
    for name in ("version", "created_at", "status", "notes"):
        info.pop(name)
    info.update(status="candidate", parent=live, notes=f"a copy of {live} for bench serve --promote-during")
    return live, registry.add(write, registry.items(live), info).version


@dataclass(frozen=True)
class _Server:
    """A running ``streamrec serve``: its top process, address, log and number of workers."""

    process: subprocess.Popen
    base: str
    log_path: Path
    workers: int

    def until_workers(self, check: Callable[[dict], bool], deadline_s: float) -> list[int]:
        return _until_workers(self.base, self.workers, self.process, self.log_path, check, deadline_s)


@contextmanager
def _server(home: Path, port: int, log_path: Path, workers: int) -> Iterator[_Server]:
    """``streamrec serve`` as a child process; yields it once every worker answers, always stops it."""
    # no update worker: an update training beside the load would measure the update, not the server
    command = [
        *(sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)),
        *("--no-worker", "--workers", str(workers)),
    ]
    env = {**os.environ, WRITE_KEY_ENV: WRITE_KEY, ADMIN_KEY_ENV: ADMIN_KEY}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        running = _Server(process, f"http://127.0.0.1:{port}", log_path, workers)
        running.until_workers(lambda health: True, STARTUP_SECONDS)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _until_workers(
    base: str,
    workers: int,
    process: subprocess.Popen,
    log_path: Path,
    check: Callable[[dict], bool],
    deadline_s: float,
) -> list[int]:
    """Ask ``/health`` on new connections until ``workers`` processes have answered ``check``-ed.

    Each answer names its process (``X-Streamrec-Worker``); raises ``RuntimeError`` with the
    server's log when the server exits or the deadline passes.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while len(seen) < workers:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with status {process.returncode}:\n" + log_path.read_text()[-3000:]
            )
        try:
            answer = httpx.get(f"{base}/health", timeout=2, trust_env=False)
            if answer.status_code == 200 and check(answer.json()):
                seen.add(int(answer.headers["x-streamrec-worker"]))
        except httpx.TransportError:
            pass
        if len(seen) >= workers:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(seen)} of {workers} server processes answered /health as expected within"
                f" {deadline_s:.0f}s:\n" + log_path.read_text()[-3000:]
            )
        time.sleep(0.05)
    return sorted(seen)


def _cache_lookups(base: str) -> dict[str, float]:
    """The result cache's hit and miss counters from ``/metrics`` (all processes together)."""
    text = httpx.get(f"{base}/metrics", timeout=30, trust_env=False).text
    found = {}
    for result in ("hit", "miss"):
        sample = re.search(
            rf'^streamrec_recommend_cache_lookups_total{{result="{result}"}} (\S+)$', text, re.MULTILINE
        )
        found[result] = float(sample.group(1)) if sample else 0.0
    return found


class _Promotion:
    """``POST /admin/promote/{version}`` from a timer thread, ``delay`` s after ``start()``."""

    def __init__(self, base: str, version: str, delay: float) -> None:
        self.base, self.version = base, version
        self.record: dict[str, Any] = {}
        self.timer = threading.Timer(delay, self._promote)

    def start(self) -> None:
        self.timer.start()

    def join(self) -> dict[str, Any]:
        """Wait for the call; its status, answer, and when it was sent and returned (wall clock)."""
        self.timer.join()
        return self.record

    def _promote(self) -> None:
        sent = time.time()
        try:
            answer = httpx.post(
                f"{self.base}/admin/promote/{self.version}",
                headers={"X-API-Key": ADMIN_KEY},
                timeout=REQUEST_TIMEOUT,
                trust_env=False,
            )
            self.record.update(status=answer.status_code, answer=answer.text[:300])
        except httpx.HTTPError as error:
            self.record.update(status=None, answer=f"{type(error).__name__}: {error}")
        self.record.update(sent=sent, returned=time.time())


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


async def _freshness(
    base: str,
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
    async with httpx.AsyncClient(
        base_url=base, timeout=REQUEST_TIMEOUT, trust_env=False, headers={"X-API-Key": WRITE_KEY}
    ) as client:
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
                    answer = _check(await client.get(f"/recommend/{user}", params={"k": K})).json()
                    if item not in {entry["item_id"] for entry in answer["items"]}:
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
        "p90_ms": _percentile(times_ms, 90),
        "p95_ms": _percentile(times_ms, 95),
        "p99_ms": _percentile(times_ms, 99),
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


def _phase_json(phase: Phase, run: PhaseResult, server_cpu: float, cache: dict[str, float]) -> dict:
    seconds = max(run.seconds, 1e-9)
    body: dict[str, Any] = {
        "measured": "GET /recommend/{user}?k=10" if phase.kind == "recommend" else "POST /events (a batch)",
        "requests_per_s": round(run.requests_per_s, 2),
        "p50_ms": _percentile(run.latencies_ms, 50),
        "p90_ms": _percentile(run.latencies_ms, 90),
        "p99_ms": _percentile(run.latencies_ms, 99),
        "errors": run.errors,
        "errors_non_2xx": run.non_2xx,
        "errors_socket": run.socket_errors,
        "error_statuses": run.statuses,
        "error_examples": run.error_examples,
        "requests": run.requests,
        "events_posted": run.events_posted,
        "seconds": round(run.seconds, 3),
        "server_cpu_seconds": round(server_cpu, 3),
        "server_cpu_cores": round(server_cpu / seconds, 3),
        "generator_cpu_seconds": None if run.generator_cpu is None else round(run.generator_cpu, 3),
        "generator_cpu_cores": None if run.generator_cpu is None else round(run.generator_cpu / seconds, 3),
        "cache_hits": int(cache["hit"]),
        "cache_misses": int(cache["miss"]),
    }
    if phase.kind == "recommend":
        body["after_event_share"] = phase.after_event
    else:
        body["events_per_s"] = round(run.events_posted / seconds, 2)
        body["batch_size"] = phase.batch
    return body


def _promotion_json(
    record: dict[str, Any], run: PhaseResult, previous: str, version: str, phase_started: float
) -> dict[str, Any]:
    sent, returned = record["sent"], record["returned"]
    old, new = run.versions_seen.get(previous), run.versions_seen.get(version)
    failed_after = sum(1 for at in run.error_times if at >= sent)
    return {
        "version": version,
        "previous": previous,
        "status": record["status"],
        "answer": record["answer"],
        "sent_after_s": round(sent - phase_started, 3),
        "seconds": round(returned - sent, 3),
        "failed_requests": failed_after + run.socket_errors,
        "failed_requests_definition": (
            "non-2xx answers received after the promotion was sent, plus every socket error of the"
            " mixed phase (the generators do not time those, so all of them count)"
        ),
        "last_old_answer_after_s": None if old is None else round(old[1] - returned, 3),
        "first_new_answer_after_s": None if new is None else round(new[0] - returned, 3),
    }


def _cpu_note(generator: str, phases: dict[str, dict], cpus: int | None) -> str:
    """How much of the shared machine the generator took, and whether it likely limited throughput."""
    name, busiest = max(phases.items(), key=lambda kv: kv[1]["generator_cpu_cores"] or 0.0)
    share, server = busiest["generator_cpu_cores"] or 0.0, busiest["server_cpu_cores"]
    where = f"generator and server shared {cpus} CPU cores; the server used {server:.2f} cores then"
    if generator == "python" and share >= PYTHON_BOUND_SHARE:
        return (
            f"the single Python client used {share:.0%} of one core in the {name} phase, so it probably"
            f" limited throughput: the server's capacity is at least what is reported ({where})"
        )
    return f"the {generator} generator used at most {share:.2f} cores ({name} phase); {where}"


def _plot(path: Path, phases: dict[str, PhaseResult], fresh: dict[str, Any], title: str) -> None:
    import matplotlib.pyplot as plt  # the report module has selected the Agg backend

    figure, (bars, hist) = plt.subplots(1, 2, figsize=(12, 4))
    groups = {
        "mixed recommend": [_percentile(phases["mixed"].latencies_ms, q) for q in (50, 90, 99)],
        "fresh recommend": [_percentile(phases["fresh"].latencies_ms, q) for q in (50, 90, 99)],
        "events (per batch)": [_percentile(phases["events"].latencies_ms, q) for q in (50, 90, 99)],
        "freshness": [fresh["p50_ms"], fresh["p90_ms"], fresh["p99_ms"]],
    }
    width = 0.27
    for j, (label, colour) in enumerate(
        zip(("p50", "p90", "p99"), ("#4C72B0", "#DD8452", "#C44E52"), strict=True)
    ):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        values = [v[j] or 0.0 for v in groups.values()]
        drawn = bars.bar(xs, values, width, label=label, color=colour)
        bars.bar_label(drawn, labels=[f"{v:.1f}" if v else "" for v in values], fontsize=7)
    bars.set_xticks(range(len(groups)), list(groups), fontsize=8)
    bars.set_ylabel("milliseconds (generator side)")
    bars.set_yscale("symlog", linthresh=1.0)
    bars.legend(fontsize=8)
    bars.set_title("latency percentiles", fontsize=10)
    for name, colour in (("mixed", "#4C72B0"), ("fresh", "#DD8452")):
        if phases[name].latencies_ms:
            hist.hist(phases[name].latencies_ms, bins=60, color=colour, alpha=0.6, label=name)
    hist.set_xlabel("GET /recommend latency, ms")
    hist.set_ylabel("requests")
    hist.legend(fontsize=8)
    hist.set_title("recommend latency histogram", fontsize=10)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _measure(
    generator: LoadGenerator,
    phase: Phase,
    server: _Server,
    duration: float,
    concurrency: int,
    seed: int,
    promotion: tuple[str, str] | None,
    profile: Path | None = None,
) -> tuple[PhaseResult, dict[str, Any], dict[str, Any] | None]:
    """One phase with the server tree's CPU and cache lookups around it; ``promotion``: (live,
    copy) to promote halfway through; ``profile``: where py-spy writes this phase's samples.
    Returns what the generator saw, its JSON, the promotion's."""
    timer = None if promotion is None else _Promotion(server.base, promotion[1], duration / 2)
    pid = server.process.pid
    cache, cpu, started = _cache_lookups(server.base), _tree_cpu(pid), time.time()
    recording = None if profile is None else Recording(pid, duration, profile)
    if timer is not None:
        timer.start()
    run = generator.run(phase, duration, concurrency, seed)
    record = None if timer is None else timer.join()
    server_cpu = _cpu_between(cpu, _tree_cpu(pid))
    after = _cache_lookups(server.base)
    summary = _phase_json(phase, run, server_cpu, {result: after[result] - cache[result] for result in after})
    if recording is not None:
        summary["profile"] = recording.summary()
    if record is None or promotion is None:
        return run, summary, None
    promoted = _promotion_json(record, run, *promotion, started)
    try:  # each process follows the live pointer within a second or so
        server.until_workers(lambda health: health["model_version"] == promotion[1], 30.0)
        promoted["every_worker_serves_it"] = True
    except RuntimeError:
        promoted["every_worker_serves_it"] = False
    return run, summary, promoted


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
    workers: int = 1,
    load_generator: str | None = None,
    promote_during: bool = False,
    profile: bool = False,
) -> dict:
    """Run the phases against a ``streamrec serve`` child process; write JSON + PNG to ``out``.

    ``load_generator``: ``wrk``, ``python``, or None for ``wrk`` when installed. ``profile``:
    sample the server with py-spy during the recommend phases (:mod:`streamrec.bench.profile`). Raises
    ``ValueError`` (a message for the user) when the home has no live model or no events or
    an option is wrong, and ``RuntimeError`` (with a log) when the server or wrk fails.
    """
    home = Path(home)
    out = Path(out)
    if duration <= 0 or concurrency < 1 or event_batch < 1 or workers < 1:
        raise ValueError("duration must be positive; concurrency, event batch and workers at least 1")
    if promote_during and in_place:
        raise ValueError("--promote-during adds a version and makes it live: not with --in-place")
    generator_name, generator_note = _pick_generator(load_generator)
    if profile:
        py_spy_binary()
    _check_home(home)
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-serve-") as tmp:
        target = home
        if not in_place:  # the synthetic events must not end up in the real log
            target = Path(tmp) / "home"
            shutil.copytree(home, target, ignore=shutil.ignore_patterns("*-shm"))
        promotion = _add_copy_of_live(target) if promote_during else None
        server_settings = load_settings(target).server  # as the server reads them, env included
        with open_store(target) as store:
            stats = store.stats()
            table = store.log.sequences()
        users, items = list(table.users), list(table.items)
        del table
        if not users:
            raise ValueError(f"the event log in {home} is empty: ingest events before benchmarking")
        # Benchmark events must be each user's newest, whatever clock the log's timestamps follow.
        offset = max(time.time(), float(stats["last_timestamp"] or 0.0) + 1.0) - time.time()

        def event_ts() -> float:
            return time.time() + offset

        port = port or _free_loopback_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        load = Target(base, WRITE_KEY, users, items, offset, uuid.uuid4().hex[:12])
        generator: LoadGenerator = (
            WrkLoad(load, Path(tmp) / "wrk") if generator_name == "wrk" else PythonLoad(load)
        )
        runs: dict[str, PhaseResult] = {}
        phases: dict[str, dict] = {}
        promoted: dict[str, Any] | None = None
        with _server(target, port, log_path, workers) as server:
            health = httpx.get(f"{base}/health", timeout=10, trust_env=False).json()
            server_processes = len(_tree_cpu(server.process.pid))
            warm = generator.run(Phase("warmup", "recommend"), WARMUP_SECONDS, concurrency, seed + 99)
            for number, phase in enumerate((*PHASES, Phase("events", "events", batch=event_batch))):
                swap = promotion if phase.name == "mixed" else None
                samples = Path(tmp) / f"{phase.name}.pyspy" if profile and phase.kind == "recommend" else None
                run, phases[phase.name], promoted_here = _measure(
                    generator, phase, server, duration, concurrency, seed + number, swap, samples
                )
                runs[phase.name] = run
                promoted = promoted_here or promoted
            cpu, started = _tree_cpu(server.process.pid), time.perf_counter()
            fresh = asyncio.run(_freshness(base, users, freshness_probes, random.Random(seed + 2), event_ts))
            fresh["seconds"] = round(time.perf_counter() - started, 3)
            fresh["server_cpu_seconds"] = round(_cpu_between(cpu, _tree_cpu(server.process.pid)), 3)
        server_alive = server.process.poll() is None

    cpus = os.cpu_count()
    default_command = (
        f"streamrec bench serve --home {home} --duration {duration} --concurrency {concurrency}"
        f" --workers {workers} --load-generator {generator_name} --out {out}"
        + (" --promote-during" if promote_during else "")
        + (" --profile" if profile else "")
    )
    result: dict[str, Any] = {
        "benchmark": "serve",
        "command": command or default_command,
        "home_stats": {"events": stats["events"], "users": stats["users"], "items": stats["items"]},
        "home_copied": not in_place,
        "model_version": health["model_version"],
        "duration_s": duration,
        "concurrency": concurrency,
        "workers": workers,
        "micro_batch": server_settings.micro_batch,
        "record_impressions": server_settings.record_impressions,
        "load_generator": generator_name,
        "load_generator_detail": generator.describe(),
        "load_generator_note": generator_note,
        "warmup_s": round(warm.seconds, 3),
        **phases,
        "freshness_ms_p50": fresh["p50_ms"],
        "freshness_ms_p95": fresh["p95_ms"],
        "freshness": fresh,
        "promotion": promoted,
        "cpu_note": _cpu_note(generator_name, phases, cpus),
        "server": {
            "command": "python -m streamrec.cli serve --home HOME --port PORT --no-worker"
            f" --workers {workers}",
            "workers": workers,
            "processes": server_processes,
            "pid": server.process.pid,
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
        runs,
        fresh,
        f"streamrec serve, {workers} worker(s); {generator_name} with {concurrency} connections;"
        f" {duration:g}s per phase; {stats['events']:,} events in the log",
    )
    return json.loads(json.dumps(result))
