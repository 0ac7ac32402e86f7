"""WhatsApp's 24-hour window on the desk's own loop (recording senders, a frozen clock): the
rating prompt outside it, notices that cannot go, a crash after the template was accepted,
and what the card, App Home and Reply modal say (docs/whatsapp.md)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.delivery.leases import reclaim_dead_leases
from bot.domain.outbound import TemplateMessage
from bot.domain.window import WhatsAppRules, is_closed, window_note
from bot.workspace.home import home_view
from storage.models import Identity, Message, OutboxRow, Ticket
from storage.queues import outbox_claim
from tests.test_desk_core import RULES
from tests.test_leases import _owners
from tests.test_message_types import Desk, make_desk, text, wa


@pytest.fixture
async def desk(engine: AsyncEngine) -> Desk:
    return make_desk(engine)


def templates(desk: Desk) -> list[TemplateMessage]:
    return [o.template for o in desk.whatsapp.sent if o.template is not None]


def texts(desk: Desk) -> list[str]:
    return [o.text for o in desk.whatsapp.sent if o.kind == "text"]


async def opened(desk: Desk) -> Ticket:
    """A WhatsApp customer writes, an agent answers: a ticket with a card, inside the window."""
    await desk.send(*wa(text("My parcel never came")))
    await desk.agent_says("Looking into it")
    assert texts(desk)[-1].endswith("Looking into it")
    return await desk.ticket()


async def test_the_rating_prompt_after_a_late_resolve_goes_as_rating_request(desk: Desk) -> None:
    ticket = await opened(desk)
    desk.h.clock.advance(hours=30)
    await desk.send(desk.h.action(ticket, "resolve"))
    [template] = templates(desk)
    assert (template.name, template.language, template.parameters) == (
        "rate_ticket",
        "en_US",
        (str(ticket.id),),
    )
    assert not any("rate" in o.text.lower() for o in desk.whatsapp.sent if o.kind == "text")
    assert any("rating request went as template *rate_ticket*" in t for t in desk.thread())
    async with desk.h.sessions() as s:
        prompt = await s.scalar(select(Message).where(Message.purpose == "rating_prompt"))
    assert prompt is not None and prompt.delivery == "skipped"
    assert prompt.delivery_error == "replaced by the template rate_ticket"


async def test_without_its_template_the_rating_prompt_is_skipped_with_a_note(
    engine: AsyncEngine,
) -> None:
    desk = make_desk(engine, RULES.model_copy(update={"whatsapp": WhatsAppRules()}))
    ticket = await opened(desk)
    desk.h.clock.advance(hours=30)
    await desk.send(desk.h.action(ticket, "resolve"))
    assert templates(desk) == []
    assert len(texts(desk)) == 2  # the acknowledgement and the reply, nothing more
    assert any("The rating request was not sent" in t for t in desk.thread())
    async with desk.h.sessions() as s:
        row = await s.scalar(select(OutboxRow).where(OutboxRow.status == "skipped"))
    assert row is not None


async def test_a_crash_after_the_template_was_accepted_sends_neither_twice(desk: Desk) -> None:
    await opened(desk)
    desk.h.clock.advance(hours=25)
    reply = desk.h.agent(await desk.ticket(), "U0ALICE", "It ships today")
    await desk.h.inbox.accept([reply], {})
    await desk.h.dispatcher.run_once()
    await desk.h.outbox.run_once()  # the reply: held, and the template queued
    dead = _owners()["dead"]
    async with desk.h.sessions.begin() as s:
        claimed = await outbox_claim(
            s, now=desk.h.clock.now(), lease=timedelta(seconds=60), limit=10, owner=dead
        )
        kinds = [r.payload["kind"] for r in claimed]
    assert "template" in kinds
    # The process died after WhatsApp accepted the template, before it recorded that.
    done = await reclaim_dead_leases(desk.h.sessions, desk.h.dispatcher._desks, desk.h.clock.now())
    assert done.unknown >= 1
    await desk.h.settle()
    assert templates(desk) == []  # not sent again: it may have reached the customer
    assert texts(desk)[-1].endswith("Looking into it")  # the reply still waits
    assert any("not sent again" in t and "ticket_update" in t for t in desk.thread())
    # The customer writes: the reply goes once, and no second template.
    now = str(int(desk.h.clock.now().timestamp()))
    await desk.send(*wa({**text("hello?"), "timestamp": now}))
    assert texts(desk)[-1].endswith("It ships today")
    assert sum(t.endswith("It ships today") for t in texts(desk)) == 1
    assert templates(desk) == []


async def test_the_window_is_counted_from_the_customers_own_timestamp(desk: Desk) -> None:
    await opened(desk)
    async with desk.h.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.channel == "whatsapp"))
    assert ident is not None and ident.last_inbound_at is not None
    assert int(ident.last_inbound_at.timestamp()) == 1767258000  # the payload's timestamp
    rules = RULES.whatsapp
    assert not is_closed(ident.last_inbound_at, rules, desk.h.clock.now())
    assert is_closed(ident.last_inbound_at, rules, desk.h.clock.now() + timedelta(hours=24))
    assert is_closed(None, rules, desk.h.clock.now()) is False  # unknown: try, 131047 says


async def test_the_first_card_already_tells_the_window_the_message_opened(desk: Desk) -> None:
    """The card is drawn in the same step as the customer's first message: it says until when
    a reply goes as written, not nothing (the time is recorded before the card is drawn)."""
    await desk.send(*wa(text("My parcel never came")))
    first = desk.cards()[0]
    assert first.kind == "slack_card"
    assert "WhatsApp window open until <!date^1767344400^" in json.dumps(first.blocks)


async def test_a_returning_customers_card_shows_the_window_their_message_reopened(
    desk: Desk,
) -> None:
    await opened(desk)
    desk.h.clock.advance(hours=30)  # closed now
    at = desk.h.clock.now()
    await desk.send(*wa({**text("hello? anyone?"), "timestamp": str(int(at.timestamp()))}))
    shown = json.dumps(desk.cards()[-1].blocks, ensure_ascii=False)
    closes = int((at + timedelta(hours=24)).timestamp())
    assert f"WhatsApp window open until <!date^{closes}^" in shown
    assert "window closed" not in shown


async def test_card_and_app_home_say_what_happens_outside_the_window(
    desk: Desk,
) -> None:
    ticket = await opened(desk)
    card = desk.cards()[-1]
    assert "WhatsApp window open until <!date^1767344400^" in json.dumps(card.blocks)
    desk.h.clock.advance(hours=25)
    await desk.agent_says("Here you go")
    card = desk.cards()[-1]
    shown = json.dumps(card.blocks, ensure_ascii=False)
    assert "🔒 WhatsApp window closed" in shown
    assert "a reply goes as the template *ticket_update*" in shown
    assert "1 reply waiting" in shown
    async with desk.h.sessions() as s:
        view = await home_view(s, RULES, "U0ALICE", desk.h.clock.now())
    home = json.dumps(view, ensure_ascii=False)
    assert f"#{ticket.id}" in home and "WhatsApp window closed" in home
    note = window_note(None, RULES.whatsapp, desk.h.clock.now())
    assert note is None  # a customer from before the desk kept the time: nothing claimed


async def test_the_template_speaks_the_customers_language(desk: Desk) -> None:
    await desk.send(*wa(text("Hola, mi pedido no ha llegado todavía y necesito ayuda, por favor")))
    ticket = await desk.ticket()
    assert ticket.language == "es"
    desk.h.clock.advance(hours=26)
    await desk.agent_says("Su pedido sale hoy")
    [template] = templates(desk)
    assert (template.name, template.language, template.parameters) == (
        "ticket_update",
        "es",
        (str(ticket.id),),
    )
