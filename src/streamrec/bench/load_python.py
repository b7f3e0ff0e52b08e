"""The Python load generator: asyncio workers with one httpx client, in the benchmark's process.

It sends what ``wrk/serve_load.lua`` sends (see :class:`~streamrec.bench.load.Phase`), so it
stands in where ``wrk`` is not installed. On a small machine it is usually the bottleneck:
a request costs it about as much CPU as the server's answer, and it takes that CPU from the
server. Its CPU time is this process's (``time.process_time``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from urllib.parse import quote

import httpx

from streamrec.bench.load import EVENT_TYPE, K, Phase, PhaseResult, Target

REQUEST_TIMEOUT = 60.0


class PythonLoad:
    """``concurrency`` asyncio workers send requests back to back over a pool of as many connections.

    Each worker draws from its own slice of the users; its POST and the GET after it may
    take different connections of the pool, which changes nothing: the event is stored
    before the POST is answered, and every server process reads the user's events from
    the store.
    """

    name = "python"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.ids = itertools.count()

    def describe(self) -> str:
        return f"asyncio + httpx {httpx.__version__}, in the benchmark's process"

    def run(self, phase: Phase, duration: float, concurrency: int, seed: int) -> PhaseResult:
        cpu = time.process_time()
        result = asyncio.run(self._run(phase, duration, concurrency, seed))
        result.generator_cpu = time.process_time() - cpu
        return result

    def _event(self, user: str, item: str) -> dict:
        return {
            "user_id": user,
            "item_id": item,
            "event_type": EVENT_TYPE,
            "timestamp": time.time() + self.target.ts_offset,
            "event_id": f"bench-serve-{self.target.tag}-py-{next(self.ids)}",
        }

    async def _run(self, phase: Phase, duration: float, concurrency: int, seed: int) -> PhaseResult:
        result = PhaseResult(seconds=0.0)
        users, items = self.target.users, self.target.items
        slices = max(1, min(concurrency, len(users)))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

        def ok(response: httpx.Response) -> bool:
            if response.is_success:
                return True
            result.failed(response.status_code, time.time(), f"HTTP {response.status_code}: {response.text}")
            return False

        async def recommend(client: httpx.AsyncClient, rng: random.Random, mine: list[str]) -> None:
            user = rng.choice(mine)
            if phase.after_event and rng.random() < phase.after_event:
                posted = await client.post("/events", json=[self._event(user, rng.choice(items))])
                if not ok(posted):
                    return
                result.events_posted += 1
            t0 = time.perf_counter()
            response = await client.get(f"/recommend/{quote(user, safe='')}", params={"k": K})
            elapsed = time.perf_counter() - t0
            if ok(response):
                result.requests += 1
                result.latencies_ms.append(elapsed * 1000)
                result.answered(response.json()["model_version"], time.time())

        async def post_batch(client: httpx.AsyncClient, rng: random.Random, mine: list[str]) -> None:
            batch = [self._event(rng.choice(users), rng.choice(items)) for _ in range(phase.batch)]
            t0 = time.perf_counter()
            response = await client.post("/events", json=batch)
            elapsed = time.perf_counter() - t0
            if ok(response):
                result.requests += 1
                result.latencies_ms.append(elapsed * 1000)
                result.events_posted += response.json()["accepted"]

        one = post_batch if phase.kind == "events" else recommend
        async with httpx.AsyncClient(
            base_url=self.target.base,
            limits=limits,
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
            headers={"X-API-Key": self.target.key},
        ) as client:
            started = time.perf_counter()
            deadline = started + duration

            async def worker(index: int) -> None:
                rng = random.Random(seed * 1_000_003 + index)
                mine = users[index % slices :: slices]  # this connection's users (see Phase)
                while time.perf_counter() < deadline:
                    try:
                        await one(client, rng, mine)
                    except httpx.TransportError as error:  # a failed request is a measurement
                        result.socket_errors += 1
                        if len(result.error_examples) < 5:
                            result.error_examples.append(f"{type(error).__name__}: {error}"[:300])

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            result.seconds = time.perf_counter() - started
        return result
