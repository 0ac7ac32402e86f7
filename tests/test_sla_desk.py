"""The SLA engine inside the desk: what the desk counts as a reply, and what the card shows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.domain.outbound import Forbidden
from storage.models import SlaFiring, SlaTimer, Ticket

from .test_desk_core import RULES, Harness, make_harness

# The shipped rules carry the sandbox's SLA: a normal ticket's first response is due in 1 h.


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    assert RULES.sla is not None
    yield make_harness(engine, RULES)


async def ticket(desk: Harness) -> Ticket:
    async with desk.sessions() as s:
        t = await s.scalar(select(Ticket).order_by(Ticket.id.desc()))
        assert t is not None
        return t


async def test_acks_and_notes_do_not_answer_the_customer_a_delivered_reply_does(
    desk: Harness,
) -> None:
    await desk.inbox.accept([desk.customer("my parcel is late")], {})
    await desk.settle()
    t = await ticket(desk)
    assert t.sla is not None and t.sla["first_response"]["state"] == "running"
    assert desk.telegram.sent  # the acknowledgement went out: it is not a reply
    card = next(m for m in desk.slack.sent if m.kind == "slack_card")
    assert "SLA: First response due <!date^" in str(card.blocks)
    await desk.inbox.accept([desk.agent(t, "U0ALICE", "note: checking with DHL")], {})
    await desk.settle()
    assert (await ticket(desk)).sla["first_response"]["state"] == "running"  # type: ignore[index]
    await desk.inbox.accept([desk.agent(t, "U0ALICE", "It ships today.")], {})
    await desk.settle()
    t = await ticket(desk)
    assert t.sla is not None and t.sla["first_response"]["state"] == "met"
    async with desk.sessions() as s:
        met = (await s.scalars(select(SlaFiring.what).where(SlaFiring.ticket_id == t.id))).all()
        assert list(met) == ["met"]
        assert await s.get(SlaTimer, t.id) is not None  # resolution still runs


async def test_a_reply_the_customer_never_got_is_not_a_first_response(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("hello?")], {})
    await desk.settle()
    t = await ticket(desk)
    desk.telegram.failures.append(Forbidden("Forbidden: bot was blocked by the user"))
    await desk.inbox.accept([desk.agent(t, "U0ALICE", "Hi! How can I help?")], {})
    await desk.settle()
    assert (await ticket(desk)).sla["first_response"]["state"] == "running"  # type: ignore[index]
    desk.clock.advance(minutes=61)
    from bot.sla.timers import SlaScheduler

    await SlaScheduler(desk.sessions, wiring.desks(RULES), desk.clock).run_once()
    await desk.settle()
    thread = [m.text for m in desk.slack.sent if m.kind == "slack_thread"]
    assert sum("🚨 First response target breached" in x for x in thread) == 1
    assert sum("⏰ First response due" in x for x in thread) == 1


async def test_a_resolution_met_while_waiting_shows_when_it_was_met_and_its_due_time(
    desk: Harness,
) -> None:
    """Resolved while waiting on the customer (its resolution clock paused): the card says
    when the clock was met and the due time it was measured against, not the resolve time as
    its due time."""
    await desk.inbox.accept([desk.customer("my parcel is late")], {})
    await desk.settle()
    t = await ticket(desk)
    desk.clock.advance(minutes=10)
    await desk.inbox.accept([desk.agent(t, "U0ALICE", "It ships today.")], {})  # pending: paused
    await desk.settle()
    desk.clock.advance(minutes=50)
    resolved_at = desk.clock.now()
    await desk.inbox.accept([desk.action(t, "resolve")], {})
    await desk.settle()
    t = await ticket(desk)
    assert t.sla is not None
    resolution = t.sla["resolution"]
    assert resolution["state"] == "met"
    assert resolution["met_at"] == resolved_at.isoformat()
    # A normal ticket's resolution target is a day, of which the clock ran 10 minutes.
    assert resolution["due"] != resolved_at.isoformat()
    card = [m for m in desk.slack.sent if m.kind == "slack_card_update"][-1]
    stamp = int(resolved_at.timestamp())
    assert f"Resolution met <!date^{stamp}^" in str(card.blocks)
    assert "(due <!date^" in str(card.blocks)


async def test_a_new_tickets_clocks_are_worked_out_once_and_shown(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first message sets the clocks before the card and redoes them after the step: the
    second time the history is the same, so the engine does not run again (it was a tenth of
    a new ticket's work), and the card, the ticket and the timer still hold the clocks."""
    from bot.domain.sla import replay as real
    from bot.sla import keeper

    runs: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        runs.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keeper, "replay", counted)
    await desk.inbox.accept([desk.customer("my parcel is late")], {})
    await desk.settle()
    t = await ticket(desk)
    assert len(runs) == 1
    assert t.sla is not None and t.sla["first_response"]["state"] == "running"
    card = next(m for m in desk.slack.sent if m.kind == "slack_card")
    assert "SLA: First response due <!date^" in str(card.blocks)
    async with desk.sessions() as s:
        timer = await s.get(SlaTimer, t.id)
        assert timer is not None and timer.lease_owner is None
    # A later message changes the history: the clocks are worked out again, once.
    await desk.inbox.accept([desk.customer("any news?")], {})
    await desk.settle()
    assert len(runs) == 2
