"""Automations in the running desk against the stand-ins: the issue's example rules with their
durations shortened to seconds. An agent's reply sets the ticket pending; the customer gets
exactly one reminder, later exactly one closing message and the resolve; a customer who answers
in between cancels both."""

from __future__ import annotations

import asyncio

from bot import wiring
from bot.app import DeskApp
from bot.automations.scheduler import AutomationScheduler
from bot.base.clock import OffsetClock
from bot.delivery.outbox import RateLimits
from storage.db import create_engine, session_factory
from tests.test_automations_desk import ISSUE, rules_with

from .conftest import (
    RULES,
    SUPPORT,
    Stack,
    desk_settings,
    eventually,
    running_stack,
    start_standins,
)


async def test_reminder_then_close_once_and_an_answer_cancels_both(database_url: str) -> None:
    clock = OffsetClock()
    rules = rules_with(ISSUE, RULES)
    async with running_stack(database_url, rules=rules, clock=clock) as stack:
        standins = stack.standins
        desk: DeskApp = stack.desk

        async def later(seconds: float) -> None:
            clock.advance(seconds=seconds)
            desk.jobs.automations.wakeup.set()

        def texts(chat: int) -> list[str]:
            return [str(m.get("text", "")) for m in standins.telegram.sent_to(chat)]

        async def status(ticket: int, wanted: str) -> None:
            async def probe() -> bool:
                return (await stack.ticket(ticket)).status == wanted

            await eventually(probe, f"ticket #{ticket} {wanted}", timeout=15)

        async def customer_got(chat: int, needle: str) -> None:
            async def probe() -> bool:
                return any(needle in t for t in texts(chat))

            await eventually(probe, f"{needle!r} to chat {chat}", timeout=15)

        await standins.slack.slash_command("/desk", "available", "U0ALICE", SUPPORT)
        # Uma waits; Ivo answers in between.
        await standins.telegram.customer_says(61, "my parcel is late", "Uma")
        uma = await stack.card(1)
        await standins.telegram.customer_says(62, "my order has not arrived", "Ivo")
        ivo = await stack.card(2)
        await standins.slack.agent_replies(SUPPORT, uma["ts"], "U0ALICE", "It ships today.")
        await standins.slack.agent_replies(SUPPORT, ivo["ts"], "U0ALICE", "Which order?")
        await status(1, "pending")
        await status(2, "pending")
        await customer_got(62, "Which order?")
        await standins.telegram.customer_says(62, "The one from May.", "Ivo")
        await status(2, "open")

        await later(11)
        await customer_got(61, "Still there? (ticket #1)")
        await later(20)
        await customer_got(61, "Closing ticket #1 for now.")
        await status(1, "resolved")
        await customer_got(61, "Ticket #1 is resolved")
        for _ in range(3):  # every scheduler pass after this finds nothing more to do
            await later(60)
            await desk.jobs.automations.run_once()
        await stack.outbox_idle()

        uma_got = texts(61)
        assert sum("Still there?" in t for t in uma_got) == 1, uma_got
        assert sum("Closing ticket #1" in t for t in uma_got) == 1, uma_got
        assert sum("is resolved" in t for t in uma_got) == 1, uma_got
        ivo_got = texts(62)
        assert not any("Still there?" in t or "Closing" in t for t in ivo_got), ivo_got
        assert (await stack.ticket(2)).status == "open"
        story = [m["text"] for m in standins.slack.thread(SUPPORT, uma["ts"])]
        assert any("*pending-reminder* fired" in t for t in story), story
        assert any("*pending-autoclose* fired" in t for t in story), story


async def test_two_schedulers_and_a_restart_fire_each_time_rule_once(database_url: str) -> None:
    """A desk and a second process's automation scheduler on one database (its own engine, its
    own lease owner); the desk is down while the reminder comes due and restarted: the reminder
    fires once, and so does the close."""
    standins = await start_standins(rate_limits=False)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    settings = desk_settings(standins, database_url, port)
    clock = OffsetClock()
    rules = rules_with(ISSUE, RULES)
    engine = create_engine(database_url)
    other = AutomationScheduler(
        session_factory(engine), wiring.desks(rules), clock, owner="elsewhere:1:b"
    )

    def desk() -> DeskApp:
        return DeskApp(settings, rules, clock=clock, idle_poll=0.05, limits=RateLimits.lifted())

    a = desk()
    await a.start()
    stack = Stack(standins, a, database_url)

    async def later(seconds: float) -> None:
        clock.advance(seconds=seconds)
        a.jobs.automations.wakeup.set()
        await asyncio.gather(other.run_once(), a.jobs.automations.run_once())

    def texts() -> list[str]:
        return [str(m.get("text", "")) for m in standins.telegram.sent_to(61)]

    async def got(needle: str) -> None:
        async def probe() -> bool:
            return any(needle in t for t in texts())

        await eventually(probe, f"{needle!r} to the customer", timeout=15)

    try:
        await standins.slack.slash_command("/desk", "available", "U0ALICE", SUPPORT)
        await standins.telegram.customer_says(61, "my parcel is late", "Uma")
        card = await stack.card()
        await standins.slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "It ships today.")
        await got("It ships today.")
        await a.stop()  # down while the reminder comes due
        clock.advance(seconds=11)
        a = desk()
        await a.start()
        stack = Stack(standins, a, database_url)
        await later(0)
        await got("Still there? (ticket #1)")
        await later(20)
        await got("Closing ticket #1 for now.")
        for _ in range(3):
            await later(30)
        await stack.outbox_idle()
        said = texts()
        assert sum("Still there?" in t for t in said) == 1, said
        assert sum("Closing ticket #1" in t for t in said) == 1, said
        assert (await stack.ticket(1)).status == "resolved"
    finally:
        await a.stop()
        await standins.stop()
        await engine.dispose()
