"""A real ``redis-server`` for the tests (and the consume drill), started here on a free local port.

Tests use the session fixture ``redis_url`` (import it into the test module); they skip, saying
why, where the binary is missing (``scripts/install_servers.sh`` installs it with apt). The
server keeps nothing on disk (no RDB snapshots, no AOF) and lives in a scratch folder.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
START_SECONDS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def running_redis(directory: Path, binary: str | None = REDIS_SERVER) -> Iterator[str]:
    """A ``redis-server`` on 127.0.0.1 with ``directory`` as its folder; yields its URL, stops it after."""
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    for _attempt in range(3):  # another process may take the free port first
        port = _free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(log)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while server.poll() is None and time.monotonic() < deadline and not _answers(port):
            time.sleep(0.05)
        if server.poll() is None and _answers(port):
            break
        server.kill()
        server.wait()
    else:
        raise RuntimeError(f"redis-server did not start:\n{log.read_text()[-2000:] if log.exists() else ''}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a server shared by the session's tests (each uses its own streams)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/install_servers.sh installs it with apt)")
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
