"""Incidents in the desk (inbox → dispatcher → outbox, recording senders), SQLite and PostgreSQL:
a surge of alike new tickets becomes one incident card; later ones are attached to it."""

from __future__ import annotations

import json

from sqlalchemy import select

from storage.models import Incident, Ticket, TicketEvent

from .test_desk_core import Harness, desk  # noqa: F401  (the fixture)

OUTAGE = "The app is down for me, outage since this morning"


async def burst(desk: Harness, texts: list[str], start: int = 100) -> None:
    for n, text in enumerate(texts):
        await desk.inbox.accept([desk.customer(text, chat=str(start + n))], {})
    await desk.settle()


async def test_a_surge_becomes_one_incident_card_and_later_tickets_join_it(desk: Harness) -> None:  # noqa: F811
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
    assert "Incident · 5 customers since" in card.text and "outage since this morning" in card.text
    assert "Reply to all affected" in json.dumps(card.blocks)
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
    lists = [o for o in desk.slack.sent if o.kind == "slack_thread" and o.incident_bucket]
    assert 1 <= len(lists) <= 3 and sum(o.text.count("• #") for o in lists) == 15
    assert all(o.reply_to == card_ts(desk) for o in lists)
    for n in range(10):
        assert "We know about this problem" in acks_of(desk)[str(200 + n)]
    async with desk.sessions() as s:
        (inc,) = (await s.scalars(select(Incident))).all()
        attached = (await s.scalars(select(Ticket).where(Ticket.incident_id == inc.id))).all()
        assert len(attached) == 15 and sum(t.incident_only for t in attached) == 11
        events = (
            await s.scalars(select(TicketEvent).where(TicketEvent.kind == "incident"))
        ).all()
        assert len(events) == 15 and {e.actor for e in events} == {"desk"}

    # A follow-up of an attached customer goes into the incident's thread, labelled.
    await desk.inbox.accept([desk.customer("still down", chat="205")], {})
    await desk.settle()
    follow = desk.slack.sent[-1]
    assert follow.kind == "slack_thread" and follow.reply_to == card_ts(desk)
    assert "still down" in follow.text and follow.text.startswith("#")


def card_ts(desk: Harness) -> str:
    n = next(
        i for i, o in enumerate(desk.slack.sent) if o.kind == "slack_card" and o.incident_id
    )
    return f"{1000 + n}.0001"


def acks_of(desk: Harness) -> dict[str, str]:
    return {o.destination: o.text for o in desk.telegram.sent}
