"""The ticket loop without HTTP: inbox → dispatcher → outbox, on SQLite and PostgreSQL.

The platforms are replaced by recording senders here; the end-to-end tests drive the same
path through the real clients and the stand-ins.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import wiring
from bot.base.clock import FrozenClock
from bot.delivery.dispatcher import DbInbox, Dispatcher
from bot.delivery.outbox import Metrics, OutboxSender, RateLimits
from bot.domain.classifier import Classifier, RulesClassifier
from bot.domain.events import AgentAction, AgentMessage, CustomerButton, CustomerMessage, Sender
from bot.domain.outbound import (
    Delivery,
    DeliveryError,
    Forbidden,
    Outbound,
    RetryAfter,
    Unavailable,
)
from bot.domain.rules import Rules, load_rules
from storage.db import session_factory
from storage.models import InboxRow, Message, OutboxRow, Ticket, TicketEvent
from storage.queues import inbox_claim

# The core loop on its own: the shipped texts and priorities, one team assigning by Claim only
# (routing and automatic assignment have their own tests in test_assignment.py).
RULES = load_rules(Path(__file__).parent.parent / "rules.yaml").model_copy(
    update={"teams": {}, "routing": ()}
)


@dataclass
class RecordingSender:
    sent: list[Outbound] = field(default_factory=list)
    failures: list[DeliveryError] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    async def send(self, message: Outbound) -> Delivery:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return Delivery(platform_message_id=f"{next(self.ids)}.0001")


@dataclass
class Harness:
    sessions: async_sessionmaker[AsyncSession]
    clock: FrozenClock
    inbox: DbInbox
    dispatcher: Dispatcher
    outbox: OutboxSender
    telegram: RecordingSender
    slack: RecordingSender
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def settle(self) -> None:
        """Run both loops until nothing is left that is due now."""
        for _ in range(50):
            if await self.dispatcher.run_once() + await self.outbox.run_once() == 0:
                return
        raise AssertionError("the desk did not settle")

    def customer(
        self, text: str, *, chat: str = "42", language: str | None = "en"
    ) -> CustomerMessage:
        n = next(self.seq)
        return CustomerMessage(
            channel="telegram",
            external_id=f"u{n}",
            conversation=f"telegram:{chat}",
            sender=Sender(external_id=chat, name="Ann", language=language),
            chat_id=chat,
            platform_message_id=str(n),
            text=text,
            received_at=self.clock.now(),
        )

    def agent(self, ticket: Ticket, user: str, text: str) -> AgentMessage:
        n = next(self.seq)
        assert ticket.slack_ts is not None
        return AgentMessage(
            external_id=f"Ev{n}",
            conversation=f"slack:C0SUPPORT:{ticket.slack_ts}",
            slack_channel="C0SUPPORT",
            user_id=user,
            ts=f"{n}.5",
            thread_ts=ticket.slack_ts,
            text=text,
        )

    def action(self, ticket: Ticket, action: str, user: str = "U0ALICE") -> AgentAction:
        n = next(self.seq)
        return AgentAction(
            external_id=f"action:{n}",
            conversation=f"slack:C0SUPPORT:{ticket.slack_ts}",
            action=action,
            ticket_id=ticket.id,
            user_id=user,
            user_name=user.removeprefix("U0").title(),  # the display name users.info gives
            slack_channel="C0SUPPORT",
            message_ts=ticket.slack_ts or "",
        )

    async def ticket(self) -> Ticket:
        async with self.sessions() as s:
            return (await s.scalars(select(Ticket).order_by(Ticket.id.desc()))).first()  # type: ignore[return-value]


def make_harness(
    engine: AsyncEngine, rules: Rules = RULES, classifier: Classifier | None = None
) -> Harness:
    sessions = session_factory(engine)
    clock = FrozenClock()
    inbox = DbInbox(sessions, clock)
    telegram, slack = RecordingSender(), RecordingSender()
    desks = wiring.desks(rules)
    outbox = wiring.outbox(
        sessions,
        {"telegram": telegram, "slack": slack},
        desks,
        clock,
        Metrics(CollectorRegistry()),
        limits=RateLimits.lifted(),
    )
    judge = classifier or RulesClassifier(rules.priority)
    dispatcher = wiring.dispatcher(sessions, desks, judge, clock, inbox)
    return Harness(sessions, clock, inbox, dispatcher, outbox, telegram, slack)


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


async def test_whole_loop(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("Our system down since 9, please help")], {})
    await desk.settle()
    (ack,) = desk.telegram.sent
    ticket = await desk.ticket()
    assert ack.destination == "42" and f"#{ticket.id}" in ack.text
    (card,) = desk.slack.sent
    assert card.kind == "slack_card" and card.destination == "C0SUPPORT"
    assert (
        ticket.priority == "urgent" and "keyword 'system down' → urgent" in ticket.priority_reasons
    )
    assert "keyword 'system down'" in str(card.blocks)
    assert ticket.slack_ts is not None  # recorded from the card's delivery

    # A follow-up joins the ticket and is posted in the card's thread.
    await desk.inbox.accept([desk.customer("It is the billing page")], {})
    await desk.settle()
    assert desk.slack.sent[-1].kind == "slack_thread"
    assert desk.slack.sent[-1].reply_to == ticket.slack_ts
    assert "It is the billing page" in desk.slack.sent[-1].text

    # An agent answers without claiming first: that claims it, and the customer gets the text.
    reply = desk.agent(ticket, "U0ALICE", "Looking into it now")
    await desk.inbox.accept([reply], {})
    await desk.settle()
    assert desk.telegram.sent[-1].text == "Looking into it now"
    reactions = [(o.emoji, o.reply_to) for o in desk.slack.sent if o.kind == "slack_reaction"]
    assert reactions == [("white_check_mark", reply.ts)]  # confirmed only once delivered
    ticket = await desk.ticket()
    assert ticket.assignee_id == "U0ALICE" and ticket.status == "pending"

    # Another agent's remark stays internal.
    before = len(desk.telegram.sent)
    await desk.inbox.accept([desk.agent(ticket, "U0BOB", "I think it's the CDN")], {})
    await desk.inbox.accept([desk.agent(ticket, "U0ALICE", "note: asked ops")], {})
    await desk.settle()
    assert len(desk.telegram.sent) == before
    assert [o.emoji for o in desk.slack.sent if o.kind == "slack_reaction"][-2:] == ["memo", "memo"]

    # Resolve: the customer is asked for a rating and can give one.
    await desk.inbox.accept([desk.action(ticket, "resolve")], {})
    await desk.settle()
    closing = desk.telegram.sent[-1]
    assert "resolved" in closing.text and [b.text for b in closing.buttons] == list("12345")
    await desk.inbox.accept(
        [
            CustomerButton(
                channel="telegram",
                external_id="cb1",
                conversation="telegram:42",
                sender=Sender(external_id="42", name="Ann"),
                chat_id="42",
                data=closing.buttons[4].data,
                callback_query_id="q1",
            )
        ],
        {},
    )
    await desk.settle()
    ticket = await desk.ticket()
    assert ticket.rating == 5 and ticket.status == "resolved"
    thanks, removal = desk.telegram.sent[-2:]
    assert "5/5" in thanks.text
    assert removal.kind == "edit_buttons" and removal.reply_to == "1002.0001"  # the prompt's id
    async with desk.sessions() as s:
        kinds = (await s.scalars(select(TicketEvent.kind).order_by(TicketEvent.id))).all()
    assert kinds == [
        "created",
        "priority",
        "team",
        "assignee",
        "status",
        "status",
        "status",
        "rating",
    ]


async def test_duplicates_give_one_message_and_one_card(desk: Harness) -> None:
    msg = desk.customer("hello")
    assert await desk.inbox.accept([msg], {}) == 1
    assert await desk.inbox.accept([msg], {}) == 0
    await desk.settle()
    assert len(desk.slack.sent) == 1 and len(desk.telegram.sent) == 1
    async with desk.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 1


async def test_a_polls_updates_are_kept_each_with_its_payload_in_one_transaction(
    desk: Harness, engine: AsyncEngine
) -> None:
    """Telegram's poller hands the inbox a poll's updates at once (one commit, not one an
    update): each row keeps its own payload, a duplicate among them is dropped, and every
    new one becomes its customer's ticket."""
    one, two = desk.customer("my parcel is late", chat="71"), desk.customer("refund?", chat="72")
    begun: list[object] = []

    def began(conn: object) -> None:
        begun.append(conn)

    event.listen(engine.sync_engine, "begin", began)
    try:
        added = await desk.inbox.accept_each(
            [(one, {"update_id": 1}), (two, {"update_id": 2}), (one, {"update_id": 1})]
        )
        await desk.inbox.turn()  # SQLite: moved from the intake spool into the inbox
    finally:
        event.remove(engine.sync_engine, "begin", began)
    assert added == 2 and len(begun) == 1
    async with desk.sessions() as s:
        rows = (await s.scalars(select(InboxRow).order_by(InboxRow.id))).all()
    assert [(r.external_id, r.raw) for r in rows] == [
        (one.external_id, {"update_id": 1}),
        (two.external_id, {"update_id": 2}),
    ]
    await desk.settle()
    assert {m.destination for m in desk.telegram.sent} == {"71", "72"}  # each got its answer


