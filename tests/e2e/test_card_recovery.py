"""A ticket whose card is gone from Slack gets a new one: no ticket is ever invisible.

Before, a deleted card or an archived channel left an active ticket with no card and no thread
(``thread_not_found``, ``message_not_found``): the customer was told an agent was coming, no
agent could see the ticket, and ``/desk`` counted it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from bot.app import DeskApp
from bot.domain.rules import Rules
from storage.models import OutboxRow, Ticket, TicketEvent

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, start_standins

BILLING = "C0BILLING"


def _rules_with_channel(channel: str) -> Rules:
    """Rules whose one (implicit) team posts to ``channel``."""
    slack = RULES.slack.model_copy(update={"channel": channel})
    return RULES.model_copy(update={"slack": slack, "teams": {}, "routing": ()})


def _card_for(stack: Stack, channel: str, ticket: int) -> dict[str, Any] | None:
    return next(
        (
            m
            for m in stack.standins.slack.messages(channel)
            if m.get("blocks") and m["text"].startswith(f"#{ticket} ")
        ),
        None,
    )


async def _new_card(stack: Stack, channel: str, old_ts: str | None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        card = _card_for(stack, channel, 1)
        return card if card is not None and card["ts"] != old_ts else None

    return await eventually(probe, f"ticket #1's card posted again in {channel}")


async def _thread(stack: Stack, channel: str, ts: str, n: int) -> list[str]:
    async def probe() -> list[str] | None:
        texts = [m["text"] for m in stack.standins.slack.thread(channel, ts)]
        return texts if len(texts) >= n else None

    return await eventually(probe, f"{n} messages in the new card's thread")


async def _card_events(stack: Stack) -> list[TicketEvent]:
    async with stack.sessions() as s:
        return list((await s.scalars(select(TicketEvent).where(TicketEvent.kind == "card"))).all())


async def test_a_deleted_card_is_posted_again_with_the_conversation(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(42, "Order <123> never came & I'm upset", first_name="Kim")
    old = await stack.card()
    reply = await slack.agent_replies(SUPPORT, old["ts"], "U0ALICE", "Let me check for you")
    await tg.wait_for_sent(42, 2)
    note = await slack.agent_replies(SUPPORT, old["ts"], "U0BOB", "note: warehouse says Tuesday")
    assert await slack.wait_for(lambda: "memo" in slack.reactions(SUPPORT, note), 10)
    # Everything the reply set off has reached Slack (its ✅, and the card showing the met
    # first response) before the card goes: what comes next is the customer's message alone.
    assert await slack.wait_for(lambda: "white_check_mark" in slack.reactions(SUPPORT, reply), 10)
    await stack.outbox_idle()

    await slack.delete_message(SUPPORT, old["ts"])  # someone deletes the card, thread and all
    await tg.customer_says(42, "Any news?", first_name="Kim")

    card = await _new_card(stack, SUPPORT, old["ts"])
    summary, follow_up = await _thread(stack, SUPPORT, card["ts"], 2)
    assert summary.startswith("📋 This ticket's card was gone (thread_not_found), so the desk")
    lines = summary.split("\n")[1:]
    assert [line.split(" ", 4)[-1] for line in lines] == [
        "*Kim:* Order &lt;123&gt; never came &amp; I'm upset",
        "*<@U0ALICE> → customer:* Let me check for you",
        "📝 *<@U0BOB> (internal note):* note: warehouse says Tuesday",
    ]
    assert follow_up == "*Kim:* Any news?"
    # The card is the current one: claimed by Alice (her reply claimed it).
    assert "U0ALICE" in str(card["blocks"])
    ticket = await stack.ticket(1)
    assert (ticket.slack_channel, ticket.slack_ts) == (SUPPORT, card["ts"])
    (event,) = await _card_events(stack)
    assert event.reason == "card was gone (thread_not_found); re-posted"
    assert event.to_value == f"{SUPPORT}/{card['ts']}"
    # Work carries on in the new thread.
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "It ships Tuesday")
    assert (await tg.wait_for_sent(42, 3))[-1]["text"] == "It ships Tuesday"


async def test_a_card_update_whose_card_was_deleted_reposts_the_current_card(
    stack: Stack,
) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(42, "Where is my refund?", first_name="Kim")
    old = await stack.card()
    # Slack hiccups on the card update that follows Alice's reply; while the desk waits to
    # retry it, the card is deleted. The retry meets message_not_found.
    slack.fail_next("chat.update", status=503)
    await slack.agent_replies(SUPPORT, old["ts"], "U0ALICE", "Refunded today")

    async def refused_once() -> bool:  # a refused call changes nothing, so poll for it
        return "chat.update" in slack.calls

    await eventually(refused_once, "the card update to meet Slack's 503")
    await slack.delete_message(SUPPORT, old["ts"])

    card = await _new_card(stack, SUPPORT, old["ts"])
    (summary,) = await _thread(stack, SUPPORT, card["ts"], 1)
    assert summary.startswith("📋 This ticket's card was gone (message_not_found)")
    assert summary.endswith("*<@U0ALICE> → customer:* Refunded today")
    assert "Waiting on the customer" in str(card["blocks"])  # the update is in the new card
    assert (await tg.wait_for_sent(42, 2))[-1]["text"] == "Refunded today"

    async def update_row() -> OutboxRow | None:
        async with stack.sessions() as s:
            row = await s.scalar(
                select(OutboxRow).where(
                    OutboxRow.payload["kind"].as_string() == "slack_card_update"
                )
            )
            return row if row is not None and row.status == "sent" else None

    row = await eventually(update_row, "the card update marked delivered")
    assert row.platform_message_id == card["ts"]


async def test_an_archived_team_channel_moves_the_card_to_the_default_channel(
    database_url: str,
) -> None:
    standins = await start_standins()
    port: int = standins.desk_port  # type: ignore[attr-defined]
    settings = desk_settings(standins, database_url, port)
    # The desk used to post to #billing; then it moved to #support and #billing was archived.
    desk = DeskApp(settings, _rules_with_channel(BILLING), idle_poll=0.05)
    await desk.start()
    try:
        await standins.telegram.customer_says(42, "Charged twice", first_name="Kim")
        await standins.telegram.wait_for_sent(42, 1)
        assert await standins.slack.wait_for(lambda: bool(standins.slack.messages(BILLING)), 10)
    finally:
        await desk.stop()
    old = standins.slack.messages(BILLING)[0]
    await standins.slack.archive_channel(BILLING)
    desk = DeskApp(settings, RULES, idle_poll=0.05)
    await desk.start()
    stack = Stack(standins, desk, database_url)
    try:
        await standins.telegram.customer_says(42, "Hello??", first_name="Kim")
        card = await _new_card(stack, SUPPORT, None)
        summary, follow_up = (await _thread(stack, SUPPORT, card["ts"], 2))[:2]
        assert summary.startswith(
            f"📋 This ticket's card was gone (is_archived in <#{BILLING}>), so the desk"
        )
        assert follow_up == "*Kim:* Hello??"
        ticket = await stack.ticket(1)
        assert (ticket.slack_channel, ticket.slack_ts) == (SUPPORT, card["ts"])
        (event,) = await _card_events(stack)
        assert event.from_value == f"{BILLING}/{old['ts']}"
        assert event.reason == f"card was gone (is_archived in <#{BILLING}>); re-posted"
        await standins.slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Refund is on its way")
        assert (await standins.telegram.wait_for_sent(42, 2))[-1]["text"] == "Refund is on its way"
    finally:
        await desk.stop()
        await standins.stop()


async def test_with_the_default_channel_archived_the_desk_fails_loudly(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="deskbot.recovery")
    await stack.standins.telegram.customer_says(42, "My order never came", first_name="Kim")
    await stack.card()
    await stack.standins.slack.archive_channel(SUPPORT)
    await stack.standins.telegram.customer_says(42, "Hello??", first_name="Kim")

    async def failed() -> OutboxRow | None:
        async with stack.sessions() as s:
            return await s.scalar(select(OutboxRow).where(OutboxRow.status == "failed"))

    row = await eventually(failed, "the thread message to fail")
    assert row.last_error is not None
    assert row.last_error.startswith(
        "BadRequest: is_archived: the ticket's card cannot be re-posted"
    )
    assert any(
        r.levelno == logging.ERROR and r.getMessage().startswith("outbox.card_lost ticket=1")
        for r in caplog.records
    )
    async with stack.sessions() as s:
        assert (await s.get_one(Ticket, 1)).slack_channel == SUPPORT
