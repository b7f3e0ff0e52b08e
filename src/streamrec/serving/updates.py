"""Model updates next to the server: on request (``POST /admin/update``) and by the worker.

Both run as child processes (``streamrec update`` / ``streamrec worker``):
training then never holds the server's interpreter, a crash in it cannot take
the API down, and the server picks up a promoted version through its registry
watcher exactly as it would from any other process.

With several server processes, each has its own :class:`UpdateJobs`; a launch lock
that the ``streamrec update`` child holds for its whole life keeps them to one
update at a time (the home's update lock is only taken once the child has started
Python and torch, seconds later, too late to turn a second request away).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from streamrec.home import Home, UpdateInProgress

LOG_FILE = "update.log"
WORKER_LOG_FILE = "worker.log"
LAUNCH_LOCK_FILE = ".update-launch.lock"  # in models/: held by a server-started update while it runs


def _streamrec(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "streamrec.cli", *arguments]


def _claim_launch(home: Home) -> IO[str]:
    """The launch lock, held through the returned file; ``UpdateInProgress`` if another process has it.

    ``flock`` belongs to the open file, which a child started with the descriptor shares:
    the lock then lasts until the child exits, even after the server closes its copy.
    """
    path = home.models / LAUNCH_LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UpdateInProgress("an update started by another server process is still running") from None
    return handle


class UpdateJobs:
    """At most one ``streamrec update`` child at a time; remembers the last one's outcome."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._started_at: float | None = None
        self._strategy: str | None = None

    def start(self, strategy: str | None = None) -> dict[str, Any]:
        """Launch an update now; ``UpdateInProgress`` if one is running here or in another process."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                raise UpdateInProgress(f"update (pid {self._process.pid}) is still running")
            home = Home.open(self.home)
            with _claim_launch(home) as launch:  # the child keeps it; this process lets go at once
                with home.update_lock():  # raises if the worker or a CLI update holds it
                    pass
                arguments = ["update", "--home", str(self.home), "--json", "--quiet"]
                if strategy:
                    arguments += ["--strategy", strategy]
                with (self.home / LOG_FILE).open("w") as log:
                    self._process = subprocess.Popen(
                        _streamrec(*arguments),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        pass_fds=(launch.fileno(),),
                    )
            self._started_at, self._strategy = time.time(), strategy
            return self.status()

    def status(self) -> dict[str, Any]:
        """This process's running or last update (another server process's is not seen here)."""
        process = self._process
        if process is None:
            return {"running": False, "pid": None, "started_at": None, "exit_code": None, "output": ""}
        exit_code = process.poll()
        log = self.home / LOG_FILE
        output = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        return {
            "running": exit_code is None,
            "pid": process.pid,
            "started_at": self._started_at,
            "strategy": self._strategy,
            "exit_code": exit_code,
            "output": output,
        }


class WorkerProcess:
    """``streamrec worker`` as a child of the server, stopped with it."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.home / WORKER_LOG_FILE).open("a") as log:
            self._process = subprocess.Popen(
                _streamrec("worker", "--home", str(self.home)), stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # an update in flight dies with it: the registry stays consistent
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