async def test_reopen_within_window_and_new_ticket_after(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("first problem")], {})
    await desk.settle()
    first = await desk.ticket()
    await desk.inbox.accept([desk.action(first, "resolve")], {})
    await desk.settle()
    desk.clock.advance(hours=1)
    await desk.inbox.accept([desk.customer("still broken")], {})
    await desk.settle()
    again = await desk.ticket()
    assert again.id == first.id and again.status == "open"
    assert "open again" in desk.telegram.sent[-1].text
    await desk.inbox.accept([desk.action(again, "resolve")], {})
    await desk.settle()
    desk.clock.advance(hours=RULES.tickets.reopen_window_hours + 1)
    await desk.inbox.accept([desk.customer("another thing")], {})
    await desk.settle()
    newer = await desk.ticket()
    assert newer.id != first.id and newer.status == "new"


async def test_chinese_customer_gets_chinese_ack(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("你好", language="zh-hans")], {})
    await desk.settle()
    assert desk.telegram.sent[0].text.startswith("我们已收到您的消息")


async def test_crash_after_claim_is_processed_once_after_lease(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.inbox.turn()
    async with desk.sessions.begin() as s:  # a worker claims it, then dies
        claimed = await inbox_claim(s, now=desk.clock.now(), lease=timedelta(seconds=60), limit=5)
        assert len(claimed) == 1
    assert await desk.dispatcher.run_once() == 0  # leased: nobody else takes it
    desk.clock.advance(seconds=61)
    await desk.settle()
    assert len(desk.slack.sent) == 1 and len(desk.telegram.sent) == 1
    async with desk.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Message)) == 1
        assert (await s.scalars(select(InboxRow.status))).all() == ["done"]


