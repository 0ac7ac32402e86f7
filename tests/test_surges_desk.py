"""Incidents in the desk (inbox → dispatcher → outbox, recording senders), SQLite and PostgreSQL:
a surge of alike new tickets becomes one incident card; later ones are attached to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.events import AgentAction, SlashCommand
from storage.models import Incident, Ticket, TicketEvent

from .test_desk_core import Harness, make_harness


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


OUTAGE = "The app is down for me, outage since this morning"


async def burst(desk: Harness, texts: list[str], start: int = 100) -> None:
    for n, text in enumerate(texts):
        await desk.inbox.accept([desk.customer(text, chat=str(start + n))], {})
    await desk.settle()


async def test_a_surge_becomes_one_incident_card_and_later_tickets_join_it(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.incidents.render.LIST_LIMIT", 4)  # lists of at most 4 tickets a post
    await burst(desk, [f"{OUTAGE} ({n})" for n in range(4)])
    cards = [o for o in desk.slack.sent if o.kind == "slack_card"]
    assert len(cards) == 4  # under min_tickets (5): cards of their own, as before

    await burst(desk, [f"{OUTAGE} (4)", "Where is my parcel?"], start=104)
    desk.clock.advance(seconds=7)  # past the incident card's update slice
    await desk.settle()
    cards = [o for o in desk.slack.sent if o.kind == "slack_card"]
    incident_cards = [c for c in cards if c.incident_id is not None]
    assert len(incident_cards) == 1 and len(cards) == 6  # + the parcel's own card
    card = incident_cards[0]
    assert (
        "Incident 1 · 5 customers since" in card.text and "outage since this morning" in card.text
    )
    assert "Reply to all affected" in json.dumps(card.blocks, ensure_ascii=False)
    acks = {o.destination: o.text for o in desk.telegram.sent}
    assert "We know about this problem" in acks["104"]
    assert "We know about this problem" not in acks["105"]

    # Ten more: no new cards, each acknowledged, listed in the incident's thread in batches.
    await burst(desk, [f"{OUTAGE}!! ({n})" for n in range(10)], start=200)
    desk.clock.advance(seconds=7)
    await desk.settle()
    assert len([o for o in desk.slack.sent if o.kind == "slack_card"]) == 6
    updates = [o for o in desk.slack.sent if o.kind == "slack_card_update" and o.incident_id]
    assert updates and "15 customers" in updates[-1].text
    lists = [o for o in desk.slack.sent if o.kind == "slack_thread" and o.incident_list]
    named = [o.text.count("• #") for o in lists]
    assert sum(named) == 15 and max(named) == 4 and len(lists) <= 6
    assert all(o.reply_to == card_ts(desk) for o in lists)
    for n in range(10):
        assert "We know about this problem" in acks_of(desk)[str(200 + n)]
    async with desk.sessions() as s:
        (inc,) = (await s.scalars(select(Incident))).all()
        attached = (await s.scalars(select(Ticket).where(Ticket.incident_id == inc.id))).all()
        assert len(attached) == 15 and sum(t.incident_only for t in attached) == 11
        events = (await s.scalars(select(TicketEvent).where(TicketEvent.kind == "incident"))).all()
        assert len(events) == 15 and {e.actor for e in events} == {"desk"}

    # A follow-up of an attached customer goes into the incident's thread, labelled.
    await desk.inbox.accept([desk.customer("still down", chat="205")], {})
    await desk.settle()
    follow = desk.slack.sent[-1]
    assert follow.kind == "slack_thread" and follow.reply_to == card_ts(desk)
    assert "still down" in follow.text and follow.text.startswith("#")


def card_ts(desk: Harness) -> str:
    n = next(i for i, o in enumerate(desk.slack.sent) if o.kind == "slack_card" and o.incident_id)
    return f"{1000 + n}.0001"


def acks_of(desk: Harness) -> dict[str, str]:
    return {o.destination: o.text for o in desk.telegram.sent}


def incident_action(desk: Harness, inc_id: int, action: str, **kw: object) -> AgentAction:
    n = next(desk.seq)
    return AgentAction(
        external_id=f"action:{n}",
        conversation=f"slack:C0SUPPORT:incident{inc_id}",
        action=action,
        ticket_id=0,
        incident_id=inc_id,
        user_id="U0ALICE",
        user_name="Alice",
        slack_channel="C0SUPPORT",
        message_ts="1.1",
        **kw,
    )


def command(desk: Harness, text: str) -> SlashCommand:
    return SlashCommand(
        external_id=f"command:{next(desk.seq)}",
        conversation="slack:C0SUPPORT:commands",
        command="/desk",
        text=text,
        user_id="U0ALICE",
        slack_channel="C0SUPPORT",
        response_url="https://hooks.slack.test/r/1",
    )


async def an_incident(desk: Harness, n: int = 7) -> int:
    for k in range(n):
        spanish = k == n - 1
        text = "La aplicación no funciona, hay un outage desde esta mañana" if spanish else OUTAGE
        ev = desk.customer(f"{text} ({k})", chat=str(300 + k), language="es" if spanish else "en")
        await desk.inbox.accept([ev], {})
    await desk.settle()
    desk.clock.advance(seconds=7)
    await desk.settle()
    async with desk.sessions() as s:
        return (await s.scalars(select(Incident.id))).one()


async def test_reply_to_all_reaches_each_customer_once_in_their_language(desk: Harness) -> None:
    inc = await an_incident(desk)
    before = len(desk.telegram.sent)
    texts = {"en": "Fixed: the app works again.", "es": "Arreglado: la app funciona."}
    reply = incident_action(desk, inc, "incident_reply", texts=texts)
    await desk.inbox.accept([reply], {})
    await desk.inbox.accept([reply], {})  # Slack's retry of the same submission
    await desk.settle()
    desk.clock.advance(seconds=7)
    await desk.settle()
    sent = desk.telegram.sent[before:]
    assert sorted(o.destination for o in sent) == [str(300 + k) for k in range(7)]
    assert {o.text for o in sent if o.destination == "306"} == {texts["es"]}
    assert {o.text for o in sent if o.destination != "306"} == {texts["en"]}
    card = [o for o in desk.slack.sent if o.kind == "slack_card_update" and o.incident_id][-1]
    assert "7 sent · 0 failed · 0 blocked" in json.dumps(card.blocks, ensure_ascii=False)
    thread = [o.text for o in desk.slack.sent if o.kind == "slack_thread" and o.incident_id]
    assert any("replied to all 7 affected" in t and "*es* (1)" in t for t in thread)
    async with desk.sessions() as s:
        statuses = set((await s.scalars(select(Ticket.status))).all())
        assert statuses == {"pending"}

    # Resolve incident: every ticket resolved, each customer gets the closing message + rating.
    before = len(desk.telegram.sent)
    await desk.inbox.accept([incident_action(desk, inc, "incident_resolve")], {})
    await desk.settle()
    closing = desk.telegram.sent[before:]
    assert len(closing) == 7 and all(len(o.buttons) == 5 for o in closing)
    async with desk.sessions() as s:
        assert set((await s.scalars(select(Ticket.status))).all()) == {"resolved"}
        assert (await s.get_one(Incident, inc)).status == "resolved"
        by = (
            await s.scalars(
                select(TicketEvent.actor).where(
                    TicketEvent.kind == "status", TicketEvent.to_value == "resolved"
                )
            )
        ).all()
        assert len(by) == 7 and set(by) == {"U0ALICE"}

    # A customer of the resolved incident writes again: their ticket reopens with its own card.
    async with desk.sessions() as s:
        chat = (await s.scalars(select(Ticket.chat_id).where(Ticket.incident_only))).first()
    assert chat is not None
    await desk.inbox.accept([desk.customer("Still broken for me", chat=chat)], {})
    await desk.settle()
    card = [o for o in desk.slack.sent if o.kind == "slack_card"][-1]
    async with desk.sessions() as s:
        reopened = (await s.scalars(select(Ticket).where(Ticket.chat_id == chat))).one()
        assert (reopened.status, reopened.incident_id, reopened.incident_only) == (
            "open",  # back to whoever resolved it
            None,
            False,
        )
    assert card.incident_id is None and card.ticket_id == reopened.id
    said = [
        o.text for o in desk.slack.sent if o.ticket_id == reopened.id and o.kind == "slack_thread"
    ]
    assert any("Still broken for me" in t for t in said)


async def test_detach_attach_merge_and_close(desk: Harness) -> None:
    inc = await an_incident(desk, 6)
    async with desk.sessions() as s:
        only = (
            await s.scalars(select(Ticket.id).where(Ticket.incident_only).order_by(Ticket.id))
        ).all()
    cards_before = len([o for o in desk.slack.sent if o.kind == "slack_card"])
    await desk.inbox.accept([command(desk, f"incident detach {only[0]}")], {})
    await desk.settle()
    cards = [o for o in desk.slack.sent if o.kind == "slack_card"]
    assert len(cards) == cards_before + 1 and cards[-1].ticket_id == only[0]

    # A second incident (another keyword), merged into the first.
    for k in range(5):
        ev = desk.customer(f"We were hacked? fraud on my card ({k})", chat=str(400 + k))
        await desk.inbox.accept([ev], {})
    await desk.settle()
    async with desk.sessions() as s:
        other = (await s.scalars(select(Incident.id).where(Incident.id != inc))).one()
    await desk.inbox.accept([command(desk, f"incident merge {other} {inc}")], {})
    await desk.inbox.accept([command(desk, f"incident attach {only[0]} {inc}")], {})
    await desk.settle()
    async with desk.sessions() as s:
        assert (await s.get_one(Incident, other)).status == "merged"
        members = (await s.scalars(select(Ticket).where(Ticket.incident_id == inc))).all()
        assert len(members) == 6 + 5
        events = (
            await s.scalars(
                select(TicketEvent).where(
                    TicketEvent.kind == "incident", TicketEvent.actor == "U0ALICE"
                )
            )
        ).all()
        assert len(events) >= 1 + 5 * 2 + 1  # detach, merge (out + in), attach

    # Close without resolving: the tickets shown only on the incident get cards of their own.
    card_less = [t.id for t in members if t.incident_only]
    await desk.inbox.accept([incident_action(desk, inc, "incident_close")], {})
    await desk.settle()
    posted = {o.ticket_id for o in desk.slack.sent if o.kind == "slack_card"}
    assert set(card_less) <= posted
    async with desk.sessions() as s:
        assert (await s.get_one(Incident, inc)).status == "closed"
        assert set((await s.scalars(select(Ticket.status))).all()) <= {"new", "open"}
