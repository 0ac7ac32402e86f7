"""The loop every periodic job of the desk runs in (a module of its own so that any part of the
desk can schedule work without importing the scheduler, which imports the desk)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("deskbot.scheduler")


async def repeat(
    step: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    interval: float,
    name: str,
    *,
    wakeup: asyncio.Event | None = None,
) -> None:
    """Run ``step`` every ``interval`` seconds (sooner when ``wakeup`` is set) until ``stop``;
    a failing pass is logged and the next one runs as usual."""
    while not stop.is_set():
        try:
            await step()
        except Exception:
            log.exception("scheduler.%s_failed", name)
        if wakeup is None:
            await pause(stop, interval)
        else:
            wakeup.clear()
            await nap(wakeup, stop, interval)


async def nap(wakeup: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Wait up to ``seconds`` for ``wakeup`` to be set (or ``stop``).

    The caller is woken by ``wakeup.set()`` itself, on the event loop's next turn; ``stop``
    reaches it through a task that sets ``wakeup``. Waiting for both through ``asyncio.wait``
    took three turns (a task per event, then the wait's own callback), and on an idle desk
    the dispatcher and the outbox are each woken once on the way from a customer's message to
    its card, with other work of the loop running in those turns."""
    if stop.is_set():
        return

    async def relay() -> None:
        await stop.wait()
        wakeup.set()

    relayed = asyncio.create_task(relay())
    try:
        async with asyncio.timeout(seconds):
            await wakeup.wait()
    except TimeoutError:
        pass
    finally:
        relayed.cancel()


class Streak:
    """A loop's failures in a row, as when the database is away: how long to wait before the
    next try, doubling from ``first`` to ``longest`` (so the loop neither spins nor answers
    late once the cause is gone), and whether this failure is worth a traceback in the log:
    the first of a streak, then one every ``quiet`` seconds with the count so far. Without it a
    desk whose database was cut logged a traceback every 10 ms (3,179 in a 30 s test)."""

    def __init__(self, first: float = 0.1, longest: float = 2.0, quiet: float = 60.0) -> None:
        self.first, self.longest, self.quiet = first, longest, quiet
        self.count = 0
        self._logged_at = 0.0

    def failed(self) -> tuple[float, bool]:
        """One more failure: (the pause before the next try, whether to log it)."""
        self.count += 1
        now = time.monotonic()
        loud = self.count == 1 or now - self._logged_at >= self.quiet
        if loud:
            self._logged_at = now
        return min(self.longest, self.first * 2 ** (self.count - 1)), loud

    def ended(self) -> int:
        """The loop worked again: how many tries had failed in a row (0: none)."""
        count, self.count = self.count, 0
        return count


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
