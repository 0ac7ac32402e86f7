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
        events = [stop] if wakeup is None else [stop, wakeup]
        if wakeup is not None:
            wakeup.clear()
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()


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
