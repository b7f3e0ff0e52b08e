"""What ``bench serve`` asks a load generator to do in one phase, and what one reports back.

Two generators send the same requests: ``wrk`` (:mod:`streamrec.bench.load_wrk`, C driven by
a Lua script) and an asyncio httpx client in the benchmark's own process
(:mod:`streamrec.bench.load_python`). They are interchangeable so that a machine without
``wrk`` still runs the benchmark; ``wrk`` is the default because a Python client sharing a
small machine with the server is itself the bottleneck.

>>> mixed = Phase("mixed", "recommend", after_event=0.1)
>>> result = PhaseResult(seconds=2.0, requests=3, latencies_ms=[1.0, 2.0, 3.0], socket_errors=1)
>>> result.failed(503, at=0.0); result.errors, result.requests_per_s
(2, 1.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

K = 10  # GET /recommend/{user}?k=10
EVENT_TYPE = "view"  # every event a generator posts
MAX_ERROR_TIMES = 10_000  # wrk's script keeps as many too


@dataclass(frozen=True)
class Target:
    """The server under load and what the requests may name."""

    base: str  # http://127.0.0.1:PORT
    key: str  # a write key: every request sends it as X-API-Key
    users: list[str]
    items: list[str]
    ts_offset: float  # event timestamp = time.time() + ts_offset: newer than every event in the log
    tag: str  # unique per run; event ids are built from it, so nothing is deduplicated


@dataclass(frozen=True)
class Phase:
    """One kind of load.

    ``recommend``: ``GET /recommend/{user}?k=10`` for random users; a share ``after_event`` of
    them is sent right after a ``POST /events`` of one event of that user on the same
    connection (1.0: every one, so no cached answer can serve it). Each connection draws from
    its own slice of the users, so no other connection posts for a user in between (with fewer
    users than connections, some connections share a slice). Only the
    GETs are timed and counted as requests. ``events``: ``POST /events`` batches of ``batch``
    random events; each batch is a request.
    """

    name: str
    kind: Literal["recommend", "events"]
    after_event: float = 0.0
    batch: int = 1


@dataclass
class PhaseResult:
    """What a generator saw in one phase; latencies are of the measured requests that succeeded."""

    seconds: float
    requests: int = 0  # successful measured requests (GET /recommend, or POST /events batches)
    latencies_ms: list[float] = field(default_factory=list)
    events_posted: int = 0  # accepted events (recommend: the ones sent before a GET)
    non_2xx: int = 0  # any request, posts included
    socket_errors: int = 0  # connect, read, write, timeout (python: the exception's class)
    statuses: dict[str, int] = field(default_factory=dict)  # the non-2xx statuses, counted
    error_examples: list[str] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)  # time.time() of each non-2xx answer
    versions_seen: dict[str, list[float]] = field(default_factory=dict)  # version → [first, last] time
    generator_cpu: float | None = None  # CPU seconds of the generator over the phase

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def failed(self, status: int, at: float, example: str = "") -> None:
        """Count a non-2xx answer received at ``at`` (wall clock)."""
        self.non_2xx += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if len(self.error_times) < MAX_ERROR_TIMES:
            self.error_times.append(at)
        if example and len(self.error_examples) < 5:
            self.error_examples.append(example[:300])

    def answered(self, version: str, at: float) -> None:
        """Note that ``version`` answered at ``at`` (wall clock)."""
        span = self.versions_seen.setdefault(version, [at, at])
        span[0], span[1] = min(span[0], at), max(span[1], at)


class LoadGenerator(Protocol):
    """Runs one phase against a :class:`Target` with ``concurrency`` connections for ``duration`` s."""

    name: str

    def describe(self) -> str: ...

    def run(self, phase: Phase, duration: float, concurrency: int, seed: int) -> PhaseResult: ...
