"""A tiny Prometheus registry (counters, gauges, histograms) and the ASGI middleware that feeds it.

Small enough to own instead of adding a dependency; it renders the text
exposition format 0.0.4 that every Prometheus scraper reads.

>>> registry = MetricsRegistry()
>>> hits = registry.counter("demo_hits_total", "Hits.", ("route",))
>>> hits.inc(route="/a")
>>> print(registry.render().splitlines()[2])
demo_hits_total{route="/a"} 1.0
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str], lock: threading.Lock) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = lock

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    @abstractmethod
    def samples(self) -> list[str]:
        """The metric's sample lines in Prometheus text format."""

    def render(self) -> str:
        header = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return header + "".join(line + "\n" for line in self.samples())


class Counter(_Metric):
    """A value that only goes up, one per label combination."""

    kind = "counter"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down (amount={amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        if not self._values and not self.labelnames:
            return [f"{self.name} 0.0"]
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in self._values.items()]


class Gauge(_Metric):
    """A value that is set; ``clear`` drops every label combination (e.g. the old model version)."""

    kind = "gauge"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._values: dict[tuple[str, ...], float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in self._values.items()]


class Histogram(_Metric):
    """Cumulative bucket counts, sum and count per label combination."""

    kind = "histogram"

    def __init__(self, *args: Any, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(*args)
        self.buckets = (*sorted(buckets), math.inf)
        self._values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * len(self.buckets), [0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            total[0] += value

    def samples(self) -> list[str]:
        lines = []
        for key, (counts, total) in self._values.items():
            for bound, count in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {count}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {counts[-1]}")
        return lines


class MetricsRegistry:
    """Holds metrics and renders them all; one lock keeps every update and scrape consistent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []

    def _add(self, metric: _Metric) -> Any:
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames, self._lock))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames, self._lock))

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, self._lock, buckets=buckets))

    def render(self) -> str:
        with self._lock:
            return "".join(metric.render() for metric in self._metrics)


class ServingMetrics:
    """The server's metrics: requests, latency, events ingested, the live model."""

    def __init__(self) -> None:
        self.registry = MetricsRegistry()
        self.requests = self.registry.counter(
            "streamrec_http_requests_total", "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
        )  # fmt: skip
        self.latency = self.registry.histogram(
            "streamrec_http_request_duration_seconds", "Time to answer an HTTP request, by route.", ("route",)
        )
        self.events_ingested = self.registry.counter(
            "streamrec_events_ingested_total", "Events appended to the log through POST /events."
        )
        self.items_upserted = self.registry.counter(
            "streamrec_items_upserted_total", "Catalogue items written through PUT /items."
        )
        self.live_model = self.registry.gauge(
            "streamrec_live_model", "1 for the model version this server answers with.", ("version",)
        )
        self.model_updated = self.registry.gauge(
            "streamrec_model_last_update_timestamp_seconds", "When the served model version was loaded."
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(route=route, method=method, status=str(status))
        self.latency.observe(seconds, route=route)

    def set_model(self, version: str, loaded_at: float) -> None:
        self.live_model.clear()
        self.live_model.set(1, version=version)
        self.model_updated.set(loaded_at)

    def render(self) -> str:
        return self.registry.render()


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
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
