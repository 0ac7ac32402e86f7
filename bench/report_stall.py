"""How long ``/desk stats 365d`` holds the event loop, on a desk of about 10,000 tickets.

    .venv/bin/python -m bench.report_stall [--days 730] [--runs 3] [--json FILE]

Writes a made-up history (``sandbox.demo``, seeded: 730 days are about 9,700 tickets) into a
temporary SQLite file, then works out a year of figures (the figures and the charts' numbers,
as ``/desk stats 365d`` does) two ways, by turns, while a ticker task on the event loop asks to
be woken every millisecond and records the longest gap between wakes (the longest stall: how
long a webhook arriving then would have waited before the desk could even read it):

* **on the loop**: in the event loop's own thread, with the desk's engine (what the step did
  before bot/reports/offloop.py);
* **in a worker**: ``bot.reports.offloop.in_worker``, the desk's worker process with its own
  event loop and a read-only engine (what the desk does now). The first run also starts the
  worker process (its time is in the first "report" figure, off the loop).

The reference, measured in the same run, is the ticker alone on an idle loop. Prints each
figure with the machine's load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.reports.metrics import parse_period
from bot.reports.offloop import Stats, StatsJob, compute_stats, in_worker
from sandbox.demo import AGENTS, fill
from storage.db import create_engine, session_factory


def _load() -> tuple[float, ...]:
    return tuple(round(x, 2) for x in os.getloadavg())


class Ticker:
    """Wakes every millisecond; the longest gap between wakes is the loop's longest stall."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - 0.001)
            last = now

    async def during(self, work: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
        """(longest stall s, wall time s, result) of ``work`` with the ticker running."""
        self.longest, self._stop = 0.0, asyncio.Event()
        task = asyncio.create_task(self.run())
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        result = await work()
        wall = time.perf_counter() - t0
        self._stop.set()
        await task
        return self.longest, wall, result


@dataclass
class StallResult:
    tickets: int
    idle_stall_ms: list[float] = field(default_factory=list)
    on_loop_stall_ms: list[float] = field(default_factory=list)
    on_loop_wall_s: list[float] = field(default_factory=list)
    worker_stall_ms: list[float] = field(default_factory=list)
    worker_wall_s: list[float] = field(default_factory=list)
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()
    measured_at: str = ""

    def summary(self) -> str:
        def span(xs: list[float], unit: str, fmt: str = ".0f") -> str:
            return f"{min(xs):{fmt}}–{max(xs):{fmt}} {unit}" if xs else "—"

        return "\n".join(
            [
                f"report stall: /desk stats 365d on {self.tickets} tickets (SQLite),"
                f" {len(self.worker_stall_ms)} runs each, by turns",
                f"  on the loop (before): longest stall {span(self.on_loop_stall_ms, 'ms')},"
                f" report {span(self.on_loop_wall_s, 's', '.2f')}",
                f"  in a worker (now):    longest stall {span(self.worker_stall_ms, 'ms')},"
                f" report {span(self.worker_wall_s, 's', '.2f')}; target ≤ 50 ms:"
                f" {'met' if max(self.worker_stall_ms) <= 50 else 'NOT met'}",
                f"  reference, the idle loop in the same run: longest stall"
                f" {span(self.idle_stall_ms, 'ms', '.1f')}",
                f"  load average before {self.load_before}, after {self.load_after}"
                f" ({os.cpu_count()} CPUs)",
            ]
        )


async def run(days: int, runs: int) -> StallResult:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'desk.db'}"
        until = date(2026, 12, 6)
        tickets = await fill(url, until, days=days)
        engine = create_engine(url)
        now = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
        period = parse_period("365d", now, ZoneInfo("UTC"))
        agents = {a for team in AGENTS.values() for a in team}
        result = StallResult(tickets=tickets, load_before=_load())
        ticker = Ticker()

        async def on_loop() -> Stats:
            async with session_factory(engine)() as s:
                return await compute_stats(s, period, now, None, agents)

        async def worker() -> Stats | None:
            stats = await in_worker(engine, StatsJob(period, now, None, frozenset(agents)))
            assert stats is None or isinstance(stats, Stats)
            return stats

        try:
            for _ in range(runs):
                stall, _, _ = await ticker.during(lambda: asyncio.sleep(1.0))
                result.idle_stall_ms.append(round(stall * 1000, 2))
                stall, wall, a = await ticker.during(on_loop)
                result.on_loop_stall_ms.append(round(stall * 1000, 1))
                result.on_loop_wall_s.append(round(wall, 3))
                stall, wall, b = await ticker.during(worker)
                result.worker_stall_ms.append(round(stall * 1000, 1))
                result.worker_wall_s.append(round(wall, 3))
                assert b is not None and a.figures == b.figures, "the two ways disagree"
        finally:
            await engine.dispose()
        result.load_after = _load()
        result.measured_at = datetime.now(UTC).isoformat(timespec="seconds")
        assert timedelta(days=365) <= period.end - period.start
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days", type=int, default=730, help="days of made-up history")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    result = asyncio.run(run(a.days, a.runs))
    print(result.summary())
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
        print(f"  wrote {a.json}")


if __name__ == "__main__":
    main()
