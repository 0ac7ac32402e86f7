"""Automations run by the live desk: event rules in the step's transaction, time rules as
durable timers fired at most once, on SQLite and PostgreSQL, with a controllable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.automations.scheduler import AutomationScheduler
from bot.domain.automations import Automation, AutomationLimits
from bot.domain.macros import Macro
from bot.domain.rules import Rules
from storage.models import (
    AutomationFiring,
    Ticket,
    TicketEvent,
)

from .test_desk_core import RULES, Harness, make_harness

MACROS = (
    Macro(name="Still there?", text={"en": "Still there? (ticket #{ticket})", "es": "¿Sigue ahí?"}),
    Macro(name="Closing for now", text={"en": "Closing ticket #{ticket} for now."}),
)

ISSUE = """
- id: wait-for-customer
  on: [agent_reply]
  when: {channel: [telegram, whatsapp]}
  do: [{set_status: pending}]
- id: pending-reminder
  after: {pending: 10s}
  unless: {tags: [no-reminders]}
  do:
    - reply: {macro: "Still there?"}
    - add_tag: reminded
- id: pending-autoclose
  after: {pending: 30s}
  do: [{reply: {macro: "Closing for now"}}, {set_status: resolved}]
"""


def rules_with(text: str, **limits: int) -> Rules:
    loaded: list[dict[str, Any]] = yaml.safe_load(text)
    autos = tuple(Automation.model_validate(r) for r in loaded)
    return RULES.model_copy(
        update={
            "macros": (*RULES.macros, *MACROS),
            "automations": autos,
            "automation_limits": AutomationLimits(**limits),
        }
    )


def harness(engine: AsyncEngine, text: str = ISSUE, **limits: int) -> Harness:
    return make_harness(engine, rules_with(text, **limits))


def scheduler(desk: Harness, **options: Any) -> AutomationScheduler:
    rules = desk.dispatcher._desks.rules  # the rules the harness's desk runs
    return AutomationScheduler(desk.sessions, wiring.desks(rules), desk.clock, **options)


async def fire(desk: Harness, after: float = 0) -> int:
    """Move the clock ``after`` seconds on, fire what came due, deliver what it said."""
    desk.clock.advance(seconds=after)
    fired = await scheduler(desk).run_once()
    await desk.settle()
    return fired


def to_customer(desk: Harness) -> list[str]:
    return [m.text for m in desk.telegram.sent]


def thread(desk: Harness) -> list[str]:
    return [m.text for m in desk.slack.sent if m.kind == "slack_thread"]


async def firings(desk: Harness, rule: str | None = None) -> list[tuple[str, str]]:
    async with desk.sessions() as s:
        stmt = select(AutomationFiring.rule, AutomationFiring.key).order_by(AutomationFiring.id)
        if rule is not None:
            stmt = stmt.where(AutomationFiring.rule == rule)
        return [(r, k) for r, k in (await s.execute(stmt)).all()]


async def new_ticket(desk: Harness, text: str = "my parcel is late") -> Ticket:
    await desk.inbox.accept([desk.customer(text)], {})
    await desk.settle()
    return await desk.ticket()


async def reply(desk: Harness, t: Ticket, text: str = "It ships today.") -> None:
    await desk.inbox.accept([desk.agent(t, "U0ALICE", text)], {})
    await desk.settle()


async def customer(desk: Harness, text: str = "still waiting") -> None:
    await desk.inbox.accept([desk.customer(text)], {})
    await desk.settle()


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield harness(engine)


async def test_reminder_then_autoclose_each_once(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    assert (await desk.ticket()).status == "pending"
    before = len(to_customer(desk))
    assert await fire(desk, 9) == 0
    assert await fire(desk, 2) == 1
    said = to_customer(desk)[before:]
    assert said == [f"Still there? (ticket #{t.id})"]
    assert await fire(desk, 5) == 0
    assert await fire(desk, 20) == 1
    said = to_customer(desk)[before:]
    assert said[1] == f"Closing ticket #{t.id} for now."
    assert len(said) == 3 and "is resolved" in said[2]  # the desk's resolve and its rating prompt
    t = await desk.ticket()
    assert t.status == "resolved" and t.resolved_by == "pending-autoclose"
    assert t.assignee_id == "U0ALICE"
    # wait-for-customer fired on the reply (the desk had set pending already: nothing to do).
    assert [r for r, _ in await firings(desk)] == [
        "wait-for-customer",
        "pending-reminder",
        "pending-autoclose",
    ]
    assert await fire(desk, 3600) == 0
    assert len(to_customer(desk)) == before + 3
    async with desk.sessions() as s:
        story = (
            await s.execute(
                select(TicketEvent.kind, TicketEvent.actor).where(TicketEvent.ticket_id == t.id)
            )
        ).all()
    assert ("automation", "pending-reminder") in story
    assert ("automation", "pending-autoclose") in story
    assert ("tags", "pending-reminder") in story
    assert any("Automation *pending-reminder* sent to the customer" in x for x in thread(desk))
