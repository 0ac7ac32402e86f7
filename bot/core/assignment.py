"""Giving tickets to agents, inside the state machine's transaction.

The choice itself is pure (:mod:`bot.domain.routing`); this module reads what the choice needs under
lock and writes what it decided. Correctness with several processes on PostgreSQL rests on two
locks taken in one order: first the ``agents`` rows of every team the step touches (sorted by
id) and the teams' ``team_pointers`` rows, then tickets, with ``SKIP LOCKED`` for tickets other
than the one the step is about. Two processes assigning in overlapping teams therefore take
turns, each counts loads that include the other's committed assignments, and nobody is given
more than their capacity; a ticket row is locked by whoever changes it, so it is assigned once.
SQLite serialises whole write transactions (``BEGIN IMMEDIATE``), which gives the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.core.step import Step, TicketSeated
from bot.domain.routing import AgentChoice, AgentLoad, choose_agent, waiting_order
from bot.domain.words import counted
from storage.models import Agent, TeamPointer, Ticket
from storage.statements import Statement

AUTO = "desk"  # tickets.assigned_by for automatic assignment
COUNTS = ("new", "open")  # statuses that count against capacity; pending does not


async def seat(step: Step, ticket: Ticket, *, assign: bool = True) -> AgentChoice | None:
    """An active ticket gets a card of its own: an assignee (unless ``assign`` is off), its SLA
    clocks (:class:`TicketSeated`, handled before the card so that it shows them), then the
    card. A new ticket, a transferred one and one taken out of an incident all come here."""
    choice = await Assigner(step).assign(ticket, announce=False) if assign else None
    await step.publish(TicketSeated(ticket))
    await step.post_card(ticket)
    return choice


# A new ticket's locks, built and compiled once (storage/statements.py).
_AGENTS_LOCKED = Statement(
    select(Agent)
    .where(Agent.id.in_(bindparam("ids", expanding=True)))
    .order_by(Agent.id)
    .with_for_update()
)
_POINTERS_LOCKED = Statement(
    select(TeamPointer)
    .where(TeamPointer.team.in_(bindparam("teams", expanding=True)))
    .order_by(TeamPointer.team)
    .with_for_update()
)


class Assigner:
    def __init__(self, desk: Step) -> None:
        self.desk = desk
        self.s = desk.s
        self.rules = desk.rules
        self._locked: set[str] = set()
        # The agents' rows this step locked, loaded with the lock: what _loads reads next.
        self._agents: dict[str, Agent] = {}

    # -- locks and snapshots -------------------------------------------------------------------

    def _insert(self) -> Any:
        return pg_insert if self.s.get_bind().dialect.name == "postgresql" else sqlite_insert

    async def lock_teams(self, teams: Iterable[str]) -> None:
        """Lock the agents and pointers of ``teams`` (once per step, in one global order)."""
        names = sorted({t for t in teams if t in self.rules.all_teams} - self._locked)
        if not names:
            return
        agents = sorted({a for t in names for a in self.rules.all_teams[t].agents})
        # Lock (and load) the rows that exist, which after a team's first ticket is all of
        # them; make the missing ones and lock those too. Two statements instead of four.
        have = await self._lock_rows(agents, names)
        if have != (set(agents), set(names)):
            now = self.desk.now
            new_agents = [a for a in agents if a not in have[0]]
            new_teams = [t for t in names if t not in have[1]]
            await self._insert_missing(
                Agent, "id", [{"id": a, "available": False, "updated_at": now} for a in new_agents]
            )
            await self._insert_missing(
                TeamPointer,
                "team",
                [{"team": t, "last_agent": None, "updated_at": now} for t in new_teams],
            )
            await self._lock_rows(new_agents, new_teams)
        self._locked.update(names)

    async def _insert_missing(self, model: Any, key: str, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` that another desk may be inserting at the same moment."""
        if rows:
            insert = self._insert()(model).values(rows)
            await self.s.execute(insert.on_conflict_do_nothing(index_elements=[key]))

    async def _lock_rows(self, agents: list[str], teams: list[str]) -> tuple[set[str], set[str]]:
        """Lock and load these agents' and teams' rows (agents first, each sorted: one global
        order); returns the ids found."""
        if agents:
            for (agent,) in await _AGENTS_LOCKED.rows(self.s, ids=agents):
                self._agents[agent.id] = agent
        found = {a for a in agents if a in self._agents}
        # Loaded, not just locked: assign() reads the pointer next (from the session then).
        pointers = set()
        if teams:
            pointers = {p.team for (p,) in await _POINTERS_LOCKED.rows(self.s, teams=teams)}
        return found, pointers

    async def _loads(self, agents: Iterable[str]) -> dict[str, AgentLoad]:
        ids = list(agents)
        if not ids:
            return {}
        # Locked and loaded by lock_teams in this step (a new ticket's path): the session's own
        # objects, which a second SELECT would only have returned again.
        rows: Sequence[Agent] = [self._agents[i] for i in ids if i in self._agents]
        if len(rows) < len(ids):
            rows = (await self.s.execute(select(Agent).where(Agent.id.in_(ids)))).scalars().all()
        counts = dict(
            (
                await self.s.execute(
                    select(Ticket.assignee_id, func.count())
                    .where(Ticket.assignee_id.in_(ids), Ticket.status.in_(COUNTS))
                    .group_by(Ticket.assignee_id)
                )
            ).all()
        )
        presence_counts = self.rules.availability.assignment_presence == "slack"
        return {
            a.id: AgentLoad(
                agent=a.id,
                available=a.available and not (presence_counts and a.presence == "away"),
                open_tickets=int(counts.get(a.id, 0)),
                last_assigned_at=a.last_assigned_at,
            )
            for a in rows
        }

    # -- decisions -----------------------------------------------------------------------------

    async def assign(
        self,
        ticket: Ticket,
        *,
        exclude: str | None = None,
        announce: bool = True,
        announce_wait: bool = True,
    ) -> AgentChoice:
        """Give ``ticket`` (locked by the caller) to an eligible agent of its team, or leave it
        waiting; either way the decision is an event and (unless the caller says it itself,
        ``announce=False``) a line in the thread, which mentions, and so notifies, the agent."""
        team = self.rules.team(ticket.team)
        await self.lock_teams([ticket.team])
        loads = await self._loads(team.agents)
        if exclude is not None and exclude in loads:
            loads[exclude] = AgentLoad(exclude, False, loads[exclude].open_tickets)
        pointer = await self.s.get(TeamPointer, ticket.team)
        choice = choose_agent(
            ticket.team, team, loads, pointer.last_agent if pointer is not None else None
        )
        if choice.agent is None:
            if team.assignment == "manual":
                return choice  # Claim is the way in: nothing to wait for, nothing to record
            if ticket.waiting_reason != choice.reason:
                self.desk.history(ticket, "waiting", AUTO, None, None, choice.reason)
                if announce and announce_wait:
                    self.desk.thread(ticket, f"⏳ {_capitalised(choice.reason)}.")
            ticket.waiting_reason = choice.reason
            return choice
        self.give(ticket, choice.agent, AUTO, choice.reason)
        agent = await self.s.get_one(Agent, choice.agent)
        agent.last_assigned_at = self.desk.now
        if pointer is not None:
            pointer.last_agent = choice.agent
            pointer.updated_at = self.desk.now
        if announce:
            self.desk.thread(ticket, f"👤 {_capitalised(choice.reason)}.")
        return choice

    def give(self, ticket: Ticket, agent: str, by: str, reason: str) -> None:
        """Make ``agent`` the assignee (an automatic choice or a person's claim)."""
        self.desk.history(ticket, "assignee", by, ticket.assignee_id, agent, reason)
        why = "auto" if by == AUTO else "claimed"
        self.desk.decided("tickets.assigned ticket=%d agent=%s reason=%s", ticket.id, agent, why)
        ticket.assignee_id = agent
        ticket.assignee_name = None
        ticket.assigned_by = by
        ticket.waiting_reason = None
        if ticket.status == "new":
            self.desk.set_status(ticket, "open", by, "assigned")
        ticket.updated_at = self.desk.now

    def release(self, ticket: Ticket, by: str, reason: str) -> None:
        """Take the ticket back from its assignee (it is then assigned anew or waits)."""
        self.desk.history(ticket, "assignee", by, ticket.assignee_id, None, reason)
        self.desk.decided("tickets.released ticket=%d agent=%s", ticket.id, ticket.assignee_id)
        ticket.assignee_id = None
        ticket.assignee_name = None
        ticket.assigned_by = None
        if ticket.status == "open":
            self.desk.set_status(ticket, "new", by, reason)

    async def fill(self, teams: Iterable[str]) -> int:
        """Assign waiting tickets of ``teams``, urgent first then oldest, while anyone can take
        one. Tickets another transaction holds are skipped; the next step or sweep gets them."""
        names = [t for t in dict.fromkeys(teams) if t in self.rules.all_teams]
        await self.lock_teams(names)
        given = 0
        for name in names:
            if self.rules.all_teams[name].assignment == "manual":
                continue
            stmt = (
                select(Ticket)
                .where(
                    Ticket.team == name,
                    Ticket.status == "new",
                    Ticket.assignee_id.is_(None),
                )
                .order_by(Ticket.created_at, Ticket.id)
                .limit(200)
            )
            if self.s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            waiting = list((await self.s.scalars(stmt)).all())
            waiting.sort(key=lambda t: waiting_order(t.priority, t.created_at, t.id))
            for ticket in waiting:
                # A ticket still waiting says so on its card; its thread only hears of changes.
                choice = await self.assign(ticket, announce_wait=False)
                if choice.agent is None:
                    break  # the same answer holds for every later ticket of this team
                given += 1
                await self.desk.refresh_card(ticket)
        return given

    async def set_available(self, agent_id: str, available: bool) -> str:
        """``/desk available`` / ``/desk away``: record it, and hand out waiting tickets."""
        teams = self.rules.teams_of(agent_id)
        await self.lock_teams(teams)
        agent = await self.s.get(Agent, agent_id)
        now = self.desk.now
        if agent is None:
            agent = Agent(id=agent_id, available=False, updated_at=now)
            self.s.add(agent)
        was = agent.available
        agent.available = available
        agent.away_since = None if available else (agent.away_since if not was else now)
        agent.updated_at = now
        self.desk.home_people.add(agent_id)  # their Home shows the toggle
        if available:
            given = await self.fill(teams)
            more = f"; {counted(given, 'waiting ticket')} assigned" if given else ""
            return ("You are available" if not was else "You were already available") + more
        grace = self.rules.availability.away_grace_minutes
        moves = self.rules.availability.reassign_when_away
        then = (
            f"; your open tickets move to others after {grace:g} min unless you are back"
            if moves
            else "; you keep your open tickets"
        )
        return ("You are away" if was else "You were already away") + then

    async def sweep(self) -> int:
        """The periodic pass: move tickets of agents away past their grace period, then fill
        every team's queue (capacity freed, agents back, anything a step skipped)."""
        teams = list(self.rules.all_teams)
        await self.lock_teams(teams)
        moved = 0
        if self.rules.availability.reassign_when_away:
            cutoff = self.desk.now - timedelta(minutes=self.rules.availability.away_grace_minutes)
            away_now: ColumnElement[bool] = Agent.available.is_(False)
            if self.rules.availability.assignment_presence == "slack":
                away_now = or_(away_now, Agent.presence == "away")
            away = (
                await self.s.scalars(
                    select(Agent.id).where(
                        away_now, Agent.away_since.is_not(None), Agent.away_since <= cutoff
                    )
                )
            ).all()
            if away:
                stmt = select(Ticket).where(
                    Ticket.assignee_id.in_(list(away)), Ticket.status.in_(COUNTS)
                )
                if self.s.get_bind().dialect.name == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                for ticket in (await self.s.scalars(stmt)).all():
                    gone = ticket.assignee_id
                    self.release(ticket, AUTO, f"<@{gone}> is away")
                    self.desk.thread(ticket, f"↪️ <@{gone}> is away; finding someone else.")
                    await self.assign(ticket, exclude=gone)
                    await self.desk.refresh_card(ticket)
                    moved += 1
        return moved + await self.fill(teams)

    async def is_available(self, agent_id: str) -> bool:
        loads = await self._loads([agent_id])
        return agent_id in loads and loads[agent_id].available


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
