"""Every kind of message a customer can send, from the platform's payload to what the agents
see in the card's thread and what the customer gets (issue 22; docs/files.md, "Every kind of
message"). The payloads go through the real parsers; the platforms are recording senders."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.telegram import parse_update_json
from adapters.whatsapp import parse_webhook
from bot import wiring
from bot.base.clock import FrozenClock
from bot.delivery.dispatcher import DbInbox
from bot.delivery.outbox import Metrics, RateLimits
from bot.domain.classifier import RulesClassifier
from bot.domain.events import AgentMessage, Event
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from storage.db import session_factory
from storage.models import Identity, OutboxRow, Ticket
from tests.test_desk_core import RULES, Harness, RecordingSender

PAYLOADS = Path(__file__).parent / "payloads"
WA = "16505551234"


@dataclass
class Desk:
    h: Harness
    whatsapp: RecordingSender

    async def send(self, *events: Event) -> None:
        await self.h.inbox.accept(list(events), {})
        await self.h.settle()

    def thread(self) -> list[str]:
        return [o.text for o in self.h.slack.sent if o.kind == "slack_thread"]

    def cards(self) -> list[Outbound]:
        return [o for o in self.h.slack.sent if o.kind in ("slack_card", "slack_card_update")]

    async def ticket(self) -> Ticket:
        return await self.h.ticket()

    async def agent_says(self, text: str, user: str = "U0ALICE") -> AgentMessage:
        reply = self.h.agent(await self.ticket(), user, text)
        await self.send(reply)
        return reply


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Desk]:
    yield make_desk(engine)


def make_desk(engine: AsyncEngine, rules: Rules = RULES) -> Desk:
    """The desk's two loops with recording platforms (WhatsApp's too) and a frozen clock."""
    sessions = session_factory(engine)
    clock = FrozenClock()
    inbox = DbInbox(sessions, clock)
    telegram, slack, whatsapp = RecordingSender(), RecordingSender(), RecordingSender()
    desks = wiring.desks(rules)
    outbox = wiring.outbox(
        sessions,
        {"telegram": telegram, "slack": slack, "whatsapp": whatsapp},
        desks,
        clock,
        Metrics(CollectorRegistry()),
        limits=RateLimits.lifted(),
    )
    dispatcher = wiring.dispatcher(sessions, desks, RulesClassifier(rules.priority), clock, inbox)
    return Desk(Harness(sessions, clock, inbox, dispatcher, outbox, telegram, slack), whatsapp)


# -- WhatsApp payloads --------------------------------------------------------------------------

_ids = iter(range(1, 10_000))


def wa(message: dict[str, Any], *, sender: str = WA, name: str = "Sheena") -> list[Event]:
    """One message as Meta delivers it, from ``sender`` (a number, or a user id alone)."""
    # Sent at the harness clock's start (2026-01-01 09:00 UTC): inside WhatsApp's window.
    message = {"id": f"wamid.T{next(_ids)}", "timestamp": "1767258000", **message}
    contact: dict[str, Any] = {"profile": {"name": name}}
    if sender.isdigit():
        message["from"] = sender
        contact["wa_id"] = sender
    else:
        contact["user_id"] = sender  # a username user: no number at all
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1065403"},
        "contacts": [contact],
        "messages": [message],
    }
    change = {"field": "messages", "value": value}
    entry = {"id": "1", "changes": [change]}
    return parse_webhook({"object": "whatsapp_business_account", "entry": [entry]})


def wa_sample(name: str, **changes: Any) -> dict[str, Any]:
    """The message of a conformance sample, to be sent from our customer."""
    data = json.loads((PAYLOADS / "whatsapp" / "conformance" / f"{name}.json").read_text())
    message: dict[str, Any] = copy.deepcopy(data["entry"][0]["changes"][0]["value"]["messages"][0])
    for key in ("id", "from", "timestamp"):
        message.pop(key, None)
    message.update(changes)
    return message


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body}}


async def test_a_location_opens_a_ticket_with_its_map_link(desk: Desk) -> None:
    await desk.send(*wa(wa_sample("pywa__message.chosen_location")))
    ticket = await desk.ticket()
    assert ticket.subject.startswith("📍 Shared a location: Facebook HQ, 1 Hacker Way")
    assert "https://maps.google.com/?q=" in ticket.subject
    [ack] = desk.whatsapp.sent
    assert f"#{ticket.id}" in ack.text and ack.destination == WA


async def test_contacts_an_order_and_what_whatsapp_cannot_deliver_in_the_thread(
    desk: Desk,
) -> None:
    await desk.send(*wa(text("My order is wrong")))
    await desk.send(*wa(wa_sample("pywa__message.contacts")))
    await desk.send(*wa(wa_sample("pywa__message.order")))
    await desk.send(*wa(wa_sample("pywa__message.unsupported")))
    contacts, order, unsupported = desk.thread()[-3:]
    assert "Chandler Bing: +1 555-555-5555 (cell)" in contacts
    assert "Rachel Green: +1 777-777-7777 (work)" in contacts
    assert "3 × HAMBURGER at 30 ILS" in order
    assert "cannot deliver to the desk: Message type unknown" in unsupported
    assert unsupported.startswith("*Sheena:*")


async def test_a_reaction_quotes_the_agents_reply_it_is_on(desk: Desk) -> None:
    await desk.send(*wa(text("Where is my parcel?")))
    await desk.agent_says("It ships tomorrow")
    reply_id = desk.whatsapp.sent[-1]
    assert reply_id.text == "It ships tomorrow"
    # The recording sender gave the reply the platform id 1001.0001 (the ack got 1000.0001).
    await desk.send(
        *wa({"type": "reaction", "reaction": {"message_id": "1001.0001", "emoji": "👍"}})
    )
    assert desk.thread()[-1] == "The customer reacted 👍 to <@U0ALICE>'s reply: It ships tomorrow"
    await desk.send(*wa({"type": "reaction", "reaction": {"message_id": "1001.0001"}}))
    assert desk.thread()[-1].startswith("The customer took back their reaction to <@U0ALICE>'s")


async def test_a_reaction_to_their_own_message_and_to_one_the_desk_has_no_copy_of(
    desk: Desk,
) -> None:
    [first] = wa(text("The screen is blank"))
    await desk.send(first)
    own = {"type": "reaction", "reaction": {"message_id": first.external_id, "emoji": "😮"}}
    await desk.send(*wa(own))
    assert desk.thread()[-1] == "The customer reacted 😮 to their own message: The screen is blank"
    await desk.send(*wa({"type": "reaction", "reaction": {"message_id": "wamid.x", "emoji": "❤"}}))
    assert desk.thread()[-1] == "The customer reacted ❤ to a message the desk has no copy of."


async def test_an_edit_on_whatsapp_is_said_in_the_thread(desk: Desk) -> None:
    [first] = wa(text("Order 118"))
    await desk.send(first)
    edit = {
        "type": "edit",
        "edit": {"original_message_id": first.external_id, "message": text("Order 1187")},
    }
    await desk.send(*wa(edit))
    assert desk.thread()[-1] == "✏️ The customer edited a message. Now: Order 1187"


async def test_a_changed_number_moves_the_customer_and_the_replies(desk: Desk) -> None:
    await desk.send(*wa(text("Refund please")))
    new = "16505559999"
    system = {
        "type": "system",
        "system": {
            "body": "Sheena changed from 1650… to 1650…",
            "wa_id": new,
            "type": "user_changed_number",
        },
    }
    await desk.send(*wa(system))
    assert desk.thread()[-1] == (
        f"📱 The customer changed their WhatsApp number from {WA} to {new}:"
        " replies go to the new number now."
    )
    ticket = await desk.ticket()
    assert ticket.chat_id == new
    await desk.agent_says("Refund is on its way")
    assert desk.whatsapp.sent[-1].destination == new
    # What they write from the new number joins the same ticket.
    await desk.send(*wa(text("Thanks"), sender=new))
    assert (await desk.ticket()).id == ticket.id
    assert desk.thread()[-1] == "*Sheena:* Thanks"
    async with desk.h.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.channel == "whatsapp"))
        assert ident is not None and (ident.external_id, ident.phone) == (new, new)


async def test_a_customer_without_a_number_is_answered_by_their_user_id(desk: Desk) -> None:
    bsuid = "US.13491208655302741918"
    await desk.send(*wa(text("Hi, it's about my account"), sender=bsuid))
    ticket = await desk.ticket()
    assert ticket.chat_id == bsuid
    [ack] = desk.whatsapp.sent
    assert ack.destination == bsuid
    await desk.agent_says("Happy to help")
    assert desk.whatsapp.sent[-1].destination == bsuid
    async with desk.h.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.channel == "whatsapp"))
        assert ident is not None and (ident.external_id, ident.phone) == (bsuid, None)
    assert "📵 no phone number known" in str(desk.cards()[-1].blocks)


async def test_a_customer_with_a_number_shows_no_such_note(desk: Desk) -> None:
    await desk.send(*wa(text("Hi, it's about my account")))
    assert "no phone number known" not in str(desk.cards()[-1].blocks)


async def test_a_button_the_desk_did_not_send_is_said_in_the_thread(desk: Desk) -> None:
    await desk.send(*wa(text("Hello")))
    reply = {
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "old", "title": "Yes"}},
    }
    await desk.send(*wa(reply))
    assert desk.thread()[-1] == "🔘 The customer pressed a button: Yes"


# -- Telegram ---------------------------------------------------------------------------------


def tg(update: dict[str, Any]) -> Event:
    update = copy.deepcopy(update)
    update["update_id"] = next(_ids)
    return parse_update_json(update)


def tg_message(**fields: Any) -> dict[str, Any]:
    return {
        "message": {
            "message_id": next(_ids),
            "date": 1718000000,
            "chat": {"id": 42, "type": "private", "first_name": "Ann"},
            "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
            **fields,
        }
    }


def member(old: str, new: str) -> dict[str, Any]:
    bot = {"id": 987654321, "is_bot": True, "first_name": "Acme Support"}

    def status(s: str) -> dict[str, Any]:
        return {"status": s, "user": bot, **({"until_date": 0} if s == "kicked" else {})}

    return {
        "my_chat_member": {
            "chat": {"id": 42, "type": "private", "first_name": "Ann"},
            "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
            "date": 1718000200,
            "old_chat_member": status(old),
            "new_chat_member": status(new),
        }
    }


async def test_blocking_the_bot_is_kept_shown_and_said(desk: Desk) -> None:
    await desk.send(tg(tg_message(text="My invoice is wrong")))
    await desk.send(tg(member("member", "kicked")))
    assert desk.thread()[-1].startswith("🚫 The customer blocked the bot")
    assert "blocked the bot" in str(desk.cards()[-1].blocks)
    async with desk.h.sessions() as s:
        assert await s.scalar(select(Identity.blocked)) is True
    await desk.send(tg(member("kicked", "member")))
    assert desk.thread()[-1] == "✅ The customer unblocked the bot: replies reach them again."
    assert "blocked the bot" not in str(desk.cards()[-1].blocks)
    async with desk.h.sessions() as s:
        assert await s.scalar(select(Identity.blocked)) is False


async def test_telegram_locations_venues_polls_and_contacts_reach_the_thread(desk: Desk) -> None:
    await desk.send(tg(tg_message(location={"latitude": 51.5, "longitude": -0.12})))
    ticket = await desk.ticket()
    assert ticket.subject == "📍 Shared a location\nhttps://maps.google.com/?q=51.5,-0.12"
    venue = {"location": {"latitude": 51.5, "longitude": -0.12}, "title": "Shop", "address": "1 St"}
    await desk.send(tg(tg_message(location=venue["location"], venue=venue)))
    assert desk.thread()[-1].startswith("*Ann:* 📍 Shared a place: Shop, 1 St")
    card = {"phone_number": "+447700900777", "first_name": "Bob", "user_id": 77}
    await desk.send(tg(tg_message(contact=card)))
    assert desk.thread()[-1] == "*Ann:* 👤 Shared a contact:\n• Bob: +447700900777"
    assert (await desk.ticket()).id == ticket.id


async def test_someone_elses_contact_after_link_is_still_refused(desk: Desk) -> None:
    await desk.send(tg(tg_message(text="/link")))
    card = {"phone_number": "+447700900777", "first_name": "Bob", "user_id": 77}
    await desk.send(tg(tg_message(contact=card)))
    assert desk.h.telegram.sent[-1].text.startswith("Please use the button to share your own")
    assert desk.h.slack.sent == []  # no ticket for it


async def test_a_sticker_and_a_video_note_are_relayed_as_files(desk: Desk) -> None:
    await desk.send(tg(tg_message(text="Look")))
    note = {"file_id": "VN1", "file_unique_id": "u1", "length": 240, "duration": 3}
    await desk.send(tg(tg_message(video_note=note)))
    async with desk.h.sessions() as s:
        payloads = (await s.scalars(select(OutboxRow.payload))).all()
    [file] = [p for p in payloads if p["kind"] == "slack_thread_file"]
    assert (file["file"]["kind"], file["file"]["file_id"]) == ("video", "VN1")
    assert file["text"] == "*Ann* sent a video."


async def test_nothing_is_sent_while_the_customer_has_blocked_the_bot(desk: Desk) -> None:
    await desk.send(tg(tg_message(text="My invoice is wrong")))
    await desk.send(tg(member("member", "kicked")))
    sent_before = len(desk.h.telegram.sent)
    await desk.agent_says("We are on it")
    assert len(desk.h.telegram.sent) == sent_before  # no request Telegram would refuse
    assert any(t.startswith('⚠️ Not delivered: "We are on it"') for t in desk.thread())
    assert "blocked the bot" in desk.thread()[-1]
