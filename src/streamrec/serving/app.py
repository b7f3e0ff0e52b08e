"""The FastAPI application: wiring only (runtime in ``lifespan``, routers, access, errors, metrics).

>>> app = create_app("/nonexistent-home")  # nothing is loaded until the server starts
>>> sorted(path for path in app.openapi()["paths"] if path.startswith("/admin/"))[:4]
['/admin/ab', '/admin/ab/stop', '/admin/models', '/admin/promote/{version}']
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI

from streamrec.config import load_settings
from streamrec.serving import dashboard, openapi, problems, routes
from streamrec.serving.access import Access, BodyLimit, Keys
from streamrec.serving.batching import Batcher
from streamrec.serving.impressions import ImpressionRecorder
from streamrec.serving.metrics import MetricsMiddleware, ServingMetrics
from streamrec.serving.runtime import Runtime
from streamrec.serving.updates import UpdateJobs, WorkerProcess
from streamrec.serving.workers import (
    HOME_ENV,
    TORCH_THREADS_ENV,
    WorkerHeader,
    shared_metrics,
    worker_environment,
)

# Threads running request handlers; bench serve on ML-1M: 1 → 506 rps, 2 → 444, 4 → 354, 40 → 249.
WORKER_THREADS = 1
POLL_SECONDS = 1.0  # how often the server checks the registry for a version promoted elsewhere
FACTORY = "streamrec.serving.app:app_from_environment"  # what each of several worker processes runs
# uvicorn replaces a worker that does not answer its parent's ping in this long (its default, 5 s,
# is less than a worker can spend importing torch and loading the model on a busy machine).
HEALTHCHECK_SECONDS = 30

log = logging.getLogger(__name__)


class LiveWatcher:
    """A background thread that follows the registry's live pointer, its running experiment and the
    catalogue's revision (changes by other processes: other server workers, the CLI, ``streamrec ingest``).

    Each tick also sets the live-model gauges, so with several worker processes every
    worker's series is current, not only the one a scrape happens to reach.
    """

    def __init__(
        self, runtime: Runtime, metrics: ServingMetrics | None = None, interval: float = POLL_SECONDS
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamrec-live-watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.runtime.refresh():
                    log.info("picked up promoted model %s", self.runtime.loaded.version)
                elif self.runtime.follow_catalogue():
                    log.info("picked up catalogue changes made by another process")
                self.runtime.follow_experiment()
            except Exception:  # a broken version must not kill the watcher; keep serving the old one
                log.exception("could not swap to the registry's live version or catalogue")
            self._note_model()

    def _note_model(self) -> None:
        if self.metrics is not None:
            loaded = self.runtime.loaded
            self.metrics.set_model(loaded.version, loaded.loaded_at)

    def start(self) -> None:
        self.runtime.follow_experiment()
        self._note_model()
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
    server, so the model keeps learning (``serve`` with several processes runs it in
    their parent instead, once).
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
        metrics: ServingMetrics = app.state.metrics
        runtime = Runtime.open(home, on_cache=metrics.observe_cache)
        await anyio.to_thread.run_sync(runtime.warm_up)
        watcher = LiveWatcher(runtime, metrics)
        app.state.runtime = runtime
        app.state.batcher = batcher = Batcher(runtime.recommend_many, settings.server.micro_batch)
        app.state.impressions = impressions = ImpressionRecorder(
            runtime.store.impressions,
            on_written=metrics.impressions_written.inc,
            on_dropped=metrics.impressions_dropped.inc,
            enabled=settings.server.record_impressions,
            user_key=runtime.user_key,
        )
        app.state.updates = UpdateJobs(home)
        learner = WorkerProcess(home) if worker else None
        watcher.start()
        batcher.start()
        impressions.start()
        if learner is not None:
            learner.start()
        try:
            yield
        finally:
            if learner is not None:
                learner.stop()
            batcher.stop()
            impressions.stop()
            watcher.stop()
            runtime.close()
            metrics.close()

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
    app.add_middleware(WorkerHeader)
    limit = settings.server.max_body_bytes
    app.add_middleware(BodyLimit, max_bytes=limit, too_large=lambda: problems.too_large(limit))
    problems.install(app)
    openapi.install(app, access, routes.ROLES, settings.event_types)
    for router in (*routes.ROUTERS, dashboard.page, dashboard.data):
        app.include_router(router)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory in each worker process of ``serve(workers=N)``: the app ``serve`` describes
    in the environment (see :func:`streamrec.serving.workers.worker_environment`)."""
    import torch

    torch.set_num_threads(int(os.environ.get(TORCH_THREADS_ENV, "1")))
    return create_app(os.environ[HOME_ENV])


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
    workers: int = 1,
) -> None:
    """Run the API with uvicorn: in this process, or in ``workers`` processes on one port.

    Each worker process holds its own copy of the live model and answers from the shared
    store and registry; its :class:`LiveWatcher` follows promotions, rollbacks and
    catalogue writes made through any of them. Their metrics meet in a fresh ``PROMETHEUS_MULTIPROC_DIR``.

    The update worker (``worker``) runs once whatever ``workers`` is. One process runs it
    in its lifespan (``create_app(worker=True)``, stopped before uvicorn re-raises a
    SIGTERM). With several, this parent starts it before uvicorn and stops it after:
    no election among the server processes to get wrong, and it outlives uvicorn's
    restarts of a crashed worker.

    Each request's forward pass is small, so torch runs single-threaded here: several
    requests in parallel beat one request split over cores that the handlers' thread
    pool is already contending for. A per-request access log is off by default (its
    write costs as much as a recommendation); ``/metrics`` counts every request anyway.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    options = {"host": host, "port": port, "log_level": log_level, "access_log": access_log}
    if workers == 1:
        import torch

        torch.set_num_threads(torch_threads)
        uvicorn.run(create_app(home, api_key=api_key, worker=worker), **options)
        return
    learner = WorkerProcess(Path(home)) if worker else None
    if learner is not None:
        learner.start()  # before the metrics folder is set: it is the server processes' alone
    try:
        os.environ.update(worker_environment(home, torch_threads=torch_threads, api_key=api_key))
        with shared_metrics():
            uvicorn.run(
                FACTORY,
                factory=True,
                workers=workers,
                timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
                **options,
            )
    finally:
        if learner is not None:
            learner.stop()
