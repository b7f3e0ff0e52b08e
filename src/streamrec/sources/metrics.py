"""A consumer's Prometheus metrics, named like the server's (``streamrec_…``), labelled by source.

Each :class:`SourceMetrics` registers on the ``CollectorRegistry`` it is given, or on its own:
``streamrec consume --metrics-port`` serves its own; a server that runs a consumer in its
process would pass its ``ServingMetrics.registry`` so ``/metrics`` carries these series too.

>>> metrics = SourceMetrics()
>>> metrics.records.labels("redis:clicks", "stored").inc(3)
>>> b'streamrec_source_records_total{outcome="stored",source="redis:clicks"} 3.0' in metrics.render()
True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Outcomes of a consumed record: newly in the log, already in it (a redelivery), or dead-lettered.
OUTCOMES = ("stored", "duplicate", "dead_letter")
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SourceMetrics:
    """Records consumed by outcome, the lag, and the time to make a batch durable and acknowledge it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.records = Counter(
            "streamrec_source_records_total",
            "Records consumed from a source and acknowledged, by outcome: stored, duplicate, dead_letter.",
            ("source", "outcome"), registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "streamrec_source_lag_records", "Records in a source not yet acknowledged by this group.",
            ("source",), registry=self.registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "streamrec_source_batch_duration_seconds",
            "Time from a full batch to its acknowledgement: validate, append to the log, dead-letter, ack.",
            ("source",), registry=self.registry, buckets=BATCH_BUCKETS,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
