"""The micro-batcher: requests waiting together are answered together, in order, errors to all."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamrec.serving.batching import Batcher


def test_requests_that_wait_together_are_answered_in_one_batch_in_order() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def answer_all(requests: list[int]) -> list[int]:
        seen.append(list(requests))
        gate.wait(5)  # the first batch is held until the rest are waiting
        return [r * 10 for r in requests]

    batcher: Batcher[int, int] = Batcher(answer_all, max_batch=3)
    batcher.start()

    async def main() -> list[int]:
        first = asyncio.ensure_future(batcher.submit(0))
        while not seen:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    try:
        assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    finally:
        batcher.stop()
    # a lone request at once; then those that waited, at most max_batch at a time
    assert seen == [[0], [1, 2, 3], [4, 5]]
    assert (batcher.batches, batcher.answered) == (3, 6)


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_is_answered() -> None:
    def answer_all(requests: list[int]) -> list[int]:
        if -1 in requests:
            raise LookupError("no live model")
        return list(requests)

    batcher: Batcher[int, int] = Batcher(answer_all)
    batcher.start()

    async def main() -> int:
        with pytest.raises(LookupError, match="no live model"):
            await batcher.submit(-1)
        return await batcher.submit(7)

    try:
        assert asyncio.run(main()) == 7
    finally:
        batcher.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(batcher.submit(1))
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(answer_all, max_batch=0)
