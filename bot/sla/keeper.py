"""The SLA engine at work in the desk: from a ticket's history to warnings, breaches and
escalations that fire exactly once.

:mod:`bot.domain.sla` is pure: given a ticket's timeline it says what fired up to a moment and what
is
due next; ``deskbot sla replay`` runs the very same function. Here the desk builds that timeline
from the database (the ticket's events and messages), runs the engine whenever the ticket
changes and whenever its timer comes due, records each new firing under a unique key, acts on it
(a line in the thread, mentions, a post in the team's channel, a reassignment, a raised
priority) and keeps one durable timer row per ticket at the next due moment. Everything happens
inside the transaction that holds the ticket's row, so two processes never record the same
firing, and a crash leaves either all of it or none.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

from sqlalchemy import select

from bot.core.assignment import AUTO, Assigner
from bot.core.step import DeliveryRecorded, Step, TicketSeated
from bot.domain.mrkdwn import TARGET_NAME, slack_date
from bot.domain.outbound import Outbound
from bot.domain.sla import Fired, SlaEvent, SlaPolicy, policy_for, replay
from storage.models import Message, SlaFiring, SlaTimer, Ticket, TicketEvent

log = logging.getLogger("deskbot.sla")

SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")
# The customer's platform took the reply; or it is held for WhatsApp's 24-hour window (the
# agent answered, the customer was told by template and gets it when they write: bot/window).
ACCEPTED = ("sent", "delivered", "read", "held")
RECORDED = ("warning", "breached", "met", "met_late", "escalation")
UP = {"low": "normal", "normal": "high", "high": "urgent", "urgent": "urgent"}
STATUS = {"new": "open", "open": "open", "pending": "pending", "resolved": "resolved"}


async def timeline(desk: Step, ticket: Ticket) -> list[SlaEvent]:
    """The ticket as the SLA engine sees it, oldest first."""
    rows = (
        await desk.s.scalars(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind.in_(("priority", "status")))
            .order_by(TicketEvent.id)
        )
    ).all()
    messages = (
        await desk.s.scalars(
            select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
        )
    ).all()
    initial = next(
        (r.to_value for r in rows if r.kind == "priority" and r.from_value is None),
        ticket.priority,
    )
    events: list[tuple[datetime, int, SlaEvent]] = [
        (ticket.created_at, 0, SlaEvent(at=ticket.created_at, type="created", priority=initial))
    ]
    for r in rows:
        if r.kind == "priority" and r.from_value is not None and r.to_value:
            events.append((r.at, 1, SlaEvent(at=r.at, type="priority", priority=r.to_value)))
        elif r.kind == "status" and r.to_value in STATUS and r.from_value is not None:
            status = STATUS[r.to_value]
            events.append((r.at, 1, SlaEvent(at=r.at, type="status", status=status)))
    for m in messages:
        kind: str | None = None
        if m.direction == "in":
            kind = "customer_message"
        elif m.direction == "note":
            kind = "note"
        elif m.direction == "out" and SLACK_USER.match(m.author):
            # Only what the customer's platform accepted is a reply.
            kind = "agent_reply" if m.delivery in ACCEPTED else None
        elif m.direction in ("out", "system"):
            kind = "auto_reply"
        if kind is not None:
            events.append((m.created_at, 2, SlaEvent(at=m.created_at, type=kind)))  # type: ignore[arg-type]
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _, _, e in events]


class SlaKeeper:
    def __init__(self, desk: Step) -> None:
        self.desk = desk
        self.s = desk.s
        self.rules = desk.rules

    def policy(self, ticket: Ticket) -> SlaPolicy | None:
        team = self.rules.team(ticket.team)
        return policy_for(team.sla, self.rules.sla, team.calendar)

    async def refresh_touched(self) -> None:
        """After a step: redo the clocks of every ticket the step changed or spoke about."""
        ids = set(self.desk.touched)
        ids.update(out.ticket_id for out, _ in self.desk.fx.items if out.ticket_id is not None)
        for ticket_id in sorted(ids):
            ticket = await self.s.get(Ticket, ticket_id)
            if ticket is not None:
                await self.refresh(ticket)

    async def refresh(self, ticket: Ticket, *, depth: int = 0) -> None:
        """Run the engine up to now; record and act on what fired; set the next timer."""
        policy = self.policy(ticket)
        if policy is None or ticket.incident_only:
            return  # a ticket shown only on an incident: the incident is what agents answer
        # Whoever redoes a ticket's clocks holds its row: two processes never both record a
        # firing (and the second one's query below sees what the first committed).
        await self.s.execute(select(Ticket.id).where(Ticket.id == ticket.id).with_for_update())
        now = self.desk.now
        events = await timeline(self.desk, ticket)
        if self.desk.sla_inputs.get(ticket.id) == (policy, events, ticket.sla):
            # Redone already in this step from the same history: the engine is a function of
            # it (and of the step's moment), so the firings, clocks and timer are what that
            # run left, and running it again would only read and write them again.
            return
        result = replay(policy, self.rules.calendars, events, now)
        known = set(
            await self.s.scalars(select(SlaFiring.key).where(SlaFiring.ticket_id == ticket.id))
        )
        raised = False
        for fired in result.fired:
            if fired.what not in RECORDED:
                continue
            key = _key(ticket.id, fired)
            if key in known:
                continue
            known.add(key)
            self.s.add(
                SlaFiring(
                    ticket_id=ticket.id,
                    key=key,
                    target=fired.target,
                    what=fired.what,
                    level=fired.level,
                    due_at=fired.due,
                    fired_at=now,
                )
            )
            raised |= await self._act(ticket, policy, fired)
        before = ticket.sla
        ticket.sla = {
            target: {
                "state": clock.state,
                "due": clock.due.isoformat() if clock.due is not None else None,
                **({"met_at": clock.met_at.isoformat()} if clock.met_at is not None else {}),
            }
            for target, clock in result.state.items()
        }
        await self._schedule(ticket, result.next_due)
        self.desk.sla_inputs[ticket.id] = (policy, events, ticket.sla)
        if raised and depth < 3:
            # A raised priority re-targets the running clocks: run the engine again.
            await self.refresh(ticket, depth=depth + 1)
        if ticket.sla != before:  # the Homes show SLA due times (bot/workspace/home.py)
            self.desk.home_teams.add(ticket.team)
            if ticket.assignee_id:
                self.desk.home_people.add(ticket.assignee_id)
        if ticket.sla != before and depth == 0 and ticket.slack_ts is not None:
            await self.desk.refresh_card(ticket)  # the card shows the clocks

    async def _schedule(self, ticket: Ticket, due: datetime | None) -> None:
        timer = await self.s.get(SlaTimer, ticket.id)
        if due is None:
            if timer is not None:
                await self.s.delete(timer)
            return
        if timer is None:
            self.s.add(SlaTimer(ticket_id=ticket.id, due_at=due, updated_at=self.desk.now))
        else:
            if timer.due_at != due or timer.lease_owner is not None:
                timer.due_at = due
                timer.lease_until = None
                timer.lease_owner = None
                timer.updated_at = self.desk.now

    async def _act(self, ticket: Ticket, policy: SlaPolicy, fired: Fired) -> bool:
        """Say and do what a firing means; True when it raised the priority."""
        name = TARGET_NAME.get(fired.target, fired.target)
        due = slack_date(fired.due) if fired.due is not None else "now"
        log.info(
            "sla.%s ticket=%d target=%s level=%s", fired.what, ticket.id, fired.target, fired.level
        )
        if fired.what == "warning":
            share = round(policy.warn_at * 100)
            self.desk.thread(ticket, f"⏰ {name} due {due} ({share}% of the target used).")
        elif fired.what == "breached":
            self.desk.thread(ticket, f"🚨 {name} target breached: it was due {due}.")
        elif fired.what == "met_late":
            self.desk.thread(ticket, f"☑️ {name} met late (it was due {due}).")
        elif fired.what == "escalation" and fired.level is not None:
            return await self._escalate(ticket, policy, fired, name)
        return False

    async def _escalate(self, ticket: Ticket, policy: SlaPolicy, fired: Fired, name: str) -> bool:
        if not fired.level or fired.level > len(policy.escalation):
            return False
        level = policy.escalation[fired.level - 1]
        team = self.rules.team(ticket.team)
        told: list[str] = []
        what = f"{name.lower()} breached"
        if "assignee" in level.notify and ticket.assignee_id:
            # A direct message: the assignee hears of it even if they muted the channel.
            self.desk.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_post",
                    destination=ticket.assignee_id,
                    text=(
                        f"📣 Your ticket #{ticket.id} ({ticket.priority},"
                        f" <#{ticket.slack_channel}>): {what}, escalation level {fired.level}."
                    ),
                )
            )
            told.append("the assignee by DM")
        if "lead" in level.notify and team.lead:
            told.append(f"<@{team.lead}>")
        if "channel" in level.notify:
            told.append("the team's channel")
        said = (": " + ", ".join(told)) if told else ""
        self.desk.thread(ticket, f"📣 Escalation level {fired.level}, {what}{said}.")
        if "channel" in level.notify:
            self.desk.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_post",
                    destination=team.channel,
                    text=(
                        f"📣 Ticket #{ticket.id} ({ticket.priority}): {name.lower()} breached, "
                        f"escalation level {fired.level}."
                    ),
                )
            )
        if level.reassign_to == "lead" and team.lead and ticket.assignee_id != team.lead:
            Assigner(self.desk).give(
                ticket, team.lead, AUTO, f"SLA escalation level {fired.level}: to the team's lead"
            )
            self.desk.thread(ticket, f"👤 Reassigned to <@{team.lead}>, the team's lead.")
        if level.raise_priority and UP[ticket.priority] != ticket.priority:
            new = UP[ticket.priority]
            reason = f"SLA escalation level {fired.level} ({name.lower()} breached) → {new}"
            self.desk.history(ticket, "priority", "desk", ticket.priority, new, reason)
            ticket.priority = new
            ticket.priority_reasons = [reason, *ticket.priority_reasons]
            self.desk.thread(ticket, f"⬆️ Priority raised to *{new}*: {reason}.")
            return True
        return False


async def on_seated(step: Step, event: TicketSeated) -> None:
    """A ticket about to get a card gets its clocks first, so the card shows them."""
    await SlaKeeper(step).refresh(event.ticket)


async def on_delivered(step: Step, event: DeliveryRecorded) -> None:
    """An agent's reply counts for the SLA once the platform accepted it."""
    message, ticket = event.message, event.ticket
    if event.delivered and message is not None and message.slack_ts and ticket is not None:
        await SlaKeeper(step).refresh(ticket)


async def refresh_touched(step: Step) -> None:
    """After each event: the clocks of every ticket the step changed."""
    await SlaKeeper(step).refresh_touched()


def _key(ticket_id: int, fired: Fired) -> str:
    return f"{ticket_id}:{fired.key}"[:200]
