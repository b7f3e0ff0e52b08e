"""A throwaway PostgreSQL server for the tests, started from the installed binaries.

The cluster lives in a fresh temporary folder (never the system cluster): ``initdb``,
then ``postgres`` on 127.0.0.1 with its unix socket in that folder, one database,
stopped with ``pg_ctl stop -m fast`` at the end of the session. PostgreSQL refuses to
run as root, so as root the server runs as the unprivileged ``postgres`` user
(``scripts/install_servers.sh`` installs the binaries and creates the user). Where any
of that is missing or fails, the tests that need it skip, saying why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"  # who runs the server when the tests run as root
DATABASE = "streamrec_test"
ROLE = "streamrec"
INSTALL_HINT = "run `bash scripts/install_servers.sh` (or set STREAMREC_PG_BIN to PostgreSQL's bin folder)"


def postgres_bin() -> Path | None:
    """``STREAMREC_PG_BIN``, else the newest ``/usr/lib/postgresql/N/bin`` that has ``initdb``."""
    if "STREAMREC_PG_BIN" in os.environ:
        folder = Path(os.environ["STREAMREC_PG_BIN"])
        return folder if (folder / "initdb").exists() else None
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """``postgresql://streamrec@127.0.0.1:PORT/streamrec_test`` on a server of this session's own."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip(f"PostgreSQL binaries not found: {INSTALL_HINT}")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(
                f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL: {INSTALL_HINT}"
            )
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser` to start PostgreSQL as an unprivileged user")
        user = SERVER_USER
    folder = Path(tempfile.mkdtemp(prefix="streamrec-pg-"))  # under /tmp: the server user can reach it
    data, log = folder / "data", folder / "server.log"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust", "--no-sync"]
        done = _run([*initdb, "-E", "UTF8", "--no-locale"], user)
        if done.returncode != 0:
            pytest.skip(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections=200"
        done = _run([*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"], user)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else done.stderr[-800:]
            pytest.skip(f"PostgreSQL did not start ({done.returncode}): {tail}")
        started = True
        with psycopg.connect(f"postgresql://{ROLE}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            _run([*pg_ctl, "-m", "fast", "-w", "stop"], user)
        shutil.rmtree(folder, ignore_errors=True)
