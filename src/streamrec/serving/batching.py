"""Micro-batching: recommend requests that arrive together are scored in one forward pass.

The event loop hands each ``GET /recommend/{user_id}`` to one scoring thread and awaits
the answer. The thread takes every request waiting (up to ``max_batch``) and answers them
with one :meth:`Runtime.recommend_many`: cached answers straight from the cache, the
rest through one forward pass and one top-k search. There is no timer: requests that
arrive while a batch is scored wait for the next one, so batches grow with the load by
themselves and a lone request on an idle server is answered at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")

_Waiting = tuple[Any, asyncio.Future, asyncio.AbstractEventLoop]


def _settle(future: asyncio.Future, answer: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is None:
        future.set_result(answer)
    else:
        future.set_exception(error)


class Batcher(Generic[Request, Answer]):
    """One thread that answers requests in batches with ``answer_all`` (answers in request order)."""

    def __init__(self, answer_all: Callable[[Sequence[Request]], list[Answer]], max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.answer_all = answer_all
        self.max_batch = max_batch
        self._waiting: deque[_Waiting] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="streamrec-batcher", daemon=True)
        self.batches = 0  # batches answered, and the requests in them: their ratio is the mean size
        self.answered = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=30)

    async def submit(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._wake:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            self._waiting.append((request, future, loop))
            self._wake.notify()
        return await future

    def _next_batch(self) -> list[_Waiting]:
        with self._wake:
            while not self._waiting and not self._stopped:
                self._wake.wait()
            count = min(len(self._waiting), self.max_batch)
            return [self._waiting.popleft() for _ in range(count)]

    def _run(self) -> None:
        while batch := self._next_batch():
            try:
                answers: list[Any] = self.answer_all([request for request, _, _ in batch])
                error = None
            except Exception as failure:  # every request of the batch gets the error, the thread lives on
                answers, error = [None] * len(batch), failure
            for (_, future, loop), answer in zip(batch, answers, strict=True):
                loop.call_soon_threadsafe(_settle, future, answer, error)
            self.batches += 1
            self.answered += len(batch)
