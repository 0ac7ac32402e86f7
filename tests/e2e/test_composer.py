"""Replies that cannot leak, over real HTTP: ``slack.relay: composer`` (nothing in the thread
reaches the customer; the Reply modal and the "Send to customer" shortcut do), macros with
placeholders in two languages, and notes that try hard to look like replies in thread mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.domain.rules import parse_rules
from storage.models import TicketEvent

from .conftest import ROOT, SUPPORT, Stack, eventually, running_stack


def composer_rules() -> Any:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["slack"]["relay"] = "composer"
    return parse_rules(data)


@pytest.fixture
async def composer(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(database_url, rules=composer_rules()) as running:
        yield running


def texts(stack: Stack, chat: int) -> list[str]:
    return [m.get("text", "") for m in stack.standins.telegram.sent_to(chat)]


async def modal_shows(stack: Stack, user: str, *needles: str) -> tuple[str, str]:
    slack = stack.standins.slack

    async def probe() -> tuple[str, str] | None:
        modal = slack.modal_of(user)
        if modal is None:
            return None
        text = slack.modal_text(modal["id"])
        return (modal["id"], text) if all(n in text for n in needles) else None

    return await eventually(probe, f"{needles!r} in {user}'s modal")


async def events(stack: Stack, kind: str) -> list[TicketEvent]:
    async with stack.sessions() as s:
        rows = await s.scalars(
            select(TicketEvent).where(TicketEvent.kind == kind).order_by(TicketEvent.id)
        )
        return list(rows)


async def test_composer_mode_sends_only_what_is_sent_deliberately(composer: Stack) -> None:
    stack = composer
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(
        42, "Mi paquete nunca llegó, quiero un reembolso", "Ana", language_code="es"
    )
    card = await stack.card()
    await tg.wait_for_sent(42, 1)  # the acknowledgement
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await stack.thread_has(card["ts"], "claimed this ticket")

    # The assignee writes in the thread, plainly, then broadcast, then edits: all internal.
    said = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Checking the warehouse")
    await slack.agent_broadcasts(SUPPORT, card["ts"], "U0ALICE", "Team: who knows this courier?")
    await slack.edits_message(SUPPORT, said, "U0ALICE", "Hola Ana, ya está")

    async def noted() -> bool:
        return "memo" in slack.reactions(SUPPORT, said)

    await eventually(noted, "the note reaction on Alice's thread message")

    # Reply: the modal opens at once and is filled by the desk, with the macro picker.
    assert "ticket_reply" in str(stack.cards()[0]["blocks"])
    assert "Reply to customer" in str(stack.cards()[0]["blocks"])  # not a second "Reply"
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reply", "U0ALICE")
    view_id, _ = await modal_shows(stack, "U0ALICE", "To *Ana* on Telegram · language *es*")
    await slack.picks_in_modal(view_id, "reply_macro", "Refund on its way")
    expected = "Hola Ana, su reembolso del ticket #1 está en camino: de 3 a 5 días hábiles. Alice"
    _, shown = await modal_shows(stack, "U0ALICE", "*The customer will get exactly:*", expected)
    assert shown.count(expected) == 2  # in the box, and in the preview
    status, body = await slack.submits_modal(view_id)
    assert (status, body.strip()) == (200, "")  # the modal closes
    sent = await tg.wait_for_sent(42, 2)
    assert sent[-1]["text"] == expected
    await stack.thread_has(card["ts"], "📤 *Alice* sent to the customer with Reply")
    [macro] = await events(stack, "macro")
    assert (macro.actor, macro.to_value) == ("U0ALICE", "Refund on its way")
    assert [e.to_value for e in await events(stack, "tags")] == ['["refund"]']
    assert (await stack.ticket()).status == "pending"

    # The shortcut sends one thread message, deliberately, and marks it as relayed.
    chosen = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Tu reembolso ya salió.")
    assert await slack.message_shortcut(SUPPORT, chosen, "U0ALICE") == 200
    sent = await tg.wait_for_sent(42, 3)
    assert sent[-1]["text"] == "Tu reembolso ya salió."

    async def relayed() -> bool:
        return "white_check_mark" in slack.reactions(SUPPORT, chosen)

    await eventually(relayed, "the relayed reaction on the message sent with the shortcut")
    # The same message again, or the desk's own message (the customer's words in the thread):
    # refused, privately.
    await slack.message_shortcut(SUPPORT, chosen, "U0ALICE")
    desks_own = next(m for m in slack.thread(SUPPORT, card["ts"]) if m.get("bot_id"))
    await slack.message_shortcut(SUPPORT, desks_own["ts"], "U0ALICE")

    async def told() -> list[str] | None:
        said = slack.ephemerals("U0ALICE")
        return said if len(said) >= 2 else None

    assert await eventually(told, "two refusals") == [
        "Not sent: this message was sent to the customer already.",
        "Not sent: only a person's message can be sent to the customer, not the desk's own.",
    ]
    # Nothing else ever reached the customer.
    assert texts(stack, 42)[1:] == [expected, "Tu reembolso ya salió."]


async def test_macros_fill_placeholders_in_each_customers_language(composer: Stack) -> None:
    stack = composer
    slack, wa = stack.standins.slack, stack.standins.whatsapp
    await wa.customer_says("447700900123", "Where is my parcel? It is late", "Tom")
    card = await stack.card()
    await wa.wait_for_sent("447700900123", 1)
    # Bob replies without claiming first: sending takes the ticket.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reply", "U0BOB")
    view_id, _ = await modal_shows(stack, "U0BOB", "language *en*")
    await slack.picks_in_modal(view_id, "reply_macro", "Need order number")
    english = "Hi Tom, could you send us your order number so we can look into it?"
    await modal_shows(stack, "U0BOB", english)
    # The agent edits the text: the preview follows, and that is what is sent.
    edited = english + " Thanks!"
    await slack.types_in_modal(view_id, edited)
    await modal_shows(stack, "U0BOB", "```" + edited + "```")
    await slack.submits_modal(view_id)
    sent = await wa.wait_for_sent("447700900123", 2)
    assert sent[-1]["text"]["body"] == edited
    ticket = await stack.ticket()
    assert (ticket.assignee_id, ticket.status) == ("U0BOB", "pending")
    await stack.thread_has(card["ts"], "(macro *Need order number*)")

    # An empty text is refused in the modal itself; nothing is sent.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reply", "U0BOB")
    second, _ = await modal_shows(stack, "U0BOB", "Message to the customer", "To *Tom*")
    assert second != view_id  # the first one closed when it was sent
    status, body = await slack.submits_modal(second)
    assert status == 200 and "Write something to send." in body
    assert len(wa.sent_to("447700900123")) == 2


async def test_someone_outside_the_team_cannot_send(composer: Stack) -> None:
    stack = composer
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(43, "My parcel never came", "Ann")
    card = await stack.card()
    chosen = await slack.agent_replies(SUPPORT, card["ts"], "U0DAN", "Send this to Ann")
    await slack.message_shortcut(SUPPORT, chosen, "U0DAN")  # Dan is in billing only

    async def told() -> list[str]:
        return slack.ephemerals("U0DAN")

    assert await eventually(told, "Dan's refusal") == [
        "Not sent: you are not an agent of team *support*."
    ]
    assert len(tg.sent_to(43)) == 1  # the acknowledgement only


async def test_thread_mode_notes_never_reach_the_customer(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(44, "My parcel never came", "Ann")
    card = await stack.card()
    await tg.wait_for_sent(44, 1)
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await stack.thread_has(card["ts"], "claimed this ticket")
    notes = [
        "   note: she was rude on the phone",
        '"note: check the refund policy"',
        "“// courier is DHL”",
        "&gt; note: quoting the policy here",  # Slack sends a typed > as &gt;
        "*(note)* escalate tomorrow",
    ]
    stamps = [await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", n) for n in notes]
    # Edited into something without the prefix: still the note it was.
    await slack.edits_message(SUPPORT, stamps[0], "U0ALICE", "Hello Ann, sorry for the wait")
    await slack.agent_broadcasts(SUPPORT, card["ts"], "U0ALICE", "FYI all: courier strike")
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Hello Ann, it ships today.")
    sent = await tg.wait_for_sent(44, 2)
    for ts in stamps:
        assert "memo" in slack.reactions(SUPPORT, ts)
    assert [m["text"] for m in sent][1:] == ["Hello Ann, it ships today."]


async def test_thread_mode_offers_macros_through_the_reply_modal(stack: Stack) -> None:
    """With the shipped rules (``relay: thread``) the card offers the macros: its
    "Reply with a macro" opens the Reply modal, and what is sent there reaches the customer."""
    slack, tg = stack.standins.slack, stack.standins.telegram
    await tg.customer_says(43, "I want a refund for my order", "Ben")
    card = await stack.card()
    await tg.wait_for_sent(43, 1)
    assert "Reply with a macro" in str(card["blocks"])
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reply", "U0BOB")
    view_id, _ = await modal_shows(stack, "U0BOB", "To *Ben* on Telegram")
    await slack.picks_in_modal(view_id, "reply_macro", "Need order number")
    expected = "Hi Ben, could you send us your order number so we can look into it?"
    await modal_shows(stack, "U0BOB", expected)
    status, _ = await slack.submits_modal(view_id)
    assert status == 200
    sent = await tg.wait_for_sent(43, 2)
    assert sent[-1]["text"] == expected
    await stack.thread_has(card["ts"], "(macro *Need order number*)")
