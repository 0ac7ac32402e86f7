"""Customers and agents going through the whole loop, over real HTTP, on both databases."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from storage.models import InboxRow, Message, OutboxRow, TicketEvent

from .conftest import SUPPORT, Stack, eventually


def _block_text(card: dict[str, Any]) -> str:
    return json.dumps(card["blocks"], ensure_ascii=False)


async def test_telegram_customer_whole_loop(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(42, "My order #A17 never arrived", first_name="Ann")

    ack = (await tg.wait_for_sent(42, 1))[0]
    assert ack["text"].startswith("Thanks, we got your message. Your ticket number is #1")
    card = await stack.card()
    blocks = _block_text(card)
    assert "*#1*" in blocks and "Ann" in blocks and "Telegram" in blocks
    assert "priority *normal*" in blocks and "no rule fired: default normal" in blocks
    assert "My order #A17 never arrived" in blocks
    assert "ticket_claim" in blocks and "ticket_resolve" in blocks

    # Claim: the card says who has it, and the Claim button is gone.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")

    async def claimed() -> bool:
        return "Claimed by *Alice*" in _block_text(stack.cards()[0])

    await eventually(claimed, "the card to show the claim")
    assert "ticket_claim" not in _block_text(stack.cards()[0])

    # The assignee answers in the thread: the customer gets it, and Slack shows it went out.
    reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Sorry! It ships today.")
    sent = await tg.wait_for_sent(42, 2)
    assert sent[1]["text"] == "Sorry! It ships today."  # no agent name unless rules.yaml says

    async def confirmed() -> bool:
        return "white_check_mark" in slack.reactions(SUPPORT, reply_ts)

    await eventually(confirmed, "the ✅ on the relayed reply")

    # A colleague's remark in the thread stays internal.
    note_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "their courier is slow")

    async def noted() -> bool:
        return "memo" in slack.reactions(SUPPORT, note_ts)

    await eventually(noted, "the 📝 on the internal note")

    # The customer's follow-up lands in the same thread.
    await tg.customer_says(42, "Thank you, which courier?", first_name="Ann")
    await stack.thread_has(card["ts"], "Thank you, which courier?")
    assert len(stack.cards()) == 1

    # Resolve: the customer gets the closing message with a 1-5 keyboard and rates it.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0ALICE")
    closing = (await tg.wait_for_sent(42, 3))[2]
    assert "Ticket #1 is resolved" in closing["text"]
    keyboard = closing["reply_markup"]["inline_keyboard"]
    assert [b["text"] for row in keyboard for b in row] == ["1", "2", "3", "4", "5"]
    await tg.customer_presses(42, closing["message_id"], keyboard[0][3]["callback_data"])
    thanks = (await tg.wait_for_sent(42, 4))[3]
    assert thanks["text"] == "Thank you! You rated us 4/5."

    ticket = await stack.ticket(1)
    assert (ticket.status, ticket.rating, ticket.assignee_id) == ("resolved", 4, "U0ALICE")
    async with stack.sessions() as s:
        texts = (await s.scalars(select(Message.text).where(Message.direction == "out"))).all()
        assert texts == ["Sorry! It ships today."]
        notes = (await s.scalars(select(Message.text).where(Message.direction == "note"))).all()
        assert notes == ["their courier is slow"]
        kinds = (await s.scalars(select(TicketEvent.kind).order_by(TicketEvent.id))).all()
        assert kinds[:6] == ["created", "priority", "team", "waiting", "assignee", "status"]
        assert kinds[-1] == "rating"


async def test_whatsapp_customer_whole_loop(stack: Stack) -> None:
    wa, slack = stack.standins.whatsapp, stack.standins.slack
    await wa.customer_says("15551234567", "The app charged twice for one order!", name="Sheena")
    ack = (await wa.wait_for_sent("15551234567", 1))[0]
    assert "Your ticket number is #1" in ack["interactive"]["body"]["text"]  # + My tickets
    card = await stack.card()
    blocks = _block_text(card)
    assert "Sheena" in blocks and "WhatsApp" in blocks
    assert "priority *high*" in blocks and "keyword 'charged twice' → high" in blocks

    # An agent who replies on an unclaimed ticket claims it.
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "Refund issued, sorry!")
    sent = await wa.wait_for_sent("15551234567", 2)
    assert sent[1]["text"]["body"] == "Refund issued, sorry!"
    ticket = await stack.ticket(1)
    assert ticket.assignee_id == "U0BOB"

    # WhatsApp reports delivery; the desk records it on the message.
    async def delivered() -> bool:
        async with stack.sessions() as s:
            d = await s.scalar(select(Message.delivery).where(Message.direction == "out"))
            return d in ("delivered", "read")

    await eventually(delivered, "the delivered status on the reply")

    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
    closing = (await wa.wait_for_sent("15551234567", 3))[2]
    assert closing["type"] == "interactive"
    rows = closing["interactive"]["action"]["sections"][0]["rows"]
    assert [r["title"] for r in rows] == ["1", "2", "3", "4", "5"]
    await wa.customer_presses("15551234567", rows[4]["id"], rows[4]["title"], context_id="x")
    thanks = (await wa.wait_for_sent("15551234567", 4))[3]
    assert thanks["text"]["body"] == "Thank you! You rated us 5/5."
    assert (await stack.ticket(1)).rating == 5


async def test_duplicate_deliveries_give_one_message_and_one_post(stack: Stack) -> None:
    wa, slack = stack.standins.whatsapp, stack.standins.slack
    wamid = await wa.customer_says("15550000001", "hello once", name="Dup")
    card = await stack.card()
    # Meta retries the same delivery: same message id.
    async with stack.sessions() as s:
        raw = await s.scalar(select(InboxRow.raw).where(InboxRow.external_id == wamid))
    assert raw is not None
    assert await wa.deliver_raw(raw) == 200
    # Slack retries an event (X-Slack-Retry-Num) with the same event_id.
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "hi!", duplicate_delivery=True)
    await wa.wait_for_sent("15550000001", 2)

    async def settled() -> bool:
        async with stack.sessions() as s:
            backlog = await s.scalar(
                select(func.count())
                .select_from(OutboxRow)
                .where(OutboxRow.status.in_(("pending", "sending")))
            )
            return backlog == 0

    await eventually(settled, "the outbox to empty")
    assert len(stack.cards()) == 1
    assert [m["text"]["body"] for m in wa.sent_to("15550000001")[1:]] == ["hi!"]
    async with stack.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 2
