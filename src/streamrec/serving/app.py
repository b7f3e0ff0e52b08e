"""The FastAPI application: wiring only (runtime in ``lifespan``, routers, access, errors, metrics).

>>> app = create_app("/nonexistent-home")  # nothing is loaded until the server starts
>>> sorted(path for path in app.openapi()["paths"] if path.startswith("/admin"))
['/admin/models', '/admin/promote/{version}', '/admin/reload', '/admin/rollback', '/admin/update']
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI

from streamrec.config import load_settings
from streamrec.serving import openapi, problems, routes
from streamrec.serving.access import Access, BodyLimit, Keys
from streamrec.serving.metrics import MetricsMiddleware, ServingMetrics
from streamrec.serving.runtime import Runtime
from streamrec.serving.updates import UpdateJobs, WorkerProcess

# Threads running request handlers; bench serve on ML-1M: 1 → 506 rps, 2 → 444, 4 → 354, 40 → 249.
WORKER_THREADS = 1
POLL_SECONDS = 1.0  # how often the server checks the registry for a version promoted elsewhere

log = logging.getLogger(__name__)


class LiveWatcher:
    """A background thread that follows the registry's live pointer (promotions by other processes)."""

    def __init__(self, runtime: Runtime, interval: float = POLL_SECONDS) -> None:
        self.runtime = runtime
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamrec-live-watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.runtime.refresh():
                    log.info("picked up promoted model %s", self.runtime.loaded.version)
            except Exception:  # a broken version must not kill the watcher; keep serving the old one
                log.exception("could not swap to the registry's live version")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def create_app(
    home: str | Path,
    *,
    api_key: str | None = None,
    write_key: str | None = None,
    read_key: str | None = None,
    worker: bool = False,
) -> FastAPI:
    """The HTTP API over the home's store and live model.

    Keys (else ``STREAMREC_API_KEY``, ``STREAMREC_WRITE_KEY``, ``STREAMREC_READ_KEY``):
    see :mod:`streamrec.serving.access`; request limits and open writes come from the
    home's ``[server]`` settings. ``worker`` runs ``streamrec worker`` beside the
    server, so the model keeps learning.
    """
    home = Path(home)
    settings = load_settings(home)
    access = Access(Keys.from_env(api_key, write_key, read_key), settings.server)
    if access.open_writes:
        log.warning("server.open_writes is on: anyone who reaches this server can write events and items")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Few worker threads: request handlers are short and CPU-bound, so more threads than
        # cores only fight over the GIL (see WORKER_THREADS for the measurement).
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        runtime = Runtime.open(home)
        await anyio.to_thread.run_sync(runtime.warm_up)
        watcher = LiveWatcher(runtime)
        app.state.runtime = runtime
        app.state.updates = UpdateJobs(home)
        learner = WorkerProcess(home) if worker else None
        watcher.start()
        if learner is not None:
            learner.start()
        try:
            yield
        finally:
            if learner is not None:
                learner.stop()
            watcher.stop()
            runtime.close()

    app = FastAPI(
        title="streamrec",
        summary="Real-time recommendations and personalised search from a continually learning model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.event_schema = settings.event_schema()
    app.state.access = access
    app.state.metrics = metrics = ServingMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    limit = settings.server.max_body_bytes
    app.add_middleware(BodyLimit, max_bytes=limit, too_large=lambda: problems.too_large(limit))
    problems.install(app)
    openapi.install(app, access, routes.ROLES, settings.event_types)
    for router in routes.ROUTERS:
        app.include_router(router)
    return app


def serve(
    home: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    access_log: bool = False,
    torch_threads: int = 1,
    worker: bool = True,
) -> None:
    """Run the API with uvicorn in this process (one worker: the runtime holds the model in memory).

    Each request's forward pass is small, so torch runs single-threaded here: several
    requests in parallel beat one request split over cores that the handlers' thread
    pool is already contending for. A per-request access log is off by default (its
    write costs as much as a recommendation); ``/metrics`` counts every request anyway.
    """
    import torch
    import uvicorn

    torch.set_num_threads(torch_threads)
    uvicorn.run(
        create_app(home, api_key=api_key, worker=worker),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
    )
