"""Automations in the step's transaction: event rules, anchors, timers and firings.

After each event of the desk (the ``after_event`` phase, before the SLA clocks are redone),
:meth:`Automator.run` reads what the step did (:mod:`.journal`) and, ticket by ticket and in
order: moves the time rules' anchors, runs the event rules in file order (the pure
:func:`bot.domain.automations.on_event`), records each firing under its unique key and does its
actions (:mod:`.actions`). The actions' own changes are read the same way one level deeper, up
to ``chain_depth``. Last, the ticket's timers are set to what its anchors now say: one row per
(rule, anchor start) not yet fired. Everything is in the step's transaction: it commits with
the event, or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from bot.automations.actions import act, by_rule
from bot.automations.journal import events_of, happening, redo, take, undo
from bot.core.step import Step
from bot.core.tickets import Desk
from bot.domain.automations import (
    DAY,
    DONE,
    Anchors,
    Facts,
    Firing,
    Past,
    Refused,
    Timer,
    advance_anchors,
    due_at,
    fire_timer,
    on_event,
    timers,
)
from bot.domain.outbound import Outbound
from bot.workspace.controls import ticket_labels
from storage import trail
from storage.models import (
    AuditEntry,
    AutomationAnchors,
    AutomationFiring,
    AutomationSuspension,
    AutomationTimer,
    Identity,
    Message,
    Ticket,
    TicketEvent,
)

log = logging.getLogger("deskbot.automations")


HEARD = "deskbot.automations.heard"


def heard(step: Step, ticket: Ticket, details: dict[str, Any]) -> None:
    """What the model made of the customer's latest message (its sentiment and intent), for
    the rules run on it in this step; the ticket keeps only its first message's."""
    step.s.sync_session.info.setdefault(HEARD, {})[ticket.id] = details


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class Automator:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.s = desk.s
        self.rules = desk.rules
        self.limits = desk.rules.automation_limits

    # -- event rules ---------------------------------------------------------------------------

    async def run(self, depth: int = 0) -> None:
        """Everything the step did so far, then what the automations' actions did, deeper each
        round, until nothing more happens."""
        while True:
            await trail.write_async(self.s)  # the step's (and the actions') ticket events
            rows = take(self.s.sync_session)
            if not rows or not self.rules.automations:
                return
            await self.s.flush()  # the rows' ids are part of the firing keys
            by_ticket: dict[int, list[TicketEvent | Message]] = {}
            for row in rows:
                if row.ticket_id is not None:  # (always set; a row without one is no event)
                    by_ticket.setdefault(row.ticket_id, []).append(row)
            for ticket_id, its in by_ticket.items():
                ticket = await self._lock(ticket_id)
                if ticket is not None and not ticket.incident_only:
                    await self._happened(ticket, its, depth)
            depth += 1

    async def _lock(self, ticket_id: int) -> Ticket | None:
        # Whoever runs a ticket's automations holds its row (as the SLA keeper does).
        await self.s.execute(select(Ticket.id).where(Ticket.id == ticket_id).with_for_update())
        return await self.s.get(Ticket, ticket_id)

    async def _happened(
        self, ticket: Ticket, rows: list[TicketEvent | Message], depth: int
    ) -> None:
        now_facts = await self.facts(ticket)
        created = any(isinstance(r, TicketEvent) and r.kind == "created" for r in rows)
        running = undo(now_facts, rows)
        before: Facts | None = None if created else running
        anchors = await self.anchors(ticket.id)
        history = await self.past(ticket.id)
        for row in rows:
            events = events_of(row, created)
            if events is None:
                continue
            after = redo(running, row)
            hap = happening(row, events)
            first = events[0] if events else None
            if first is not None or after != before:
                anchors = advance_anchors(anchors, first, before, after, hap.at.astimezone(UTC))
            before = running = after
            for event in events:
                # ticket_created looks at the message that opened the ticket.
                text = ticket.subject if event == "ticket_created" else hap.text
                facts = replace(after, text=text)
                decision = on_event(
                    self.rules.automations,
                    event,
                    facts,
                    self.desk.now,
                    depth=depth,
                    limits=self.limits,
                    history=history,
                )
                for refused in decision.refused:
                    await self._refused(ticket, refused, depth)
                for firing in decision.firings:
                    if await self._fire(ticket, firing, f"{event}:{hap.key}", depth):
                        history.append(Past(firing.rule, firing.at))
        await self._save(ticket.id, anchors)
        await self.reschedule(ticket, anchors)

    async def _fire(self, ticket: Ticket, firing: Firing, key: str, depth: int) -> bool:
        """Record the firing under its unique key and do its actions; False if it had fired."""
        key = key[:200]
        known = await self.s.scalar(
            select(AutomationFiring.id).where(
                AutomationFiring.rule == firing.rule,
                AutomationFiring.ticket_id == ticket.id,
                AutomationFiring.key == key,
            )
        )
        if known is not None:
            return False
        self.s.add(
            AutomationFiring(
                rule=firing.rule, ticket_id=ticket.id, key=key, depth=depth, fired_at=self.desk.now
            )
        )
        # The firing itself is a ticket event with the rule as its actor: the card's story and
        # the audit trail show it.
        self.desk.history(ticket, "automation", firing.rule, None, firing.rule, firing.why)
        self.s.add(
            AuditEntry(
                at=self.desk.now,
                actor=firing.rule,
                action="automation",
                target=f"ticket #{ticket.id}",
                detail={"why": firing.why, "key": key, "depth": depth},
            )
        )
        self.desk.thread(ticket, f"{by_rule(firing.rule)} fired: {firing.why}.")
        self.desk.decided(
            "automations.fired ticket=%d rule=%s depth=%d", ticket.id, firing.rule, depth
        )
        for action in firing.actions:
            await act(self.desk, ticket, firing.rule, action)
        if not ticket.incident_only and (ticket.slack_ts is not None or self._card_queued(ticket)):
            # Behind a card queued by this very step (a new ticket): the outbox sends the
            # update once the card is posted, in order.
            await self.desk.refresh_card(ticket)
        return True

    def _card_queued(self, ticket: Ticket) -> bool:
        return any(
            out.kind == "slack_card" and out.ticket_id == ticket.id for out, _ in self.desk.fx.items
        )

    async def _refused(self, ticket: Ticket, refused: Refused, depth: int) -> None:
        if refused.what == "chain":
            self.desk.history(ticket, "automation_chain", "automations", None, None, refused.why)
            self.s.add(
                AuditEntry(
                    at=self.desk.now,
                    actor="automations",
                    action="automation_chain",
                    target=f"ticket #{ticket.id}",
                    detail={"why": refused.why, "depth": depth},
                )
            )
            self.desk.thread(ticket, f"⛓️ Automations stopped: {refused.why}.")
            self.desk.decided("automations.chain_stopped ticket=%d depth=%d", ticket.id, depth)
            return
        held = await self.s.get(AutomationSuspension, (refused.rule, ticket.id))
        if held is not None:
            return
        self.s.add(
            AutomationSuspension(
                rule=refused.rule, ticket_id=ticket.id, at=self.desk.now, why=refused.why
            )
        )
        self.desk.history(
            ticket, "automation_suspended", refused.rule, None, refused.rule, refused.why
        )
        said = f"⏸️ {by_rule(refused.rule)} is suspended on ticket #{ticket.id}: {refused.why}."
        self.desk.thread(ticket, said)
        self.desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_post",
                destination=self.rules.team(ticket.team).channel,
                text=said,
            )
        )
        self.desk.decided("automations.suspended ticket=%d rule=%s", ticket.id, refused.rule)

    # -- what the rules look at ----------------------------------------------------------------

    async def facts(self, ticket: Ticket) -> Facts:
        tags, corrected = await ticket_labels(self.s, ticket.id)
        model = self.s.sync_session.info.get(HEARD, {}).get(ticket.id) or ticket.classification
        model = model or {}
        intent = corrected or model.get("intent")
        external = await self.s.scalar(
            select(Identity.external_id)
            .where(Identity.customer_id == ticket.customer_id, Identity.channel == ticket.channel)
            .limit(1)
        )
        sentiment = model.get("sentiment")
        return Facts(
            channel=ticket.channel,
            status=ticket.status,
            team=ticket.team,
            tags=frozenset(tags),
            priority=ticket.priority,
            sentiment=str(sentiment) if sentiment else None,
            rating=ticket.rating,
            assignee=ticket.assignee_id,
            vip=f"{ticket.channel}:{external}" in self.rules.priority.vip.customers,
            language=ticket.language,
            intent=str(intent) if intent else None,
        )

    async def past(self, ticket_id: int) -> list[Past]:
        """This ticket's firings of the last day and its suspended rules (for the limits)."""
        since = self.desk.now - DAY
        fired = await self.s.execute(
            select(AutomationFiring.rule, AutomationFiring.fired_at).where(
                AutomationFiring.ticket_id == ticket_id, AutomationFiring.fired_at > since
            )
        )
        held = await self.s.execute(
            select(AutomationSuspension.rule, AutomationSuspension.at).where(
                AutomationSuspension.ticket_id == ticket_id
            )
        )
        return [Past(r, at) for r, at in fired] + [Past(r, at, suspended=True) for r, at in held]

    async def anchors(self, ticket_id: int) -> Anchors:
        row = await self.s.get(AutomationAnchors, ticket_id)
        if row is None:
            return Anchors()
        return Anchors({k: datetime.fromisoformat(v) for k, v in row.started.items()})  # type: ignore[misc]

    async def _save(self, ticket_id: int, anchors: Anchors) -> None:
        started: dict[str, Any] = {k: _iso(v) for k, v in anchors.started.items()}
        row = await self.s.get(AutomationAnchors, ticket_id)
        if row is None:
            self.s.add(
                AutomationAnchors(ticket_id=ticket_id, started=started, updated_at=self.desk.now)
            )
        elif row.started != started:
            row.started = started
            row.updated_at = self.desk.now

    # -- time rules ----------------------------------------------------------------------------

    async def reschedule(self, ticket: Ticket, anchors: Anchors) -> None:
        """One timer per (rule, anchor start) that is running and has not fired; the timers of
        ended or restarted anchors go."""
        planned = timers(self.rules.automations, anchors, self.rules.calendars)
        wanted = {(t.rule, _iso(t.start)): t for t in planned}
        rows = (
            await self.s.scalars(
                select(AutomationTimer).where(AutomationTimer.ticket_id == ticket.id)
            )
        ).all()
        fired = set(
            await self.s.scalars(
                select(AutomationFiring.key).where(AutomationFiring.ticket_id == ticket.id)
            )
        )
        have: set[tuple[str, str]] = set()
        for row in rows:
            key = (row.rule, _iso(row.anchor_start))
            if key not in wanted:
                await self.s.delete(row)
                continue
            have.add(key)
            if row.lease_owner is None and row.due_at != wanted[key].due:
                row.due_at = wanted[key].due  # rules.yaml changed the rule's duration
        for key, timer in wanted.items():
            if key in have or timer.key[:200] in fired:
                continue
            self.s.add(
                AutomationTimer(
                    rule=timer.rule,
                    ticket_id=ticket.id,
                    anchor=timer.anchor,
                    anchor_start=timer.start,
                    due_at=timer.due,
                    created_at=self.desk.now,
                )
            )

    async def fire(self, row: AutomationTimer) -> str:
        """A due timer (claimed by the scheduler): checked again now, fired at most once."""
        ticket = await self._lock(row.ticket_id)
        if ticket is None:
            await self.s.delete(row)
            return "the ticket is gone"
        rule = next((r for r in self.rules.automations if r.id == row.rule), None)
        if rule is not None and rule.after is not None and rule.anchor == row.anchor:
            due = due_at(rule, row.anchor_start, self.rules.calendars)
            if due > self.desk.now:  # rules.yaml now waits longer than when it was set
                row.due_at, row.lease_until, row.lease_owner = due, None, None
                return "not due yet"
        timer = Timer(row.rule, row.anchor, row.anchor_start, row.due_at)  # type: ignore[arg-type]
        facts = await self.facts(ticket)
        result = fire_timer(
            self.rules.automations,
            timer,
            settled(await self.anchors(ticket.id), facts),
            facts,
            self.desk.now,
            limits=self.limits,
            history=await self.past(ticket.id),
        )
        await self.s.delete(row)
        if isinstance(result, Firing):
            if await self._fire(ticket, result, timer.key, 0):
                await self.run(depth=1)
                return "fired"
            return "had fired"
        if isinstance(result, Refused):
            await self._refused(ticket, result, 0)
            return result.why
        self.desk.decided(
            "automations.not_fired ticket=%d rule=%s why=%s", ticket.id, row.rule, result
        )
        return result


def settled(anchors: Anchors, facts: Facts) -> Anchors:
    """The anchors as the ticket stands now. A change made outside the dispatcher's events (the
    assignment of waiting tickets when an agent comes back, an SLA escalation's reassignment)
    moves no anchor when it happens; at fire time, the facts say which anchors it ended."""
    started = dict(anchors.started)
    if facts.assigned:
        started.pop("unassigned", None)
    if facts.status != "pending":
        started.pop("pending", None)
    if facts.status in DONE:
        started = {a: at for a, at in started.items() if a == "resolved"}
    else:
        started.pop("resolved", None)
    return Anchors(started)


async def after_event(step: Step) -> None:
    """The ``after_event`` phase: the automations of what this event did."""
    if isinstance(step, Desk):
        await Automator(step).run()
    else:
        take(step.s.sync_session)
    step.s.sync_session.info.pop(HEARD, None)