async def test_retry_after_is_honoured_then_delivered_once(desk: Harness) -> None:
    desk.telegram.failures.append(RetryAfter(7, "Too Many Requests: retry after 7"))
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.settle()
    assert desk.telegram.sent == []  # not due yet
    desk.clock.advance(seconds=7)
    await desk.settle()
    assert len(desk.telegram.sent) == 1


async def test_unavailable_backs_off_and_retries(desk: Harness) -> None:
    desk.slack.failures.append(Unavailable("503"))
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.settle()
    assert desk.slack.sent == []
    desk.clock.advance(seconds=2)
    await desk.settle()
    assert [o.kind for o in desk.slack.sent] == ["slack_card"]


async def test_blocked_customer_is_shown_on_the_thread_and_not_retried(desk: Harness) -> None:
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.settle()
    ticket = await desk.ticket()
    desk.telegram.failures.append(Forbidden("Forbidden: bot was blocked by the user"))
    await desk.inbox.accept([desk.agent(ticket, "U0ALICE", "Hi Ann")], {})
    await desk.settle()
    desk.clock.advance(hours=1)
    await desk.settle()
    notes = [o.text for o in desk.slack.sent if o.kind == "slack_thread"]
    assert any("Not delivered" in n and "blocked the bot" in n for n in notes)
    assert [o.emoji for o in desk.slack.sent if o.kind == "slack_reaction"] == ["x"]
    async with desk.sessions() as s:
        row = (await s.scalars(select(OutboxRow).where(OutboxRow.channel == "telegram"))).all()
        assert [r.status for r in row] == ["sent", "failed"]
        assert row[1].attempts == 1
        msg = await s.scalar(select(Message).where(Message.direction == "out"))
        assert msg is not None and msg.delivery == "failed"


