"""SQLite's statements on the event loop's thread (storage/inline_sqlite.py): a long run of
statements with nothing between them that yields still lets the loop turn every few
milliseconds, so a webhook is read and answered meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from sqlalchemy import text

from storage import inline_sqlite
from storage.db import create_engine


async def test_a_long_run_of_statements_lets_the_loop_turn(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:  # what a webhook's handler needs: the loop, now and then
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        began = time.perf_counter()
        async with engine.begin() as conn:
            for n in range(1000):  # one transaction's statements, as an event's step runs them
                await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        took = time.perf_counter() - began
        stop.set()
        await ticking
    finally:
        await engine.dispose()
    during = [t for t in ticks if began <= t <= began + took]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    # The loop turned all along: every SLICE or so, not once the statements were done.
    assert len(during) >= 10, (len(during), took)
    assert max(gaps) < max(took / 4, 20 * inline_sqlite.SLICE), (max(gaps), took)
