"""Accountability as the people involved see it, over real HTTP against the stand-ins: who
resolved a ticket, one rating per resolve (Telegram takes the buttons away, WhatsApp says so),
a claim by reply said in the thread, and a customer's text shown in Slack as they wrote it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import SUPPORT, Stack, eventually


def state_line(card: dict[str, Any]) -> str:
    """The card's state, without the team it names first ("Team *support* · …")."""
    block = next(b for b in card["blocks"] if b.get("block_id") == "state")
    return re.sub(r"^Team \*\w+\* · ", "", str(block["elements"][0]["text"]))


async def card_state(stack: Stack, expected: str) -> None:
    async def shows() -> bool:
        return state_line(stack.cards()[0]) == expected

    try:
        await eventually(shows, f"the card to say {expected!r}")
    except AssertionError:
        raise AssertionError(f"card says {state_line(stack.cards()[0])!r}") from None


async def test_telegram_resolver_is_named_and_a_rating_is_given_once(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(42, "My order never arrived", first_name="Ann")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0BOB")
    await card_state(stack, "Claimed by *Bob*")
    # Carol is a supervisor: she may resolve Bob's ticket (a fellow agent may not).
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0CAROL")
    await card_state(stack, "Resolved by <@U0CAROL> · assigned to *Bob*")
    await stack.thread_has(card["ts"], "*Carol* resolved this ticket.")

    prompt = (await tg.wait_for_sent(42, 2))[1]
    buttons = [b["callback_data"] for row in prompt["reply_markup"]["inline_keyboard"] for b in row]
    await tg.customer_presses(42, prompt["message_id"], buttons[3])
    thanks = (await tg.wait_for_sent(42, 3))[2]
    assert thanks["text"] == "Thank you! You rated us 4/5."

    async def keyboard_gone() -> bool:
        return "reply_markup" not in tg.sent_to(42)[1]

    await eventually(keyboard_gone, "the rating buttons to be taken off the prompt")
    with pytest.raises(ValueError, match="has no button"):
        await tg.customer_presses(42, prompt["message_id"], buttons[0])
    await card_state(stack, "Resolved by <@U0CAROL> · assigned to *Bob* · rated 4/5")

    # Reopened (back to Bob, who is available now) and resolved again: a new prompt, and its
    # rating counts.
    await slack.slash_command("/desk", "available", "U0BOB", SUPPORT)
    await tg.customer_says(42, "It came, but broken", first_name="Ann")
    await card_state(stack, "Claimed by *Bob* · rated 4/5")
    assert (await stack.ticket(1)).resolved_by is None
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
    await card_state(stack, "Resolved by *Bob*")
    again = [m for m in await tg.wait_for_sent(42, 5) if m.get("reply_markup")][-1]
    fresh = [b["callback_data"] for row in again["reply_markup"]["inline_keyboard"] for b in row]
    assert again["message_id"] != prompt["message_id"] and fresh != buttons
    await tg.customer_presses(42, again["message_id"], fresh[1])
    assert (await tg.wait_for_sent(42, 6))[5]["text"] == "Thank you! You rated us 2/5."
    assert (await stack.ticket(1)).rating == 2

    async def new_keyboard_gone() -> bool:
        return "reply_markup" not in tg.sent_to(42)[4]

    await eventually(new_keyboard_gone, "the second prompt's buttons to go too")


async def test_a_reopen_takes_the_buttons_off_an_unrated_prompt(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(7, "Where is my refund?", first_name="Rae")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
    prompt = (await tg.wait_for_sent(7, 2))[1]
    assert prompt["reply_markup"]["inline_keyboard"]
    await tg.customer_says(7, "No, it is not there yet", first_name="Rae")
    reopened = (await tg.wait_for_sent(7, 3))[2]
    assert reopened["text"] == "Ticket #1 is open again; an agent will be with you shortly."

    async def keyboard_gone() -> bool:
        return "reply_markup" not in tg.sent_to(7)[1]

    await eventually(keyboard_gone, "the reopen to take the old prompt's buttons away")
    assert (await stack.ticket(1)).rating is None


async def test_whatsapp_a_second_tap_is_answered_and_not_counted(stack: Stack) -> None:
    wa, slack = stack.standins.whatsapp, stack.standins.slack
    await wa.customer_says("15551234567", "The app charged twice!", name="Sheena")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
    closing = (await wa.wait_for_sent("15551234567", 2))[1]
    rows = closing["interactive"]["action"]["sections"][0]["rows"]
    await wa.customer_presses("15551234567", rows[4]["id"], rows[4]["title"])
    thanks = (await wa.wait_for_sent("15551234567", 3))[2]
    assert thanks["text"]["body"] == "Thank you! You rated us 5/5."
    await wa.customer_presses("15551234567", rows[0]["id"], rows[0]["title"])
    already = (await wa.wait_for_sent("15551234567", 4))[3]
    assert already["text"]["body"] == "You already rated ticket #1, thank you."
    assert (await stack.ticket(1)).rating == 5
    await card_state(stack, "Resolved by *Bob* · rated 5/5")


async def test_a_reply_on_an_unclaimed_ticket_says_who_claimed_it(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(9, "Is anyone there?", first_name="Ivo")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "Yes, Bob here.")
    await stack.thread_has(card["ts"], "🙋 *Bob* claimed this ticket.")
    await card_state(stack, "Waiting on the customer · *Bob*")
    assert (await tg.wait_for_sent(9, 2))[1]["text"] == "Yes, Bob here."


TRICKY = "*not bold* <@U0ALICE> & <https://evil.example|click> _x_ `y`"


async def test_the_customers_text_is_shown_verbatim(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(11, TRICKY, first_name="Mal")
    card = await stack.card()
    message = next(b for b in card["blocks"] if b.get("block_id") == "message")
    assert message["type"] == "rich_text"
    assert message["elements"][0]["elements"] == [{"type": "text", "text": TRICKY}]
    assert "<@U0ALICE>" not in card["text"]  # the fallback is escaped mrkdwn

    await tg.customer_says(11, f"and {TRICKY}", first_name="Mal")
    (post,) = await stack.thread_has(card["ts"], "Mal:")
    parts = [p for element in post["blocks"][0]["elements"] for p in element["elements"]]
    assert parts == [
        {"type": "text", "text": "Mal: ", "style": {"bold": True}},
        {"type": "text", "text": f"and {TRICKY}"},
    ]
    assert "<@U0ALICE>" not in post["text"] and "&lt;@U0ALICE&gt;" in post["text"]
    assert json.dumps(post["blocks"]).count("rich_text") >= 1
