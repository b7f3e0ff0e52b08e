"""The running server keeps its own OpenAPI schema, under generated requests (schemathesis, every check).

A real ``streamrec serve`` on loopback over a small home; schemathesis generates valid and
invalid requests for every operation from ``/openapi.json`` and runs all of its checks on each
answer (``--checks all``): no 5xx, every status code, header and body as documented, invalid
input refused. Requests go with the admin key, so they reach past authentication; one more
pass sends no key, so the documented 401s are checked too. ``scripts/fuzz_api.py`` runs the
same thing long.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

pytestmark = pytest.mark.slow

KEY = "fuzz-admin-key"
EXAMPLES = 25  # generated requests per operation and phase, in make test


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("fuzz-home")
    stream = generate(StreamConfig(users=40, items=60, events=1200, seed=2))
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([EventSchema().validate(event) for event in stream.events()])
    model = SASRecConfig(hidden=16, layers=1, max_len=20, epochs=1, batch_size=64)
    train_and_register(Home(home, Settings()), model, text_model="all-MiniLM-L6-v2", progress=False)
    port = free_port()
    log = home.parent / "server.log"
    command = [sys.executable, "-m", "streamrec.cli", "serve", "--home", str(home), "--port", str(port)]
    env = {**os.environ, "STREAMREC_API_KEY": KEY}
    with log.open("w") as output:
        process = subprocess.Popen([*command, "--no-worker"], stdout=output, stderr=output, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start:\n" + log.read_text()
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def schemathesis_run(url: str, *options: str) -> subprocess.CompletedProcess:
    """``schemathesis run`` with every check over every operation; exit 0 means no failure."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        *("run", f"{url}/openapi.json", "--checks", "all", "--workers", "1", "--seed", "1"),
        *("--generation-database", "none", "--no-color", *options),
    ]
    scratch = tempfile.mkdtemp(prefix="streamrec-fuzz-")  # schemathesis writes its state in its cwd
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=scratch)


def test_every_operation_keeps_its_schema_with_the_admin_key(server: str) -> None:
    run = schemathesis_run(server, "--max-examples", str(EXAMPLES), "--header", f"X-API-Key: {KEY}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-3000:]


def test_every_operation_keeps_its_schema_without_a_key(server: str) -> None:
    run = schemathesis_run(server, "--max-examples", "5")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
