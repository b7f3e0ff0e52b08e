"""The server's Prometheus metrics (through ``prometheus_client``) and the ASGI middleware that feeds them.

Each app gets its own ``CollectorRegistry``, so several apps in one process (tests)
never collide. With ``PROMETHEUS_MULTIPROC_DIR`` set (before ``prometheus_client``
is imported, as that library requires), values live in files shared by all worker
processes and a scrape merges them with ``MultiProcessCollector``.

>>> metrics = ServingMetrics()
>>> metrics.events_ingested.inc(2)
>>> b"streamrec_events_ingested_total 2.0" in metrics.render()
True
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The buckets the hand-written exporter had, so existing dashboards keep their `le` series.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class ProcessCollector(Collector):
    """This process's CPU time and resident memory from psutil, portable where ``/proc`` is not."""

    def __init__(self) -> None:
        self._process = psutil.Process()

    def collect(self) -> Iterator[Metric]:
        with self._process.oneshot():
            cpu, rss = self._process.cpu_times(), self._process.memory_info().rss
        yield CounterMetricFamily(
            "process_cpu_seconds_total", "User + system CPU time, in seconds.", cpu.user + cpu.system
        )
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size, in bytes.", value=rss)


class ServingMetrics:
    """The server's metrics: requests, latency, events ingested, cache lookups, the live model, the process.

    In multiprocess mode the model gauges carry a ``pid`` label (each worker holds its own
    model; a dead worker's drop out once ``multiprocess.mark_process_dead`` runs for it) and
    process figures are left out, as one worker's would pass for all of them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streamrec_http_requests_total", "HTTP requests by route template, method and status.",
            ("route", "method", "status"), registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "streamrec_http_request_duration_seconds", "Time to answer an HTTP request, by route.",
            ("route",), registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.events_ingested = Counter(
            "streamrec_events_ingested_total", "Events appended to the log through POST /events.",
            registry=self.registry,
        )  # fmt: skip
        self.items_upserted = Counter(
            "streamrec_items_upserted_total", "Catalogue items written through PUT /items.",
            registry=self.registry,
        )  # fmt: skip
        self.live_model = Gauge(
            "streamrec_live_model", "1 for the model version this server answers with, 0 for earlier ones.",
            ("version",), registry=self.registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.model_updated = Gauge(
            "streamrec_model_last_update_timestamp_seconds", "When the served model version was loaded.",
            registry=self.registry, multiprocess_mode="liveall",
        )  # fmt: skip
        cache = Counter(
            "streamrec_recommend_cache_lookups_total",
            "GET /recommend/{user_id} lookups in the per-version result cache, by result: hit or miss.",
            ("result",), registry=self.registry,
        )  # fmt: skip
        self._cache_hits, self._cache_misses = cache.labels("hit"), cache.labels("miss")
        impressions = Counter(
            "streamrec_impressions_total",
            "Answers shown, by what became of their record: written (to the store) or dropped.",
            ("result",), registry=self.registry,
        )  # fmt: skip
        self.impressions_written = impressions.labels("written")
        self.impressions_dropped = impressions.labels("dropped")
        self._version: str | None = None
        self._version_lock = threading.Lock()
        if os.environ.get(MULTIPROC_ENV):
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)
        else:
            self.registry.register(ProcessCollector())
            self.exposed = self.registry

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_cache(self, hit: bool) -> None:
        (self._cache_hits if hit else self._cache_misses).inc()

    def set_model(self, version: str, loaded_at: float) -> None:
        """The previous version drops to 0 rather than vanishing: multiprocess mode cannot remove series."""
        with self._version_lock:
            if self._version not in (None, version):
                self.live_model.labels(self._version).set(0)
            self.live_model.labels(version).set(1)
            self._version = version
        self.model_updated.set(loaded_at)

    def render(self) -> bytes:
        return generate_latest(self.exposed)

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges (the other workers' stay)."""
        if os.environ.get(MULTIPROC_ENV):
            mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request under its route template.

    The template (``/recommend/{user_id}``), not the raw path, keeps label values bounded.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path_format", None) or "unmatched"
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
