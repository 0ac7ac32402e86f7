"""The SLA clocks' timers: claimed when due, exactly once, in any number of processes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.process import this_process
from bot.base.repeat import repeat
from bot.core.tickets import Desks
from bot.sla.keeper import SlaKeeper
from storage.models import SlaTimer, Ticket
from storage.queues import timers_claim

log = logging.getLogger("deskbot.scheduler")


class SlaScheduler:
    """Fires SLA timers that came due: claims them like the outbox claims rows (``FOR UPDATE
    SKIP LOCKED`` and a lease), then redoes the ticket's clocks in one transaction, which
    records each warning, breach and escalation once and sets the next timer."""

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
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._clock = clock
        self._wakeup = outbox_wakeup
        self._interval = interval
        self._lease = lease
        self._batch = batch
        self.wakeup = asyncio.Event()  # the sandbox's fast-forward pokes it

    async def run_once(self) -> int:
        now = self._clock.now()
        me = this_process()
        async with self._sessions.begin() as session:
            timers = await timers_claim(session, SlaTimer, now, self._lease, me, self._batch)
            due = [t.ticket_id for t in timers]
        for ticket_id in due:
            async with self._sessions.begin() as session:
                desk = self._desks(session, self._clock.now())
                held = await session.get(SlaTimer, ticket_id)
                ticket = await session.get(Ticket, ticket_id)
                if held is None or held.lease_owner != me or ticket is None:
                    continue  # re-timed by a change to the ticket meanwhile
                await SlaKeeper(desk).refresh(ticket)
                # An escalation's changes (priority, assignee) are events of the automations,
                # whose actions' own changes get their clocks redone here too.
                await desk.finish()
                if held.lease_owner == me and held not in session.deleted:
                    await session.delete(held)  # no SLA here (any more): nothing is due
                await desk.queue(f"sla:{ticket_id}:{uuid.uuid4().hex}")
        if due and self._wakeup is not None:
            self._wakeup.set()
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(self.run_once, stop, self._interval, "sla", wakeup=self.wakeup)
