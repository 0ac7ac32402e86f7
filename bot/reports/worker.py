"""The desk's one worker process for work too heavy for its event loop: reports, exports
(bot/reports/offloop.py) and charts (bot/reports/charts.py).

A process, not a thread: in a thread a report held the interpreter's lock for up to 150 ms at a
time, which is how long webhooks then waited (``python -m bench.report_stall``); and what only
the worker needs (matplotlib, about 40 MB) is never loaded into the desk's own process. The
process is started with ``spawn`` at the first job (a fork of a process with an event loop and
threads is not safe) and kept; if it dies, the job in hand is answered None (its caller does
the work in place) and the next job starts another.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger("deskbot.reports")

T = TypeVar("T")
_pool: Executor | None = None


def _worker_pool() -> Executor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


async def in_process(fn: Callable[..., T], *args: object) -> T | None:
    """``fn(*args)`` in the worker process (``fn`` a module-level function, the arguments
    picklable); None when the worker died meanwhile."""
    global _pool
    try:
        return await asyncio.get_running_loop().run_in_executor(_worker_pool(), fn, *args)
    except BrokenProcessPool:
        log.warning("reports.worker_died")
        _pool = None
        return None