async def _waits_for_the_card(desk: Harness, event: AgentMessage | AgentAction) -> None:
    """``event`` about a card not recorded yet waits (CardTooEarly); then the card goes out
    and the event is taken again."""
    await desk.inbox.accept([event], {})
    await desk.settle()
    async with desk.sessions() as s:
        row = await s.scalar(select(InboxRow).where(InboxRow.external_id == event.external_id))
        assert row is not None and row.status == "processing"
        assert (row.error or "").startswith("CardTooEarly")
    for _ in range(5):
        desk.clock.advance(seconds=2)
        await desk.settle()


async def test_reply_in_a_card_thread_before_the_card_is_recorded_waits_and_is_relayed(
    desk: Harness,
) -> None:
    """Slack can deliver an agent's reply in a card's thread before the transaction that
    records the card's ts has committed (or while a dead process's post is being taken over).
    The reply waits for the card instead of being dropped as chatter."""
    desk.slack.failures.append(Unavailable("503"))  # the card's post is held back
    await desk.inbox.accept([desk.customer("hello, my order is late")], {})
    await desk.settle()
    ticket = await desk.ticket()
    assert ticket.slack_ts is None and desk.slack.sent == []
    early = AgentMessage(
        external_id="EvEarly",
        conversation="slack:C0SUPPORT:1000.0001",
        slack_channel="C0SUPPORT",
        user_id="U0ALICE",
        ts="1000.0002",
        thread_ts="1000.0001",  # the ts Slack gives the card once it is posted
        text="Sorry Ann, sending a new one today",
    )
    await _waits_for_the_card(desk, early)
    ticket = await desk.ticket()
    assert ticket.slack_ts == "1000.0001"
    assert desk.telegram.sent[-1].text == "Sorry Ann, sending a new one today"
    assert ticket.assignee_id == "U0ALICE"


async def test_a_cards_button_before_the_card_is_recorded_waits_for_it(
    engine: AsyncEngine,
) -> None:
    """A click on a card Slack has posted, before the desk has recorded the card's ts (the
    e2e transfer test's agent clicked within milliseconds): the transfer waits for the card,
    then says so in the old card's thread."""
    desk = make_harness(engine, load_rules(Path(__file__).parent.parent / "rules.yaml"))
    desk.slack.failures.append(Unavailable("503"))  # the card's post is held back
    await desk.inbox.accept([desk.customer("hello, my order is late")], {})
    await desk.settle()
    ticket = await desk.ticket()
    assert ticket.slack_ts is None and desk.slack.sent == []
    click = AgentAction(
        external_id="action:early",
        conversation="slack:C0SUPPORT:1000.0001",
        action="transfer",
        team="billing",
        ticket_id=ticket.id,
        user_id="U0ALICE",
        user_name="Alice",
        slack_channel="C0SUPPORT",
        message_ts="1000.0001",  # the ts Slack gives the card once it is posted
    )
    await _waits_for_the_card(desk, click)
    ticket = await desk.ticket()
    assert ticket.team == "billing"
    old_thread = [o.text for o in desk.slack.sent if o.reply_to == "1000.0001"]
    assert any("transferred this ticket to team *billing*" in t for t in old_thread)


async def test_a_thread_that_is_no_card_is_not_waited_for(desk: Harness) -> None:
    chatter = AgentMessage(
        external_id="EvChat",
        conversation="slack:C0SUPPORT:77.0001",
        slack_channel="C0SUPPORT",
        user_id="U0ALICE",
        ts="77.0002",
        thread_ts="77.0001",
        text="lunch?",
    )
    await desk.inbox.accept([chatter], {})
    await desk.settle()
    async with desk.sessions() as s:
        row = await s.scalar(select(InboxRow).where(InboxRow.external_id == "EvChat"))
        assert row is not None and row.status == "done"
