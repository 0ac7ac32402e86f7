"""Work that no inbound event starts: the periodic assignment sweep, and Slack presence.

Every process runs it; each pass is one transaction that takes the same locks as assignment in
the dispatcher (see :mod:`bot.core.assignment`), so passes in several processes take turns and
nothing is given out twice. A pass moves the open tickets of agents who have been away longer
than the grace period and assigns waiting tickets whenever someone can take them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.repeat import repeat
from bot.core.assignment import Assigner
from bot.core.tickets import Desks
from bot.domain.rules import Rules
from storage.models import Agent

log = logging.getLogger("deskbot.scheduler")


class AssignmentSweeper:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        desks: Desks,
        clock: Clock,
        *,
        outbox_wakeup: asyncio.Event | None = None,
        interval: float = 15.0,
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._rules = desks.rules
        self._clock = clock
        self._wakeup = outbox_wakeup
        self._interval = interval

    async def run_once(self) -> int:
        """One pass; returns how many tickets it assigned or moved."""
        if all(t.assignment == "manual" for t in self._rules.all_teams.values()):
            return 0
        async with self._sessions.begin() as session:
            desk = self._desks(session, self._clock.now())
            changed = await Assigner(desk).sweep()
            # The phases of any event (automations on `assigned`, the SLA clocks of the
            # tickets it gave out or moved), as when a person's action assigns.
            await desk.finish()
            await desk.queue(f"sweep:{uuid.uuid4().hex}")
        desk.fx.log_decisions()  # committed: the assignments happened
        if changed:
            log.info("scheduler.assignment_sweep changed=%d", changed)
            if self._wakeup is not None:
                self._wakeup.set()
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        await repeat(self.run_once, stop, self._interval, "sweep")


class PresencePoller:
    """``assignment_presence: slack``: read each agent's Slack presence now and then.

    Slack sends no presence events to HTTP apps, so the desk asks (users.getPresence, Tier 3).
    Presence only ever makes an agent *less* available: ``/desk away`` wins over "active", and
    "active" never makes available someone who said they are away.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules: Rules,
        clock: Clock,
        presence: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock
        self._presence = presence

    async def run_once(self) -> int:
        agents = sorted({a for team in self._rules.all_teams.values() for a in team.agents})
        seen = {a: await self._presence(a) for a in agents}
        changed = 0
        async with self._sessions.begin() as session:
            for agent_id, presence in seen.items():
                if presence is None:
                    continue  # Slack could not say: keep what we knew
                agent = await session.get(Agent, agent_id)
                if agent is None:
                    agent = Agent(id=agent_id, available=False, updated_at=self._clock.now())
                    session.add(agent)
                if agent.presence != presence:
                    if agent.available:
                        # The grace period runs from when Slack first showed them away.
                        agent.away_since = (
                            (agent.away_since or self._clock.now()) if presence == "away" else None
                        )
                    log.info("agents.presence agent=%s presence=%s", agent_id, presence)
                    agent.presence = presence
                    changed += 1
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        interval = self._rules.availability.presence_poll_seconds
        await repeat(self.run_once, stop, interval, "presence")
