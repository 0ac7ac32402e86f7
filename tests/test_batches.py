"""Batched writes: a failing event or outcome is rolled back alone, and on SQLite a burst costs
one commit per batch, not one per message; SQLite statements never freeze the event loop while
another connection holds the lock."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.automations.journal import take
from bot.core.tickets import Desk
from bot.delivery import dispatcher, outbox
from bot.domain.classifier import RulesClassifier
from storage import intake, trail
from storage.db import create_engine, migrate
from storage.models import AutomationFiring, InboxRow, Message, OutboxRow, Ticket, TicketEvent
from storage.queues import inbox_add, inbox_claim, outbox_claim
from storage.statements import Statement
from tests.test_desk_core import RULES, Harness, make_harness


@contextmanager
def commits(engine: AsyncEngine) -> Iterator[list[int]]:
    """Counts the transactions committed on ``engine`` while the block runs."""
    seen: list[int] = []

    def on_commit(_conn: Any) -> None:
        seen.append(1)

    event.listen(engine.sync_engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "commit", on_commit)


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


async def _write(desk: Harness, texts: list[str], first: int = 0) -> None:
    events = [desk.customer(text, chat=str(100 + i)) for i, text in enumerate(texts, first)]
    assert await desk.inbox.accept(events, {}) == len(texts)
    await desk.inbox.turn()  # on SQLite: moved from the intake spool into the inbox


async def test_a_failing_event_in_a_batch_is_rolled_back_alone(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Desk.customer_message

    async def faulty(self: Desk, ev: Any, *args: Any, **kwargs: Any) -> Ticket:
        if "boom" in ev.text:
            await real(self, ev, *args, **kwargs)  # it wrote a ticket before it failed
            raise RuntimeError("boom")
        return await real(self, ev, *args, **kwargs)

    monkeypatch.setattr(Desk, "customer_message", faulty)
    await _write(desk, ["my parcel is late", "boom goes the desk", "refund please"])
    assert await desk.dispatcher.run_once() == 3

    async with desk.sessions() as s:
        subjects = sorted((await s.scalars(select(Ticket.subject))).all())
        rows = {r.payload["text"]: r for r in await s.scalars(select(InboxRow))}
        said = sorted((await s.scalars(select(Message.text))).all())
    # The other two became tickets; nothing of the failed one's work stands.
    assert subjects == ["my parcel is late", "refund please"]
    assert said == ["my parcel is late", "refund please"]
    assert rows["my parcel is late"].status == "done"
    assert rows["refund please"].status == "done"
    failed = rows["boom goes the desk"]
    assert (failed.status, failed.attempts, failed.error) == ("processing", 1, "RuntimeError: boom")

    # Once the fault is gone it is retried after its pause, and becomes a ticket too.
    monkeypatch.setattr(Desk, "customer_message", real)
    desk.clock.advance(seconds=1)
    await desk.settle()
    async with desk.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 3
        assert await s.scalar(select(InboxRow.status).where(InboxRow.id == failed.id)) == "done"
    assert len([m for m in desk.slack.sent if m.kind == "slack_card"]) == 3


async def test_an_event_failing_after_its_bulk_outbox_insert_is_rolled_back_alone(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A step's outbox rows are one multi-row INSERT (storage/queues.py, on SQLite): an event
    # that fails after it has written them takes all of them back with it, and nobody else's.
    real = dispatcher.Dispatcher._queue

    async def faulty(self: Any, session: Any, desk_: Desk, inbox_id: int) -> None:
        await real(self, session, desk_, inbox_id)
        if any("boom" in (o.text or "") for o, _ in desk_.fx.items):
            raise RuntimeError("boom after the outbox rows")

    monkeypatch.setattr(dispatcher.Dispatcher, "_queue", faulty)
    await _write(desk, ["my parcel is late", "boom goes the desk", "refund please"])
    assert await desk.dispatcher.run_once() == 3

    async def queued() -> list[tuple[str, str]]:
        async with desk.sessions() as s:
            rows = (await s.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
            return [(r.payload["kind"], r.idempotency_key) for r in rows]

    first = await queued()
    # Two tickets: each an acknowledgement and a card, queued in that order; nothing of "boom".
    assert [kind for kind, _ in first] == ["text", "slack_card", "text", "slack_card"]
    async with desk.sessions() as s:
        subjects = sorted((await s.scalars(select(Ticket.subject))).all())
    assert subjects == ["my parcel is late", "refund please"]

    monkeypatch.setattr(dispatcher.Dispatcher, "_queue", real)
    desk.clock.advance(seconds=1)
    await desk.settle()
    again = await queued()
    assert again[:4] == first  # what stood stays, once
    assert [kind for kind, _ in again[4:]] == ["text", "slack_card"]
    assert len({key for _, key in again}) == 6
    assert len([m for m in desk.slack.sent if m.kind == "slack_card"]) == 3


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_burst_costs_one_commit_per_batch_on_sqlite(
    desk: Harness, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transaction takes events for BATCH_BUDGET (10 ms); here, on a slow machine, for long
    # enough to take them all, then for no time at all (one event each).
    monkeypatch.setattr(dispatcher, "BATCH_BUDGET", 60.0)
    await _write(desk, [f"order {i} has not arrived" for i in range(12)])
    with commits(engine) as dispatched:
        assert await desk.dispatcher.run_once() == 12
    assert len(dispatched) == 2  # the claim, then the twelve events in one transaction

    monkeypatch.setattr(dispatcher, "BATCH_BUDGET", 0.0)
    await _write(desk, [f"order {i} is still missing" for i in range(12, 15)], first=12)
    with commits(engine) as one_by_one:
        assert await desk.dispatcher.run_once() == 3
    assert len(one_by_one) == 1 + 3
    async with desk.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 15

    with commits(engine) as delivered:
        await desk.outbox.run_once()
    async with desk.sessions() as s:
        statuses = (await s.scalars(select(OutboxRow.status))).all()
    assert len(statuses) == 30 and set(statuses) == {"sent"}  # an ack and a card each
    # The claim, then the 30 outcomes recorded together rather than one commit each.
    assert len(delivered) <= 3
    assert len(desk.telegram.sent) == 15


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_webhook_during_the_dispatchers_transaction_is_answered_at_once(
    desk: Harness, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a webhook's (or a poll's) events are made durable in the intake spool and the
    platform answered while the dispatcher's transaction holds the one writer; the dispatcher
    then commits after the event it is on, whatever its budget left, so the events are moved
    into the inbox after one event's step, not after the batch's."""
    monkeypatch.setattr(dispatcher, "BATCH_BUDGET", 60.0)  # the budget alone would take all 12
    await _write(desk, [f"order {i} has not arrived" for i in range(12)])
    step = desk.dispatcher._step
    arriving: list[asyncio.Task[int]] = []
    commits_when_answered: list[int] = []

    async def step_while_a_webhook_arrives(*args: Any) -> Desk:
        if not arriving:

            async def webhook() -> int:
                added = await desk.inbox.accept([desk.customer("hello?", chat="999")], {})
                commits_when_answered.append(len(dispatched))
                return added

            # Arrives now: it runs only when the dispatcher lets the loop go on, as a
            # webhook's request would be read.
            arriving.append(asyncio.create_task(webhook()))
        return await step(*args)

    monkeypatch.setattr(desk.dispatcher, "_step", step_while_a_webhook_arrives)
    with commits(engine) as dispatched:
        assert await desk.dispatcher.run_once() == 12
    assert await arriving[0] == 1
    assert commits_when_answered == [1]  # answered with only the claim committed
    assert len(dispatched) == 4  # the claim, the first event, the move, the other eleven
    async with desk.sessions() as s:
        waiting = (await s.scalars(select(InboxRow.status).where(InboxRow.id == 13))).all()
    assert waiting == ["pending"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_webhooks_while_the_writer_is_busy_are_answered_and_moved_in_one_commit(
    desk: Harness, engine: AsyncEngine
) -> None:
    """Writes that arrive while the one writer is busy are each answered at once with how many
    of its events were new (a redelivery among them: 0), and go into the inbox in arrival
    order in one transaction once the writer is free."""
    first, second, third = (
        desk.customer(t, chat=c) for t, c in (("a", "1"), ("b", "2"), ("c", "3"))
    )
    with commits(engine) as committed:
        async with desk.sessions.begin() as held:  # busy, as during the dispatcher's step
            await held.execute(select(1))
            answers = [
                await desk.inbox.accept([ev], {"delivery": n})
                for n, ev in enumerate((first, second, third, first))
            ]
            assert answers == [1, 1, 1, 0]
            assert desk.inbox.waiting()
        await desk.inbox.turn()
    assert len(committed) == 2  # the busy transaction, then the three rows together
    assert not desk.inbox.waiting()
    async with desk.sessions() as s:
        kept = (
            await s.execute(select(InboxRow.external_id, InboxRow.raw).order_by(InboxRow.id))
        ).all()
    assert [tuple(r) for r in kept] == [
        (first.external_id, {"delivery": 0}),
        (second.external_id, {"delivery": 1}),
        (third.external_id, {"delivery": 2}),
    ]
    # In the inbox now: a redelivery is still told it is one, and nothing is left to move.
    assert await desk.inbox.accept([second], {"delivery": 4}) == 0
    assert desk.inbox._spool is not None and desk.inbox._spool.waiting() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_move_the_database_refuses_keeps_the_events_until_it_works(
    desk: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The events were answered (the platform will not send them again): while the database
    refuses them they stay in the spool, the loops are not held back meanwhile, and they go
    into the inbox once it takes them."""
    refusals: list[int] = []

    async def refusing(session: Any, rows: Any) -> int:
        if len(refusals) < 2:
            refusals.append(len(rows))
            raise RuntimeError("the database refused")
        return await inbox_add(session, rows)

    monkeypatch.setattr(dispatcher, "inbox_add", refusing)
    good = desk.customer("my parcel is late", chat="1")
    async with desk.sessions.begin() as held:  # busy: the webhook is spooled
        await held.execute(select(1))
        assert await desk.inbox.accept([good], {}) == 1
    await asyncio.sleep(0.05)
    assert refusals == [1]
    await asyncio.wait_for(desk.inbox.turn(), 0.05)  # the dispatcher may try (and say so)
    assert desk.inbox._spool is not None and desk.inbox._spool.waiting() == 1
    for _ in range(100):
        if not desk.inbox._spool.waiting():
            break
        await asyncio.sleep(0.05)
    async with desk.sessions() as s:
        assert (await s.scalars(select(InboxRow.external_id))).all() == [good.external_id]
    said = [r.getMessage().split()[0] for r in caplog.records]
    assert said.count("inbox.move_failed") == 1 and "inbox.move_recovered" in said


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_what_a_stopped_desk_left_in_the_spool_is_moved_at_the_next_start(
    desk: Harness, engine: AsyncEngine
) -> None:
    """A desk stopped (or killed) between answering a platform and moving its events: the next
    start moves them; one whose inbox copy was committed before the stop (the spool not yet
    told) is not written twice."""
    moved, answered = desk.customer("first", chat="1"), desk.customer("second", chat="2")
    assert await desk.inbox.accept([moved], {}) == 1
    await desk.inbox.turn()
    spool = desk.inbox._spool
    assert spool is not None
    rows = [
        {
            "channel": ev.channel,
            "external_id": ev.external_id,
            "conversation": ev.conversation,
            "kind": ev.kind,
            "payload": {"left": "in the spool"},
            "raw": {},
            "status": "ignored",
            "error": None,
            "attempts": 0,
            "received_at": desk.clock.now(),
            "processed_at": desk.clock.now(),
        }
        for ev in (moved, answered)
    ]
    with spool._spool.begin() as conn:  # as a stop between the two writes leaves them
        conn.execute(
            intake.SPOOL.insert(),
            [
                {
                    "channel": r["channel"],
                    "external_id": r["external_id"],
                    "row": intake._to_json(r),
                }
                for r in rows
            ],
        )
    assert spool.waiting() == 2
    await desk.inbox.close()

    again = dispatcher.DbInbox(desk.sessions, desk.clock)
    again.start()
    await again.turn()
    async with desk.sessions() as s:
        kept = (await s.execute(select(InboxRow.external_id, InboxRow.status))).all()
    assert sorted(tuple(r) for r in kept) == [
        (moved.external_id, "pending"),
        (answered.external_id, "ignored"),
    ]
    assert again._spool is not None and again._spool.waiting() == 0
    await again.close()


async def _outbox_once_the_others_are_sent(desk: Any) -> dict[int, OutboxRow]:
    """The outbox's rows, once at most one is still sending: the other deliveries go on while
    one failure is raised."""
    for _ in range(100):
        async with desk.sessions() as s:
            rows = {r.id: r for r in await s.scalars(select(OutboxRow))}
        if sum(r.status == "sending" for r in rows.values()) <= 1:
            break
        await asyncio.sleep(0.02)
    return rows


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_on_postgresql_each_event_commits_alone(desk: Harness, engine: AsyncEngine) -> None:
    await _write(desk, [f"order {i} has not arrived" for i in range(4)])
    with commits(engine) as dispatched:
        assert await desk.dispatcher.run_once() == 4
    assert len(dispatched) == 1 + 4  # the claim, then one per event: no lock held for a batch


async def test_a_recorded_outcome_that_fails_leaves_the_others_recorded(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _write(desk, ["first", "second"])
    await desk.dispatcher.run_once()
    real = desk.outbox._record_one
    broken: list[int] = []

    async def faulty(session: Any, item: Any) -> Any:
        if item.out.channel == "telegram" and not broken:
            broken.append(item.row_id)
            raise RuntimeError("a bug while recording")
        return await real(session, item)

    monkeypatch.setattr(desk.outbox, "_record_one", faulty)
    with pytest.raises(RuntimeError, match="a bug while recording"):
        await desk.outbox.run_once()
    rows = await _outbox_once_the_others_are_sent(desk)
    assert broken and rows[broken[0]].status == "sending"  # left for its lease, not lost
    assert {r.status for i, r in rows.items() if i != broken[0]} == {"sent"}


async def test_sqlite_waits_for_another_writer_without_freezing_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def release() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    ticker = asyncio.create_task(tick())
    releaser = asyncio.create_task(release())
    try:
        t0 = time.perf_counter()
        async with engine.begin() as conn:  # BEGIN IMMEDIATE: refused, tried again
            await conn.execute(select(func.count()).select_from(InboxRow))
        waited = time.perf_counter() - t0
    finally:
        ticker.cancel()
        await releaser
        other.close()
        await engine.dispose()
    assert waited >= 0.25  # it did wait for the other writer…
    assert ticks >= 20  # …while the loop went on (a lock waited for inside SQLite would not)


async def test_the_outbox_wakes_when_a_row_it_put_off_is_due(desk: Harness) -> None:
    """A row put off for a rate limit is tried again when it is due, not at the next poll
    (half a second by default): a channel paced at one post a second then gets one a second."""
    await _write(desk, ["my parcel is late"])
    await desk.dispatcher.run_once()
    async with desk.sessions.begin() as s:
        [row] = (await s.scalars(select(OutboxRow).where(OutboxRow.channel == "telegram"))).all()
        row.status, row.attempts = "sending", 1
    assert desk.outbox._pause() == 0.5  # nothing put off: the idle poll
    await desk.outbox._reschedule(row.id, 1, 0.2, None, count_attempt=False)
    assert 0.1 < desk.outbox._pause() <= 0.2
    async with desk.sessions() as s:
        again = await s.get_one(OutboxRow, row.id)
    assert (again.status, again.attempts) == ("pending", 0)  # a pause is not an attempt
    await asyncio.sleep(0.21)
    assert desk.outbox._pause() == 0.5  # it came due: back to polling


# A new ticket's trail with the rule below: its own three events, the firing, the tag.
KINDS = ["created", "priority", "team", "automation", "tags"]
TAG_ON_CREATE = """
- id: tag-new
  on: [ticket_created]
  do: [{add_tag: fresh}]
"""


@pytest.mark.parametrize("where", ["in-its-route", "after-its-outbox-rows"])
@pytest.mark.parametrize("first", [False, True], ids=["among-others", "first-of-its-batch"])
async def test_a_failing_event_among_bulk_writes_is_rolled_back_alone_and_retried(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, first: bool, where: str
) -> None:
    # A step's ticket events are one multi-row INSERT (storage/trail.py), its outbox rows
    # another, and the batch's inbox rows are marked done in one statement at the end of the
    # transaction. An event that fails after all of its bulk writes (and after an automation
    # acted on them) takes them all back with it, and nobody else's; the first event of a
    # transaction runs without a savepoint, so that case is checked too.
    from tests.test_automations_desk import rules_with

    desk = make_harness(engine, rules_with(TAG_ON_CREATE))
    monkeypatch.setattr(dispatcher, "BATCH_BUDGET", 60.0)  # the whole batch in one transaction
    real = dispatcher.Dispatcher._queue
    failing = {"on": True}

    async def faulty(self: Any, session: Any, desk_: Desk, inbox_id: int) -> None:
        await real(self, session, desk_, inbox_id)
        if failing["on"] and any("boom" in (o.text or "") for o, _ in desk_.fx.items):
            # Its events, its automation's tag and its outbox rows are written by now.
            written = await session.scalar(select(func.count()).select_from(TicketEvent))
            assert written
            raise RuntimeError("boom after the bulk writes")

    real_message = Desk.customer_message

    async def faulty_route(self: Desk, ev: Any, *args: Any, **kwargs: Any) -> Ticket:
        ticket = await real_message(self, ev, *args, **kwargs)
        if failing["on"] and "boom" in ev.text:
            # Its ticket, message and events are written (a statement ran after them).
            assert await self.s.scalar(select(func.count()).select_from(TicketEvent))
            raise RuntimeError("boom after the bulk writes")
        return ticket

    if where == "in-its-route":  # before the automations and the outbox rows
        monkeypatch.setattr(Desk, "customer_message", faulty_route)
    else:
        monkeypatch.setattr(dispatcher.Dispatcher, "_queue", faulty)
    texts = ["my parcel is late", "boom goes the desk", "refund please", "where is my order"]
    if first:
        texts = [texts[1], texts[0], *texts[2:]]
    await _write(desk, texts)
    assert await desk.dispatcher.run_once() == 4

    async def trail() -> dict[str, list[tuple[str, str | None]]]:
        async with desk.sessions() as s:
            rows = (
                await s.execute(
                    select(Ticket.subject, TicketEvent.kind, TicketEvent.to_value)
                    .join(Ticket, Ticket.id == TicketEvent.ticket_id)
                    .order_by(TicketEvent.id)
                )
            ).all()
        found: dict[str, list[tuple[str, str | None]]] = {}
        for subject, kind, value in rows:
            found.setdefault(subject, []).append((kind, value))
        return found

    # Three tickets, each with its own events once, the automation's tag once; nothing of "boom".
    first_trail = await trail()
    assert sorted(first_trail) == sorted(t for t in texts if "boom" not in t)
    for subject, events in first_trail.items():
        assert [k for k, _ in events] == KINDS, subject
        assert events[-1] == ("tags", '["fresh"]')
    async with desk.sessions() as s:
        rows = {r.payload["text"]: r for r in await s.scalars(select(InboxRow))}
        fired = (await s.scalars(select(AutomationFiring.ticket_id))).all()
    assert len(fired) == 3
    failed = rows["boom goes the desk"]
    assert (failed.status, failed.attempts) == ("processing", 1)
    assert failed.error == "RuntimeError: boom after the bulk writes"
    assert {rows[t].status for t in texts if "boom" not in t} == {"done"}

    # Retried once the fault is gone: a ticket of its own, its events, tag, card and ack once.
    failing["on"] = False
    desk.clock.advance(seconds=1)
    await desk.settle()
    again = await trail()
    assert sorted(again) == sorted(texts)
    for subject, events in again.items():
        assert [k for k, _ in events] == KINDS, subject
        if subject != "boom goes the desk":
            assert events == first_trail[subject]  # what stood stays, once
    async with desk.sessions() as s:
        assert await s.scalar(select(InboxRow.status).where(InboxRow.id == failed.id)) == "done"
        assert len((await s.scalars(select(AutomationFiring.id))).all()) == 4
    cards = [m for m in desk.slack.sent if m.kind == "slack_card"]
    assert sorted(len([c for c in cards if t in (c.text or "")]) for t in texts) == [1, 1, 1, 1]
    acks = [m for m in desk.telegram.sent if m.kind == "text"]
    assert sorted(m.destination for m in acks) == ["100", "101", "102", "103"]


async def test_trail_rows_of_a_savepoint_that_rolls_back_are_neither_stored_nor_journaled(
    desk: Harness,
) -> None:
    # storage/trail.py keeps a step's ticket events aside and writes them in one INSERT; a
    # savepoint that rolls back must take its rows with it, written or not, out of the table
    # and out of the automations' journal, while the rows around it stand once.
    await _write(desk, ["my parcel is late"])
    await desk.settle()
    ticket = await desk.ticket()

    def event(kind: str) -> TicketEvent:
        return TicketEvent(ticket_id=ticket.id, kind=kind, actor="test", at=desk.clock.now())

    async with desk.sessions.begin() as s:
        sync = s.sync_session
        take(sync)  # nothing left over from before
        before = event("before")
        trail.note(sync, before)
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                written = event("written-then-rolled-back")
                trail.note(sync, written)
                await s.execute(select(func.count()).select_from(TicketEvent))  # writes them
                assert written.id is not None and trail.written(sync, written)
                trail.note(sync, event("kept-then-rolled-back"))
                raise RuntimeError("the step failed")
        after = event("after")
        trail.note(sync, after)
        await trail.write_async(s)
        assert [r.kind for r in take(sync) if isinstance(r, TicketEvent)] == ["before", "after"]
    async with desk.sessions() as s:
        kinds = (
            await s.scalars(
                select(TicketEvent.kind)
                .where(TicketEvent.ticket_id == ticket.id, TicketEvent.actor == "test")
                .order_by(TicketEvent.id)
            )
        ).all()
    assert kinds == ["before", "after"]
    assert (before.id or 0) < (after.id or 0)


async def test_outcomes_are_recorded_in_bulk_and_a_failing_one_is_rolled_back_alone(
    desk: Harness, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group of outcomes is recorded without a savepoint each; one that fails after it has
    # changed its rows takes none of its changes along, and the others stand, recorded once.
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    await _write(desk, ["first", "second", "third"])
    await desk.dispatcher.run_once()
    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        await desk.outbox.run_once()  # the cards and acknowledgements of three new tickets
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    async with desk.sessions() as s:
        assert set((await s.scalars(select(OutboxRow.status))).all()) == {"sent"}
    assert "UPDATE" in statements and "SAVEPOINT" not in statements

    await _write(desk, ["fourth", "fifth", "sixth"], first=3)
    await desk.dispatcher.run_once()
    real = desk.outbox._record_one
    failed: list[int] = []

    async def faulty(session: Any, item: Any) -> Any:
        recorded = await real(session, item)  # the row, its message, the card's ts: changed
        if item.out.channel == "telegram" and item.out.destination == "104":
            failed.append(item.row_id)
            raise RuntimeError("a bug after recording")
        return recorded

    monkeypatch.setattr(desk.outbox, "_record_one", faulty)
    with pytest.raises(RuntimeError, match="a bug after recording"):
        await desk.outbox.run_once()
    rows = await _outbox_once_the_others_are_sent(desk)
    assert failed == [failed[0]]  # tried once, not again with the others
    broken = rows[failed[0]]
    assert broken.status == "sending" and broken.sent_at is None  # rolled back, left for its lease
    others = [r for i, r in rows.items() if i != broken.id]
    assert len(others) == 11 and {r.status for r in others} == {"sent"}
    async with desk.sessions() as s:
        if broken.message_id is not None:
            message = await s.get(Message, broken.message_id)
            assert message is not None and message.delivery != "sent"
        cards = (await s.scalars(select(Ticket.slack_ts).order_by(Ticket.id))).all()
    assert all(cards)  # every card's ts recorded, the fifth's too
    assert len(desk.telegram.sent) == 6 and len(desk.slack.sent) >= 6


@contextmanager
def counted_claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many rows each inbox claim of the dispatcher took, in order."""
    taken: list[int] = []

    async def counting(*args: Any, **kwargs: Any) -> Any:
        rows = await inbox_claim(*args, **kwargs)
        taken.append(len(rows))
        return rows

    monkeypatch.setattr(dispatcher, "inbox_claim", counting)
    yield taken


@contextmanager
def looping(desk: Harness) -> Iterator[dispatcher.Dispatcher]:
    """The desk's dispatcher loop running, with an idle poll of a minute: what the tests below
    see processed within seconds was woken, not polled for."""
    loop = wiring.dispatcher(
        desk.sessions,
        wiring.desks(RULES),
        RulesClassifier(RULES.priority),
        desk.clock,
        desk.inbox,
        idle_poll=60.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        task.cancel()


async def _done_within(desk: Harness, n: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with desk.sessions() as s:
            done = await s.scalar(
                select(func.count()).select_from(InboxRow).where(InboxRow.status == "done")
            )
        if done == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{done} of {n} inbox rows done after {seconds} s")


async def test_an_idle_desk_claims_once_for_a_message_and_then_waits(
    desk: Harness, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Claiming again after every batch found nothing on an idle desk, and on SQLite it ran
    # before the outbox could send the batch's card (a millisecond or two of every message's
    # way to Slack). On PostgreSQL it still claims again: another process may have taken
    # webhooks this one never heard of.
    again = [0] if engine.dialect.name == "postgresql" else []
    with counted_claims(monkeypatch) as taken, looping(desk) as loop:
        await asyncio.sleep(0.05)  # its first claim, on an empty inbox
        await _write(desk, ["my parcel is late"])
        await _done_within(desk, 1, 5.0)
        await asyncio.sleep(0.2)
        assert taken == [0, 1, *again]
        assert loop.processed == 1
        await _write(desk, ["and the invoice is wrong"], first=1)  # another customer
        await _done_within(desk, 2, 5.0)
        await asyncio.sleep(0.2)
        assert taken == [0, 1, *again, 1, *again]


async def test_a_conversations_next_message_is_taken_right_after_the_one_before_it(
    desk: Harness, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both in the inbox before the first claim: the claim takes the conversation's first only,
    # and knows the second waits behind it.
    first, second = desk.customer("my parcel is late"), desk.customer("order 1234")
    assert await desk.inbox.accept([first, second], {}) == 2
    with counted_claims(monkeypatch) as taken, looping(desk):
        await _done_within(desk, 2, 5.0)
        await asyncio.sleep(0.2)
    assert taken == [1, 1, *([0] if engine.dialect.name == "postgresql" else [])]
    async with desk.sessions() as s:
        texts = (await s.scalars(select(Message.text).order_by(Message.id))).all()
    assert texts == ["my parcel is late", "order 1234"]


async def test_a_message_that_arrives_during_a_batch_is_claimed_right_after_it(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Desk.customer_message
    writes: list[asyncio.Task[None]] = []

    async def and_meanwhile(self: Desk, ev: Any, *args: Any, **kwargs: Any) -> Ticket:
        if not writes:  # a webhook arrives while the first message's step runs
            writes.append(asyncio.create_task(_write(desk, ["the app crashes"], first=7)))
            await asyncio.sleep(0)
        return await real(self, ev, *args, **kwargs)

    monkeypatch.setattr(Desk, "customer_message", and_meanwhile)
    with counted_claims(monkeypatch) as taken, looping(desk):
        await asyncio.sleep(0.05)
        await _write(desk, ["my parcel is late"])
        await _done_within(desk, 2, 5.0)
        await writes[0]
    assert taken[:3] == [0, 1, 1]


def _committed_then_lost(desk: Harness, claim: Any) -> tuple[Any, list[int]]:
    """A claim the database commits while the link is cut before its answer comes back: the
    rows are leased to the desk, and the desk sees only the error."""
    lost: list[int] = []

    async def committed_unheard(_session: Any, **kwargs: Any) -> Any:
        if lost:
            return await claim(_session, **kwargs)
        async with desk.sessions.begin() as other:
            lost.extend(row.id for row in await claim(other, **kwargs))
        raise ConnectionResetError("the link to the database was cut")

    return committed_unheard, lost


async def test_a_claim_committed_unheard_is_given_back_when_the_dispatcher_recovers(
    desk: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The message waits for the loop's next try, not for its lease (a minute) to run out."""
    fake, lost = _committed_then_lost(desk, inbox_claim)
    monkeypatch.setattr(dispatcher, "inbox_claim", fake)
    await _write(desk, ["my parcel is late"])
    stop = asyncio.Event()
    running = asyncio.create_task(desk.dispatcher.run(stop))
    try:
        for _ in range(100):  # the loop pauses 0.1 s after a failure
            if desk.dispatcher.processed:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    assert lost == [1] and desk.dispatcher.processed == 1
    async with desk.sessions() as s:
        assert (await s.scalars(select(InboxRow.status))).all() == ["done"]
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 1
    said = [r.getMessage() for r in caplog.records]
    assert "dispatcher.claims_released rows=1" in said


async def test_an_outbox_claim_committed_unheard_is_sent_once_when_the_outbox_recovers(
    desk: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _write(desk, ["my parcel is late"])
    assert await desk.dispatcher.run_once() == 1
    fake, lost = _committed_then_lost(desk, outbox_claim)
    monkeypatch.setattr(outbox, "outbox_claim", fake)
    stop = asyncio.Event()
    running = asyncio.create_task(desk.outbox.run(stop))
    try:
        for _ in range(100):
            if desk.telegram.sent and desk.slack.sent:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    assert len(lost) == 2  # the acknowledgement and the card
    assert len(desk.telegram.sent) == 1 and [o.kind for o in desk.slack.sent] == ["slack_card"]
    said = [r.getMessage() for r in caplog.records]
    assert "outbox.claims_released rows=2" in said


async def test_a_retry_that_cannot_be_written_makes_the_dispatcher_say_it_is_failing(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event's transaction failed and so did writing its retry (the database is away): the
    loop says so at once (/healthz), not only when its next run fails, and until the retry is
    written."""
    await _write(desk, ["my parcel is late"])
    away = [True]

    async def step_fails(*_args: Any) -> Desk:
        raise ConnectionResetError("the link to the database was cut")

    real_settle = desk.dispatcher._settle

    async def settle(*args: Any) -> None:
        if away[0]:
            raise ConnectionResetError("the link to the database was cut")
        await real_settle(*args)

    monkeypatch.setattr(desk.dispatcher, "_step", step_fails)
    monkeypatch.setattr(desk.dispatcher, "_settle", settle)
    assert await desk.dispatcher.run_once() == 1  # the run itself ends without an error
    assert desk.dispatcher.failing is not None
    assert "ConnectionResetError" in desk.dispatcher.failing[1]
    away[0] = False
    stop = asyncio.Event()
    running = asyncio.create_task(desk.dispatcher.run(stop))
    try:
        for _ in range(100):
            if desk.dispatcher.failing is None:
                break
            await asyncio.sleep(0.05)
        assert desk.dispatcher.failing is None  # the retry written: the loop works again
    finally:
        stop.set()
        await running
    async with desk.sessions() as s:
        [(status, error)] = (await s.execute(select(InboxRow.status, InboxRow.error))).all()
    assert status == "processing" and "ConnectionResetError" in error  # its retry, written


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_webhook_to_an_idle_desk_goes_straight_into_the_inbox(desk: Harness) -> None:
    """The one writer free and the spool empty: the spool would only add a write and a move."""
    ev = desk.customer("my parcel is late", chat="1")
    assert await desk.inbox.accept([ev], {}) == 1
    assert not desk.inbox.waiting()  # nothing to move
    async with desk.sessions() as s:
        assert (await s.scalars(select(InboxRow.external_id))).all() == [ev.external_id]
    spool = desk.inbox._spool
    assert spool is not None and spool.take(10) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_conversation_keeps_its_order_across_the_spool_and_the_straight_way(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message spooled while the writer was busy goes into the inbox before the same
    customer's next message, even one that arrives while the writer is free (the move of the
    first waiting to be tried again), and one that arrives once all is moved goes straight in."""
    refused: list[int] = []

    async def refusing_once(session: Any, rows: Any) -> int:
        if not refused:
            refused.append(len(rows))
            raise RuntimeError("the database refused")
        return await inbox_add(session, rows)

    monkeypatch.setattr(dispatcher, "inbox_add", refusing_once)
    texts = ["my parcel is late", "it was due on Monday", "order 1234"]
    first, second, third = (desk.customer(t, chat="7") for t in texts)
    async with desk.sessions.begin() as held:
        await held.execute(select(1))
        assert await desk.inbox.accept([first], {}) == 1  # spooled
    await asyncio.sleep(0.02)
    assert refused == [1] and not desk.inbox.waiting()  # the writer free, the move put off
    assert await desk.inbox.accept([second], {}) == 1
    for _ in range(100):
        if desk.inbox._spool is not None and not desk.inbox._spool.waiting():
            break
        await asyncio.sleep(0.05)
    assert await desk.inbox.accept([third], {}) == 1
    async with desk.sessions() as s:
        kept = (await s.scalars(select(InboxRow.external_id).order_by(InboxRow.id))).all()
    assert kept == [first.external_id, second.external_id, third.external_id]


async def test_a_batch_whose_transaction_fails_at_once_fails_the_run_and_is_given_back(
    desk: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses the batch's transaction at its first statement (it went away after
    the claim): the run fails and says so, instead of trying the same rows again at once for
    ever; the rows are given back and processed once the database answers."""
    await _write(desk, ["my parcel is late", "refund please"])
    monkeypatch.setattr(
        dispatcher, "_STATES", Statement(select(InboxRow.id).where(text("no_such_column = 1")))
    )
    stop = asyncio.Event()
    running = asyncio.create_task(desk.dispatcher.run(stop))
    try:
        for _ in range(100):
            if desk.dispatcher.failing is not None:
                break
            await asyncio.sleep(0.02)
        assert desk.dispatcher.failing is not None  # the loop says so
        assert "no_such_column" in desk.dispatcher.failing[1]
        monkeypatch.undo()  # the database answers again
        for _ in range(100):
            if desk.dispatcher.processed == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait({running}, timeout=5)  # a loop that spins never sees stop
        running.cancel()
    assert desk.dispatcher.processed == 2
    assert "dispatcher.claims_released rows=2" in [r.getMessage() for r in caplog.records]
