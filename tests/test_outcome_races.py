"""Steps that read what a send's outcome is committing at that very moment (PostgreSQL).

WhatsApp can report on a message, and an agent can answer in a card's thread, before the desk
has recorded the send's outcome (the wamid, the card's ts). On PostgreSQL the step and the
outcome run side by side, and each statement of the step sees what committed before it began:
the outcome can commit between two reads of the step. These tests run the outcome's commit
exactly there, and assert what the customer and the agent would see. (SQLite has one writer at
a time: an outcome cannot commit inside a step there.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from bot.domain.events import AgentMessage, DeliveryStatus
from bot.domain.outbound import Delivery, Outbound
from storage.models import Message
from tests.test_desk_core import RecordingSender
from tests.test_message_types import WA, Desk, make_desk, text, wa

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]


class Gate:
    """Holds the platform's answer to the next send of ``kind`` until ``released`` is set;
    meanwhile its outbox row stays 'sending'. ``wamid`` is the id the answer will carry."""

    def __init__(
        self, sender: RecordingSender, monkeypatch: pytest.MonkeyPatch, kind: str = "text"
    ) -> None:
        self.sending = asyncio.Event()
        self.released = asyncio.Event()
        self.wamid = ""
        record = sender.send

        async def send(message: Outbound) -> Delivery:
            delivery = await record(message)
            if message.kind == kind and not self.sending.is_set():
                self.wamid = delivery.platform_message_id or ""
                self.sending.set()
                await self.released.wait()
            return delivery

        monkeypatch.setattr(sender, "send", send)


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Desk]:
    yield make_desk(engine)


SENDING_CHECK = ("SELECT outbox.id", "outbox.status =")  # a status's "anything sending?"
CARD_CHECK = ("SELECT outbox.id", "JOIN tickets")  # a thread reply's "a card in flight?"


def commit_outcome_before(
    engine: AsyncEngine, gate: Gate, outbox_run: asyncio.Task[int], check: tuple[str, ...]
) -> list[str]:
    """Before the step runs the statement that holds all of ``check``, let the platform
    answer the send and the outbox commit its outcome (the step's transaction stays open)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if seen or not all(part in statement for part in check):
            return
        seen.append(statement)
        gate.released.set()
        await_only(outbox_run)  # the step's greenlet waits; the loop runs the outbox meanwhile

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def reply_in_flight(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> tuple[Gate, Any]:
    """A WhatsApp customer's ticket and an agent's reply whose send is under way."""
    await desk.send(*wa(text("My parcel never came")))
    gate = Gate(desk.whatsapp, monkeypatch)
    await desk.h.inbox.accept([desk.h.agent(await desk.ticket(), "U0ALICE", "It ships today")], {})
    assert await desk.h.dispatcher.run_once() == 1
    outbox_run = asyncio.create_task(desk.h.outbox.run_once())
    await asyncio.wait_for(gate.sending.wait(), 10)
    return gate, outbox_run


def status(wamid: str, what: str, error: str | None = None) -> DeliveryStatus:
    return DeliveryStatus(
        channel="whatsapp",
        external_id=f"{wamid}:{what}",
        conversation=f"whatsapp:{WA}",
        platform_message_id=wamid,
        status=what,
        error=error,
    )


async def test_a_delivered_status_counts_when_the_send_is_recorded_mid_step(
    desk: Desk, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, outbox_run = await reply_in_flight(desk, monkeypatch)
    seen = commit_outcome_before(engine, gate, outbox_run, SENDING_CHECK)
    await desk.h.inbox.accept([status(gate.wamid, "delivered")], {})
    await desk.h.dispatcher.run_once()
    assert seen, "the step never asked whether anything was sending"
    async with desk.h.sessions() as s:
        reply = await s.scalar(select(Message).where(Message.text == "It ships today"))
    assert reply is not None and reply.platform_message_id == gate.wamid
    assert reply.delivery == "delivered"  # not left at 'sent': the status was not dropped


async def test_a_window_closed_failure_sends_the_template_when_recorded_mid_step(
    desk: Desk, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, outbox_run = await reply_in_flight(desk, monkeypatch)
    seen = commit_outcome_before(engine, gate, outbox_run, SENDING_CHECK)
    failed = status(gate.wamid, "failed", "131047 Re-engagement message")
    await desk.h.inbox.accept([failed], {})
    await desk.h.dispatcher.run_once()
    assert seen, "the step never asked whether anything was sending"
    await desk.h.settle()
    templates = [o.template.name for o in desk.whatsapp.sent if o.template is not None]
    assert templates == ["ticket_update"]  # the customer is told by template
    assert any("sent as template *ticket_update*" in t for t in desk.thread())
    async with desk.h.sessions() as s:
        reply = await s.scalar(select(Message).where(Message.text == "It ships today"))
    assert reply is not None
    assert reply.delivery == "held"  # the reply waits for the customer's next message
    assert not any("could not deliver a reply" in t for t in desk.thread())


async def test_a_thread_reply_reaches_the_customer_when_the_cards_ts_is_recorded_mid_step(
    desk: Desk, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent answers in a new card's thread before the desk recorded the card's ts: the
    step finds no ticket by its card, and the card's outcome commits before the step asks
    whether a card is in flight. The thread is the card's own (it was taken for a replaced
    card's, and the reply refused)."""
    gate = Gate(desk.h.slack, monkeypatch, kind="slack_card")
    await desk.h.inbox.accept([desk.h.customer("my parcel is late")], {})
    assert await desk.h.dispatcher.run_once() == 1
    outbox_run = asyncio.create_task(desk.h.outbox.run_once())
    await asyncio.wait_for(gate.sending.wait(), 10)
    seen = commit_outcome_before(engine, gate, outbox_run, CARD_CHECK)
    reply = AgentMessage(
        external_id="Ev-early",
        conversation=f"slack:C0SUPPORT:{gate.wamid}",
        slack_channel="C0SUPPORT",
        user_id="U0ALICE",
        ts="9999.5",
        thread_ts=gate.wamid,
        text="It ships today",
    )
    await desk.h.inbox.accept([reply], {})
    await desk.h.dispatcher.run_once()
    assert seen, "the step never asked whether a card was in flight"
    await desk.h.settle()
    assert [o.text for o in desk.h.telegram.sent][-1] == "It ships today"
