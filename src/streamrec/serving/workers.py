"""Several server processes on one port: what the serve command hands each, and what tells them apart.

uvicorn starts each worker process afresh (``spawn``) and builds its app from an
import string, so the serve command passes the home and options through the
environment (:func:`worker_environment`, read back by
``streamrec.serving.app:app_from_environment``). Metrics go to a fresh
``PROMETHEUS_MULTIPROC_DIR`` that every worker writes and any worker's
``/metrics`` merges (:func:`shared_metrics`). Each answer names the process that
gave it in ``X-Streamrec-Worker`` (:class:`WorkerHeader`).

>>> env = worker_environment("/srv/recs", torch_threads=2, api_key=None)
>>> env[HOME_ENV].endswith("recs"), env[TORCH_THREADS_ENV]
(True, '2')
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streamrec.serving.metrics import MULTIPROC_ENV, ASGIApp, Message, Scope

HOME_ENV = "STREAMREC_SERVE_HOME"
TORCH_THREADS_ENV = "STREAMREC_SERVE_TORCH_THREADS"
API_KEY_ENV = "STREAMREC_API_KEY"  # what Keys.from_env reads when no key is passed
WORKER_HEADER = b"x-streamrec-worker"

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def worker_environment(home: str | Path, *, torch_threads: int, api_key: str | None) -> dict[str, str]:
    """The variables a worker process needs to build the same app as ``create_app(home, api_key=…)``."""
    env = {HOME_ENV: str(Path(home).resolve()), TORCH_THREADS_ENV: str(torch_threads)}
    if api_key:
        env[API_KEY_ENV] = api_key
    return env


@contextmanager
def shared_metrics() -> Iterator[Path]:
    """A fresh, empty ``PROMETHEUS_MULTIPROC_DIR`` for the workers started inside; removed afterwards.

    Fresh because counters in a directory left by an earlier run would be added to this one's.
    It must be set before a worker imports ``prometheus_client``: uvicorn's spawned workers
    import everything anew and inherit this process's environment.
    """
    previous = os.environ.get(MULTIPROC_ENV)
    folder = Path(tempfile.mkdtemp(prefix="streamrec-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


class WorkerHeader:
    """Pure ASGI middleware: every HTTP answer carries this process's pid (which worker answered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (WORKER_HEADER, str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_pid)
