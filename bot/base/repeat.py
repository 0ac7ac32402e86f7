"""The loop every periodic job of the desk runs in (a module of its own so that any part of the
desk can schedule work without importing the scheduler, which imports the desk)."""

from __future__ import annotations

import asyncio
import logging
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
