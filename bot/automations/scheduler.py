"""Time rules that came due: claimed like the SLA timers, fired at most once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.automations.runner import Automator
from bot.base.clock import Clock
from bot.base.process import this_process
from bot.base.repeat import repeat
from bot.core.tickets import Desks
from storage.models import AutomationTimer, Ticket
from storage.queues import timers_claim

log = logging.getLogger("deskbot.automations")


class AutomationScheduler:
    """Fires the time rules' timers that came due: claims them (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, and a lease, so another process leaves them alone), then fires each in a
    transaction of its own that re-checks it, records the firing under its unique key, does its
    actions and queues what they say. A process that dies before the commit fired nothing: the
    lease runs out and the timer is claimed again. A desk that was down fires what came due
    meanwhile on its first round, late but once."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        desks: Desks,
        clock: Clock,
        *,
        outbox_wakeup: asyncio.Event | None = None,
        interval: float = 2.0,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 50,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._clock = clock
        self._wakeup = outbox_wakeup
        self._interval = interval
        self._lease = lease
        self._batch = batch
        self._owner = owner  # the lease owner: this process unless a test plays two
        self.wakeup = asyncio.Event()  # the sandbox's fast-forward may poke it

    async def claim(self) -> list[int]:
        now = self._clock.now()
        me = self._owner or this_process()
        async with self._sessions.begin() as session:
            rows = await timers_claim(session, AutomationTimer, now, self._lease, me, self._batch)
            return [row.id for row in rows]

    async def fire(self, timer_id: int) -> str:
        """Fire one claimed timer in its own transaction."""
        me = self._owner or this_process()
        async with self._sessions.begin() as session:
            desk = self._desks(session, self._clock.now())
            seen = await session.get(AutomationTimer, timer_id)
            if seen is None:
                return "gone"
            # The ticket first, then its timer: the order in which a step of the desk that
            # re-plans the ticket's timers takes them (the other order could deadlock).
            await session.execute(
                select(Ticket.id).where(Ticket.id == seen.ticket_id).with_for_update()
            )
            row = await session.get(
                AutomationTimer, timer_id, with_for_update=True, populate_existing=True
            )
            if row is None or row.lease_owner != me:
                return "gone"  # its anchor ended meanwhile, or its lease ran out to another
            outcome = await Automator(desk).fire(row)
            await desk.finish()  # the SLA clocks of what the actions changed
            await desk.queue(f"automation:{timer_id}:{uuid.uuid4().hex}")
        log.info("automations.timer id=%d outcome=%s", timer_id, outcome)
        return outcome

    async def run_once(self) -> int:
        due = await self.claim()
        for timer_id in due:
            try:
                await self.fire(timer_id)
            except Exception:
                # Rolled back: nothing fired; the lease runs out and it is claimed again.
                log.exception("automations.timer_failed id=%d", timer_id)
        if due and self._wakeup is not None:
            self._wakeup.set()
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(self.run_once, stop, self._interval, "automations", wakeup=self.wakeup)
