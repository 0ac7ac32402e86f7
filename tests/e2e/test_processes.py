"""Two desks sharing one database, as several ``deskbot run`` processes do: nothing is handled
twice, nothing is lost, and each customer's messages stay in order."""

from __future__ import annotations

import asyncio
import dataclasses

from sqlalchemy import func, select

from bot.app import DeskApp
from bot.outbox import RateLimits
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
