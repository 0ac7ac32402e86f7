"""Reports off the event loop: ``/desk stats`` and ``/desk export`` worked out in a worker.

A year of figures on a 10,000-ticket desk is more than a second of Python (and a quarter of a
second of SQLite); on the desk's event loop that was a second and more in which no webhook was
answered. The dispatcher works out what an event needs before its transaction (its
:class:`bot.delivery.routes.Preparers`), so :class:`ReportPreparer` computes a supervisor's
stats or export there, in a worker process with an event loop and a read-only engine of its
own (``create_engine(url, reader=True)``: on SQLite a deferred transaction that reads beside
the desk's writer). The step then only writes the audit entry and queues the answer.

A process, not a thread (bot/reports/worker.py): in a thread the report still held the
interpreter's lock for up to 150 ms at a time (long C calls: fetching and sorting rows), which
is how long the loop then stalled (``python -m bench.report_stall``). If the worker dies, the
report in hand is worked out in place.

The step recomputes in place when nothing was prepared (an in-memory database, a test that
calls the command directly, a day that turned between the two), so the answer is the same
either way; this only moves where the work runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.settings import desk_tz
from bot.core.roles import has_role
from bot.domain.events import SlashCommand
from bot.domain.prepared import Prepared
from bot.domain.rules import Rules
from bot.reports.charts import chart_data
from bot.reports.command import current_agents
from bot.reports.export import tickets_csv
from bot.reports.metrics import (
    GROUP_KEYS,
    Period,
    PeriodError,
    agent_names,
    build,
    load_histories,
    parse_period,
    self_service,
)
from bot.reports.worker import in_process
from storage import crypto
from storage.crypto import Keyring
from storage.db import create_engine, session_factory, shared_url

log = logging.getLogger("deskbot.reports")


@dataclass(frozen=True, slots=True)
class Stats:
    """``/desk stats``: the figures and the charts' numbers, for ``period``."""

    period: Period
    by: str | None
    figures: dict[str, Any]
    chart: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Export:
    """``/desk export``: the CSV of ``period`` and how many tickets it holds."""

    period: Period
    content: str
    count: int


def stats_args(args: str) -> tuple[str, str | None]:
    """``[period] [by KEY]`` → (period, key); the key is checked by the caller."""
    words = args.split()
    by = None
    if len(words) >= 2 and words[-2].lower() == "by":
        by = words[-1].lower()
        words = words[:-2]
    return " ".join(words), by


async def compute_stats(
    session: AsyncSession, period: Period, now: datetime, by: str | None, agents: set[str]
) -> Stats:
    histories = await load_histories(session, period.start, period.end)
    names = await agent_names(session)
    figures = build(histories, period, now, by, agents, names)
    figures["self_service"] = await self_service(session, period.start, period.end)
    # The charts' numbers come from the same histories as the figures, so the pictures can
    # never disagree with the answer.
    return Stats(period, by, figures, chart_data(histories, period, now, agents, names))


async def compute_export(session: AsyncSession, period: Period) -> Export:
    content, count = await tickets_csv(session, period)
    return Export(period, content, count)


@dataclass(frozen=True, slots=True)
class StatsJob:
    period: Period
    now: datetime
    by: str | None
    agents: frozenset[str]

    async def __call__(self, session: AsyncSession) -> Stats:
        return await compute_stats(session, self.period, self.now, self.by, set(self.agents))


@dataclass(frozen=True, slots=True)
class ExportJob:
    period: Period

    async def __call__(self, session: AsyncSession) -> Export:
        return await compute_export(session, self.period)


Job = StatsJob | ExportJob


def _run(url: str, ring: Keyring | None, job: Job) -> Any:
    """In the worker process: ``job`` with a session of a read-only engine of its own, reading
    with the desk's data keys (encrypted columns: storage/crypto.py)."""
    crypto.install(ring)

    async def main() -> Any:
        reader = create_engine(url, reader=True)
        try:
            async with session_factory(reader)() as session:
                return await job(session)
        finally:
            await reader.dispose()

    return asyncio.run(main())


async def in_worker(engine: AsyncEngine, job: Job) -> Any:
    """``job``'s result, worked out in the worker process; None when it cannot be (an
    in-memory database no other connection sees, a worker that died): the caller works it out
    in place then."""
    url = shared_url(engine)
    if url is None:
        return None
    return await in_process(_run, url, crypto.keyring(), job)


class ReportPreparer:
    """A :data:`bot.delivery.routes.Preparer`: a supervisor's ``/desk stats`` or ``/desk
    export`` worked out before the step, in a worker thread (``prep.report``)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], rules: Rules, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock

    async def __call__(self, prep: Prepared) -> None:
        ev = prep.event
        if not isinstance(ev, SlashCommand) or ev.command != "/desk":
            return
        word, _, rest = ev.text.strip().partition(" ")
        name, args = word.lower(), rest.strip()
        if name not in ("stats", "export"):
            return
        now = self._clock.now()
        period_text, by = stats_args(args) if name == "stats" else (args, None)
        if by is not None and by not in GROUP_KEYS:
            return  # the step explains the mistake
        try:
            period = parse_period(period_text, now, desk_tz())
        except PeriodError:
            return
        async with self._sessions() as session:
            # Nobody else gets a report worked out: the step refuses them.
            if not await has_role(session, self._rules, ev.user_id, "supervisor"):
                return
        engine = self._sessions.kw["bind"]
        if name == "stats":
            agents = current_agents(self._rules)
            prep.report = await in_worker(engine, StatsJob(period, now, by, frozenset(agents)))
        else:
            prep.report = await in_worker(engine, ExportJob(period))
