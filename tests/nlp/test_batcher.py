"""The micro-batcher: order, bounded wait, errors, shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest

from nlp.service import BatcherClosed, MicroBatcher


def _double(items: list[int]) -> list[int]:
    return [2 * i for i in items]


async def test_each_caller_gets_its_own_result_in_order() -> None:
    seen: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        seen.append(list(items))
        return _double(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait=0.05)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    await batcher.close()
    assert results == [2 * i for i in range(20)]
    # Concurrent calls were grouped, never above max_batch, and in submission order.
    assert all(len(b) <= 8 for b in seen)
    assert len(seen) < 20
    assert [i for b in seen for i in b] == list(range(20))


async def test_a_lone_message_waits_at_most_max_wait() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(_double, max_batch=32, max_wait=0.2)
    await batcher.start()
    start = time.monotonic()
    assert await batcher.submit(21) == 42
    waited = time.monotonic() - start
    await batcher.close()
    assert 0.15 <= waited < 1.0  # it waited for company, and not for ever


async def test_a_full_batch_does_not_wait() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(_double, max_batch=4, max_wait=5.0)
    await batcher.start()
    start = time.monotonic()
    assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 2, 4, 6]
    await batcher.close()
    assert time.monotonic() - start < 2.0


async def test_an_error_fails_its_batch_and_not_the_next() -> None:
    def fn(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("cannot encode -1")
        return _double(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait=0.05)
    await batcher.start()
    results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert await batcher.submit(5) == 10
    await batcher.close()


async def test_a_wrong_number_of_results_is_an_error_not_a_hang() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [], max_wait=0.01)
    await batcher.start()
    with pytest.raises(RuntimeError, match="gave 0 results"):
        await asyncio.wait_for(batcher.submit(1), 5)
    await batcher.close()


async def test_close_fails_waiting_calls_and_refuses_new_ones() -> None:
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(items: list[int]) -> list[int]:
        asyncio.run_coroutine_threadsafe(_set(gate), loop)
        time.sleep(0.2)
        return _double(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch=1, max_wait=0.0)
    await batcher.start()
    first = asyncio.create_task(batcher.submit(1))
    await gate.wait()  # the first is being computed; the second queues behind it
    second = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    await batcher.close()
    with pytest.raises(BatcherClosed):
        await second
    first.cancel()
    with pytest.raises(BatcherClosed):
        await batcher.submit(3)


async def _set(event: asyncio.Event) -> None:
    event.set()
