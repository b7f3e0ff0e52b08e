"""Fuzz the HTTP API against its own OpenAPI schema with schemathesis (issue #20), long.

Builds a small trained home, starts ``streamrec serve`` on loopback with an admin key, and runs
``schemathesis run --checks all`` over every operation: generated valid and invalid requests,
each answer checked for 5xx, undocumented status codes, headers and bodies off their schema,
invalid input accepted and valid input refused. The run with the key reaches past
authentication; ``--without-key`` adds a pass that sends none (the documented 401s). First it
measures the request bounds: a 100 MB body (declared, then streamed without a length) and a
600,000-event batch, each with its status, time, answer size and the server's RSS growth::

    .venv/bin/python scripts/fuzz_api.py --examples 500 --seeds 1,2 --without-key --out results/fuzz-api.json

``tests/test_api_fuzz.py`` runs the same functions with few examples in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

KEY = "fuzz-admin-key"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def build_home(home: Path) -> Path:
    """A small home with a live text-aware model (search, cold start and updates all reachable)."""
    stream = generate(StreamConfig(users=40, items=60, events=1200, seed=2))
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([EventSchema().validate(event) for event in stream.events()])
    model = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    train_and_register(Home(home, Settings()), model, text_model="all-MiniLM-L6-v2", progress=False)
    return home


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    pid: int


@contextmanager
def running_server(home: Path, key: str = KEY) -> Iterator[Server]:
    """``streamrec serve`` on a free loopback port with ``key`` as its admin key."""
    port = free_port()
    log = home.parent / "server.log"
    command = [sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)]
    env = {**os.environ, "STREAMREC_API_KEY": key}
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--no-worker"], stdout=output, stderr=output, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError("the server exited:\n" + log.read_text()[-3000:])
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /health:\n" + log.read_text()[-3000:])
            time.sleep(0.3)
        yield Server(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def fuzz(url: str, examples: int, *, key: str | None, seed: int = 1) -> tuple[dict[str, Any], str]:
    """One ``schemathesis run --checks all`` over every operation; returns its JSON report and output."""
    scratch = Path(tempfile.mkdtemp(prefix="streamrec-fuzz-"))  # schemathesis keeps state in its cwd
    report = scratch / "report.json"
    command = [
        str(SCHEMATHESIS),
        *("run", f"{url}/openapi.json", "--checks", "all", "--workers", "1", "--seed", str(seed)),
        *("--max-examples", str(examples), "--generation-database", "none", "--no-color"),
        *("--report", "json", "--report-json-path", str(report)),
        *(("--header", f"X-API-Key: {key}") if key else ()),
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {run.returncode}):\n{run.stdout[-3000:]}")
    return json.loads(report.read_text()), run.stdout


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a run found: cases, failures by check, errors, and whether every phase completed."""
    failures: dict[str, int] = {}
    for failure in report["failures"]:
        name = failure.get("check") or failure.get("title") or "unknown"
        failures[name] = failures.get(name, 0) + 1
    return {
        "cases": report["test_cases"]["generated"],
        "with_failures": report["test_cases"]["with_failures"],
        "unique_failures": report["test_cases"]["unique_failures"],
        "errored": report["test_cases"]["errored"],
        "failures_by_check": failures,
        "failures": [  # what each failure was about, without the generated request bodies
            {key: value for key, value in failure.items() if _short(value)} for failure in report["failures"]
        ],
        "errors": len(report["errors"]),
        "operations_tested": report["operations"]["tested"],
        "phases": {name: phase["status"] for name, phase in report["phases"].items()},
        "seconds": round(report["running_time"], 1),
        "exit_code": report["exit_code"],
    }


def probe_limits(server: Server, *, megabytes: int = 100, events: int = 600_000) -> dict[str, Any]:
    """Huge bodies, declared and streamed, and a huge valid batch: status, time, answer size, RSS growth."""
    process = psutil.Process(server.pid)
    headers = {"X-API-Key": KEY, "content-type": "application/json"}
    chunk = b"[" + b"1," * (512 * 1024 - 1)  # 1 MiB of a JSON array that never ends

    def streamed() -> Iterator[bytes]:
        for _ in range(megabytes):
            yield chunk

    event = b'{"user_id":"u1","item_id":"i1","event_type":"view"}'
    batch = b"[" + b",".join([event] * events) + b"]"
    probes = {
        f"{megabytes}_mb_declared": {"content": b"[" + b"1," * (megabytes * 512 * 1024) + b"1]"},
        f"{megabytes}_mb_streamed": {"content": streamed()},
        f"{events}_events": {"content": batch},
    }
    found = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name, request in probes.items():
            before = process.memory_info().rss
            started = time.perf_counter()
            try:
                response = client.post("/events", headers=headers, **request)
                status, size = response.status_code, len(response.content)
            except httpx.HTTPError as error:  # the server may close the connection after its 413
                status, size = type(error).__name__, 0
            seconds = time.perf_counter() - started
            grown = (process.memory_info().rss - before) / 2**20
            found[name] = {
                "body_bytes": len(request["content"]) if isinstance(request["content"], bytes) else None,
                "status": status,
                "seconds": round(seconds, 3),
                "answer_bytes": size,
                "server_rss_growth_mb": round(grown, 1),
            }
            print(name, found[name])
    return found


def _short(value: object) -> bool:
    return isinstance(value, str | int) and len(str(value)) < 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=400, help="generated cases per operation and phase")
    parser.add_argument("--seeds", default="1", help="comma-separated: one pass with the key per seed")
    parser.add_argument("--without-key", action="store_true", help="also a pass that sends no key")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="streamrec-fuzz-home-") as scratch:
        home = build_home(Path(scratch) / "home")
        with running_server(home) as server:
            limits = probe_limits(server)
            seeds = [int(seed) for seed in args.seeds.split(",")]
            passes = [(f"with_admin_key_seed_{seed}", KEY, seed) for seed in seeds]
            if args.without_key:
                passes.append(("without_key", None, seeds[0]))
            for name, key, seed in passes:
                report, output = fuzz(server.url, args.examples, key=key, seed=seed)
                runs[name] = summary(report)
                print(name, json.dumps(runs[name]))
                if runs[name]["unique_failures"] or runs[name]["errors"]:
                    print(output[output.find("FAILURES") :][:8000])
    result = {
        "command": "python " + " ".join(sys.argv),
        "schemathesis": f"schemathesis run --checks all --max-examples {args.examples} --seed S",
        "request_limits": limits,
        "runs": runs,
        "cases": sum(run["cases"] for run in runs.values()),
        "failures": sum(run["unique_failures"] + run["errors"] for run in runs.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
