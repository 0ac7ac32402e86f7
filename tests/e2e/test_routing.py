"""Routing and automatic assignment over real HTTP, with the shipped rules.yaml's teams."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from sqlalchemy import func, select

from bot.app import DeskApp
from bot.delivery.outbox import RateLimits
from storage.models import Message, Ticket
from tests.adapters.adapter_fakes import FakeInbox

from .conftest import RULES, Stack, desk_settings, eventually, free_port, start_standins


async def slash(stack: Stack, user: str, text: str) -> str:
    responses = await stack.standins.slack.slash_command("/desk", text, user, "C0SUPPORT")
    return json.dumps(responses, ensure_ascii=False)


async def assignee(stack: Stack, ticket_id: int) -> str | None:
    return (await stack.ticket(ticket_id)).assignee_id


async def test_a_billing_question_lands_in_billing_and_is_assigned(stack: Stack) -> None:
    assert "You are available" in await slash(stack, "U0BOB", "available")
    await stack.standins.telegram.customer_says(31, "Question about my last invoice", "Ida")
    card = await stack.card()
    assert card["channel"] == "C0BILLING"
    await stack.thread_has(card["ts"], "Assigned to <@U0BOB>: balanced, 1/5 open")
    ticket = await stack.ticket(1)
    assert (ticket.team, ticket.assignee_id, ticket.status) == ("billing", "U0BOB", "open")


async def test_chinese_messages_land_in_the_chinese_team(stack: Stack) -> None:
    await stack.standins.telegram.customer_says(
        32, "你好，我想问一下", first_name="Wei", language_code="zh-hans"
    )
    await stack.standins.whatsapp.customer_says("8613800000000", "我的订单三天了还没到", "Li")
    await stack.card(2)
    assert [c["channel"] for c in stack.cards()] == ["C0ZH", "C0ZH"]
    # WhatsApp gives no language: the script of the message says it, and the ack follows.
    ack = (await stack.standins.whatsapp.wait_for_sent("8613800000000", 1))[0]
    assert ack["interactive"]["body"]["text"].startswith("我们已收到您的消息")


async def test_an_agent_who_says_away_stops_receiving_tickets(stack: Stack) -> None:
    tg = stack.standins.telegram
    await slash(stack, "U0ALICE", "available")
    await slash(stack, "U0BOB", "available")
    await tg.customer_says(41, "my parcel is late", "A")
    await stack.card(1)
    assert await assignee(stack, 1) == "U0ALICE"
    assert "You are away" in await slash(stack, "U0ALICE", "away")
    for n, chat in enumerate((42, 43, 44), start=2):
        await tg.customer_says(chat, "my parcel is late", "B")
        await stack.card(n)
    assert [await assignee(stack, t) for t in (2, 3, 4)] == ["U0BOB", "U0BOB", "U0BOB"]
    # Her own open ticket stays hers within the grace period.
    assert await assignee(stack, 1) == "U0ALICE"


async def test_two_processes_racing_respect_capacity_and_announce_once(database_url: str) -> None:
    standins = await start_standins(rate_limits=False)
    port_a: int = standins.desk_port  # type: ignore[attr-defined]
    settings_a = desk_settings(standins, database_url, port_a)
    settings_b = dataclasses.replace(settings_a, http_port=free_port(), telegram=None)
    lifted = RateLimits.lifted()
    a = DeskApp(settings_a, RULES, idle_poll=0.02, limits=lifted)
    b = DeskApp(settings_b, RULES, idle_poll=0.02, limits=lifted)
    await a.start()
    await b.start()
    stack = Stack(standins, a, database_url)
    try:
        await slash(stack, "U0ALICE", "available")
        await slash(stack, "U0BOB", "available")
        customers = [f"1555020{n:04d}" for n in range(10)]
        await asyncio.gather(
            *(standins.whatsapp.customer_says(c, "where is my order?", c) for c in customers)
        )

        async def all_cards() -> bool:
            return len(stack.cards()) == len(customers)

        await eventually(all_cards, "ten cards", timeout=20)
        async with stack.sessions() as s:
            per_agent = dict(
                (
                    await s.execute(
                        select(Ticket.assignee_id, func.count())
                        .where(Ticket.assignee_id.is_not(None))
                        .group_by(Ticket.assignee_id)
                    )
                ).all()
            )
            waiting = await s.scalar(
                select(func.count()).select_from(Ticket).where(Ticket.assignee_id.is_(None))
            )
        # Support's capacity is 3 open tickets each: Alice and Bob are full, four wait.
        assert per_agent == {"U0ALICE": 3, "U0BOB": 3}
        assert waiting == 4

        def announced() -> list[str]:
            return [
                m["text"]
                for c in stack.cards()
                for m in standins.slack.thread(c["channel"], c["ts"])
                if m["text"].startswith("👤")
            ]

        async def six() -> bool:
            return len(announced()) >= 6

        await eventually(six, "six assignment lines")
        await asyncio.sleep(0.3)
        assert len(announced()) == 6
    finally:
        await b.stop()
        await a.stop()
        await standins.stop()


async def test_slack_presence_is_read_from_users_get_presence() -> None:
    from adapters.slack import SlackAdapter
    from bot.base.settings import SlackSettings

    from .conftest import SLACK_SECRET, SLACK_TOKEN

    standins = await start_standins()
    settings = SlackSettings(
        bot_token=SLACK_TOKEN, signing_secret=SLACK_SECRET, api_base=standins.slack_api_base
    )

    adapter = SlackAdapter(settings, FakeInbox(), max_body_bytes=1 << 20)
    try:
        standins.slack.presences["U0BOB"] = "away"
        assert await adapter.presence("U0ALICE") == "active"
        assert await adapter.presence("U0BOB") == "away"
        assert await adapter.presence("U0NOBODY") is None  # user_not_found: unknown, not away
        assert standins.slack.calls.count("users.getPresence") == 3
    finally:
        await adapter.stop()
        await standins.stop()


async def test_an_agent_transfers_a_ticket_from_the_cards_menu(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(51, "my parcel is late", "Pia")
    card = await stack.card()
    assert card["channel"] == "C0SUPPORT"
    status = await slack.agent_clicks(
        "C0SUPPORT", card["ts"], "ticket_transfer", "U0ALICE", value="1:billing"
    )
    assert status == 200
    moved = await stack.card(2)
    assert moved["channel"] == "C0BILLING"
    await stack.thread_has(moved["ts"], "Transferred from team *support* by <@U0ALICE>")
    await stack.thread_has(card["ts"], "transferred this ticket to team *billing*")

    async def old_card_frozen() -> bool:
        old = slack.messages("C0SUPPORT")[0]
        return not any(b["type"] == "actions" for b in old["blocks"])

    await eventually(old_card_frozen, "the old card without buttons")
    ticket = await stack.ticket(1)
    assert (ticket.team, ticket.slack_channel, ticket.slack_ts) == (
        "billing",
        "C0BILLING",
        moved["ts"],
    )
    # The customer heard nothing of it, and the conversation goes on in the new thread.
    assert len(tg.sent_to(51)) == 1
    await tg.customer_says(51, "any news?", "Pia")
    await stack.thread_has(moved["ts"], "any news?")


async def test_the_old_card_after_a_transfer_is_a_record_and_its_thread_loses_nothing(
    stack: Stack,
) -> None:
    """Slack still offers the old card's reply box: a reply written there is refused visibly,
    with where the ticket lives now; a note is kept on the ticket; the old card shows no live
    state, clocks or buttons."""
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(52, "I was charged twice", "Peter")
    card = await stack.card()
    await slack.agent_clicks("C0SUPPORT", card["ts"], "ticket_claim", "U0BOB")
    await slack.agent_clicks("C0SUPPORT", card["ts"], "ticket_transfer", "U0BOB", value="1:billing")
    moved = await stack.card(2)

    async def old_card_moved() -> dict[str, Any] | None:
        old = slack.messages("C0SUPPORT")[0]
        state = next((b for b in old["blocks"] if b.get("block_id") == "state"), None)
        return old if state and "Transferred to team *billing*" in str(state) else None

    old = await eventually(old_card_moved, "the old card saying where the ticket went")
    shown = str(old["blocks"])
    assert "SLA:" not in shown and "Claimed" not in shown and "Assigned" not in shown
    assert not any(b["type"] == "actions" for b in old["blocks"])

    reply = await slack.agent_replies(
        "C0SUPPORT", card["ts"], "U0BOB", "Hi Peter, please send us a photo of the receipt"
    )
    await stack.thread_has(card["ts"], "Not sent to the customer: ticket #1 lives in <#C0BILLING>")
    await eventually(
        lambda: _async(slack.reactions("C0SUPPORT", reply) == ["x"]), "❌ on the refused reply"
    )
    note = await slack.agent_replies("C0SUPPORT", card["ts"], "U0BOB", "note: he paid by card")
    await eventually(lambda: _async(slack.reactions("C0SUPPORT", note) == ["memo"]), "📝")
    await stack.thread_has(moved["ts"], "wrote a note in the old card's thread: note: he paid")
    assert all("photo of the receipt" not in m["text"] for m in tg.sent_to(52))
    async with stack.sessions() as s:
        kept = (await s.scalars(select(Message.text).where(Message.direction == "note"))).all()
    assert "note: he paid by card" in kept


async def _async(value: bool) -> bool:
    return value
