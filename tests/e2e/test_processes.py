"""Two desks sharing one database, as several ``deskbot run`` processes do: nothing is handled
twice, nothing is lost, and each customer's messages stay in order."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import func, select

from bot.app import DeskApp
from bot.delivery.outbox import RateLimits
from storage.models import InboxRow, Message

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, free_port, start_standins

CUSTOMERS = [f"1555010{n:04d}" for n in range(6)]


async def test_two_desks_share_the_work_without_doubles(database_url: str) -> None:
    standins = await start_standins(rate_limits=False)
    port_a: int = standins.desk_port  # type: ignore[attr-defined]
    settings_a = desk_settings(standins, database_url, port_a)
    # The second desk serves WhatsApp and Slack too but gets no webhooks: it only competes for
    # the inbox and the outbox, which is the part that must be safe.
    settings_b = dataclasses.replace(settings_a, http_port=free_port(), telegram=None)
    lifted = RateLimits.lifted()
    a = DeskApp(settings_a, RULES, idle_poll=0.02, limits=lifted)
    b = DeskApp(settings_b, RULES, idle_poll=0.02, limits=lifted)
    await a.start()
    await b.start()
    try:

        async def customer(wa_id: str) -> None:
            for n in range(1, 4):
                await standins.whatsapp.customer_says(wa_id, f"{wa_id} message {n}", name=wa_id)

        await asyncio.gather(*(customer(c) for c in CUSTOMERS))
        stack = Stack(standins, a, database_url)

        async def all_in_threads() -> bool:
            cards = stack.cards()
            if len(cards) < len(CUSTOMERS):
                return False
            return all(len(standins.slack.thread(SUPPORT, c["ts"])) >= 2 for c in cards)

        await eventually(all_in_threads, "every follow-up in its card's thread", timeout=20)

        assert len(stack.cards()) == len(CUSTOMERS)
        for card in stack.cards():
            wa_id = next(c for c in CUSTOMERS if c in card["text"])
            thread = [m["text"] for m in standins.slack.thread(SUPPORT, card["ts"])]
            assert thread == [f"*{wa_id}:* {wa_id} message {n}" for n in (2, 3)], thread
        for wa_id in CUSTOMERS:
            acks = standins.whatsapp.sent_to(wa_id)
            assert (
                len(acks) == 1 and "Your ticket number is" in acks[0]["interactive"]["body"]["text"]
            )

        async def settled() -> bool:
            # WhatsApp's status reports on the acks keep arriving for a moment.
            async with stack.sessions() as s:
                left = await s.scalar(
                    select(func.count())
                    .select_from(InboxRow)
                    .where(InboxRow.status.in_(("pending", "processing")))
                )
                return left == 0

        await eventually(settled, "the inbox to settle")
        async with stack.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Message)) == 18
            processed = await s.scalar(
                select(func.count()).select_from(InboxRow).where(InboxRow.status == "done")
            )
        assert a.dispatcher is not None and b.dispatcher is not None
        # Every inbox row was processed by exactly one of the two desks.
        print(f"desk a processed {a.dispatcher.processed}, desk b {b.dispatcher.processed}")
        assert a.dispatcher.processed + b.dispatcher.processed == processed
    finally:
        await b.stop()
        await a.stop()
        await standins.stop()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_desks_keep_one_pace_into_a_slack_channel(database_url: str) -> None:
    """Slack allows about one message a second per channel. Two desks each keeping that pace
    on their own would post twice as fast and lean on 429s; sharing the budget in PostgreSQL,
    together they get no 429 from the channel's limit while a burst of cards goes out."""
    standins = await start_standins(rate_limits=True)
    port_a: int = standins.desk_port  # type: ignore[attr-defined]
    settings_a = desk_settings(standins, database_url, port_a)
    settings_b = dataclasses.replace(settings_a, http_port=free_port(), telegram=None)
    a = DeskApp(settings_a, RULES, idle_poll=0.02)  # the platforms' real limits
    b = DeskApp(settings_b, RULES, idle_poll=0.02)
    await a.start()
    await b.start()
    customers = [f"1555020{n:04d}" for n in range(24)]
    try:
        await asyncio.gather(
            *(standins.whatsapp.customer_says(c, f"{c} needs help", name=c) for c in customers)
        )
        stack = Stack(standins, a, database_url)

        async def all_cards() -> bool:
            return len(stack.cards()) == len(customers)

        await eventually(all_cards, "a card for every customer", timeout=40)
        assert a.outbox is not None and b.outbox is not None
        print(f"messages sent by desk a: {a.outbox.sent}, by desk b: {b.outbox.sent}")
        assert a.outbox.sent > 0 and b.outbox.sent > 0  # both desks took part
        assert standins.slack.paced_refusals.get(SUPPORT, 0) == 0
    finally:
        await b.stop()
        await a.stop()
        await standins.stop()
