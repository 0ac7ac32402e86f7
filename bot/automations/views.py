"""What people see of the automations: ``/desk automations`` and ``deskbot automations explain``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.automations.runner import Automator
from bot.core.tickets import Desk
from bot.domain.automations import Automation, Timer, duration_text, why_not
from bot.domain.mrkdwn import escape
from bot.domain.rules import Rules
from storage.models import AutomationFiring, AutomationSuspension, AutomationTimer, Ticket

WEEK = timedelta(days=7)


def describe(rule: Automation) -> str:
    if rule.after is not None:
        on = f"{duration_text(rule.duration)} after {rule.anchor}"
        return on + (f" on calendar {rule.calendar}" if rule.calendar else "")
    return "on " + ", ".join(rule.on or ())


async def overview(session: AsyncSession, rules: Rules, now: datetime) -> str:
    """The rules in file order with their firings of the last 7 days, then suspended rules."""
    if not rules.automations:
        return "No automations in rules.yaml (see docs/automations.md)."
    counts = dict(
        (
            await session.execute(
                select(AutomationFiring.rule, func.count())
                .where(AutomationFiring.fired_at > now - WEEK)
                .group_by(AutomationFiring.rule)
            )
        ).all()
    )
    lines = [f"*Automations* · {len(rules.automations)} rules, firings in the last 7 days"]
    for rule in rules.automations:
        fired = int(counts.get(rule.id, 0))
        lines.append(f"• `{escape(rule.id)}` ({escape(describe(rule))}): {fired}")
    held = (
        await session.scalars(
            select(AutomationSuspension).order_by(AutomationSuspension.at.desc()).limit(20)
        )
    ).all()
    if held:
        lines.append("*Suspended* (fired too often on one ticket; they stay off there):")
        lines += [
            f"• `{escape(h.rule)}` on ticket #{h.ticket_id} since {h.at:%Y-%m-%d %H:%M} UTC:"
            f" {escape(h.why)}"
            for h in held
        ]
    else:
        lines.append("No rule is suspended.")
    return "\n".join(lines)


async def suspended(session: AsyncSession) -> list[tuple[str, int, datetime, str]]:
    rows = await session.execute(
        select(
            AutomationSuspension.rule,
            AutomationSuspension.ticket_id,
            AutomationSuspension.at,
            AutomationSuspension.why,
        ).order_by(AutomationSuspension.at)
    )
    return [(r, t, at, why) for r, t, at, why in rows.all()]


async def explain(desk: Desk, ticket_id: int) -> list[str]:
    """For one ticket: what each rule makes of it now, what fired, what is scheduled."""
    ticket = await desk.s.get(Ticket, ticket_id)
    if ticket is None:
        return [f"ticket #{ticket_id}: no such ticket"]
    auto = Automator(desk)
    facts = await auto.facts(ticket)
    anchors = await auto.anchors(ticket.id)
    fired = (
        await desk.s.execute(
            select(AutomationFiring.rule, AutomationFiring.key, AutomationFiring.fired_at)
            .where(AutomationFiring.ticket_id == ticket.id)
            .order_by(AutomationFiring.id)
        )
    ).all()
    timers = (
        await desk.s.scalars(
            select(AutomationTimer)
            .where(AutomationTimer.ticket_id == ticket.id)
            .order_by(AutomationTimer.due_at)
        )
    ).all()
    held = {
        r
        for r in await desk.s.scalars(
            select(AutomationSuspension.rule).where(AutomationSuspension.ticket_id == ticket.id)
        )
    }
    tags = ", ".join(sorted(facts.tags)) or "none"
    out = [
        f"ticket #{ticket.id}: {facts.status}, {facts.priority}, team {facts.team},"
        f" {'assigned to ' + facts.assignee if facts.assignee else 'unassigned'}, tags {tags}",
        "anchors: "
        + (
            ", ".join(f"{a} since {at.isoformat()}" for a, at in anchors.started.items())
            or "none running"
        ),
    ]
    for rule in desk.rules.automations:
        blocked = why_not(rule, facts)
        if rule.id in held:
            state = "suspended on this ticket"
        elif rule.after is not None:
            due = [t for t in timers if t.rule == rule.id]
            start = anchors.start_of(rule.anchor)
            if due:
                state = f"scheduled: due {due[0].due_at.isoformat()}"
                if blocked:
                    state += f" (would not fire now: {blocked})"
            elif start is None:
                state = f"not scheduled: anchor {rule.anchor} is not running"
            elif Timer(rule.id, rule.anchor, start, start).key[:200] in {k for _, k, _ in fired}:
                state = f"fired already for the {rule.anchor} since {start.isoformat()}"
            else:  # a rule added to rules.yaml since the ticket's last change
                state = "not scheduled yet: it is, at the ticket's next change"
        else:
            state = (
                f"does not match now: {blocked}"
                if blocked
                else f"matches now: fires on {', '.join(rule.on or ())}"
            )
        out.append(f"{rule.id} ({describe(rule)}): {state}")
    out += [f"fired: {r} at {at.isoformat()} ({key})" for r, key, at in fired] or [
        "fired: nothing yet"
    ]
    return out
