"""What the customer sees, and what the agents see of it: /start, languages, edits, photos,
internal notes, and Telegram in webhook mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from storage.models import Message, Ticket

from .conftest import SUPPORT, Stack, eventually, running_stack


async def test_start_gets_the_welcome_and_no_ticket(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(3, "/start", first_name="Lu")
    welcome = (await tg.wait_for_sent(3, 1))[0]
    assert welcome["text"] == "Hi! Tell us what you need and an agent will answer you right here."
    async with stack.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 0
    assert stack.cards() == []


async def test_chinese_telegram_customer_is_answered_in_chinese(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(8, "我的订单还没到", first_name="Wei", language_code="zh-hans")
    ack = (await tg.wait_for_sent(8, 1))[0]
    assert ack["text"] == "我们已收到您的消息，工单号为 #1，客服会在这里回复您。"
    assert "我的订单还没到" in json.dumps((await stack.card())["blocks"], ensure_ascii=False)


async def test_edit_amends_the_message_and_shows_in_the_thread(stack: Stack) -> None:
    tg = stack.standins.telegram
    mid = await tg.customer_says(4, "my order 1234 is late", first_name="Ed")
    card = await stack.card()
    await tg.customer_edits(4, mid, "my order 1243 is late")
    await stack.thread_has(card["ts"], "Now: my order 1243 is late")
    async with stack.sessions() as s:
        messages = (await s.scalars(select(Message))).all()
    assert len(messages) == 1  # an edit, not a new message
    assert messages[0].text == "my order 1243 is late"
    assert messages[0].edits[0]["text"] == "my order 1234 is late"


async def test_photo_is_recorded_as_an_attachment(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_sends_photo(6, caption="the box was crushed", first_name="Pia")
    card = await stack.card()
    assert "the box was crushed" in json.dumps(card["blocks"])
    async with stack.sessions() as s:
        msg = await s.scalar(select(Message))
    assert msg is not None and msg.text == "the box was crushed"
    assert len(msg.attachments) == 1 and msg.attachments[0]["kind"] == "photo"
    assert msg.attachments[0]["file_id"] == "AgAC-1-1280"  # the largest size


async def test_notes_stay_internal(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(12, "can I change my address?", first_name="No")
    await tg.wait_for_sent(12, 1)
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    note_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "note: check with DHL")
    reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Yes, send it to us.")

    async def both_marked() -> bool:
        return "memo" in slack.reactions(SUPPORT, note_ts) and "white_check_mark" in (
            slack.reactions(SUPPORT, reply_ts)
        )

    await eventually(both_marked, "📝 on the note and ✅ on the reply")
    assert [m["text"] for m in tg.sent_to(12)][1:] == ["Yes, send it to us."]


@pytest.fixture
async def webhook_stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(database_url, telegram_webhook="/telegram/webhook") as running:
        yield running


async def test_telegram_webhook_mode(webhook_stack: Stack) -> None:
    tg = webhook_stack.standins.telegram
    assert tg.webhook is not None and tg.webhook["secret_token"] == "tg-secret_1"
    await tg.customer_says(21, "via the webhook", first_name="Hook")
    assert (await tg.wait_for_sent(21, 1))[0]["text"].startswith("Thanks, we got your message.")
    card = await webhook_stack.card()
    assert "via the webhook" in json.dumps(card["blocks"])
    assert "getupdates" not in tg.calls  # no polling while the webhook is set
