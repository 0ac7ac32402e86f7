"""A database that blinks just after a platform accepted a message.

Before: the outcome's commit failed, the log had already said ``outbox.sent``, and the row was
sent again once its lease ran out: the customer got the message twice and the log lied.
Now: the commit is tried again; the log says ``sent`` only for a committed row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.outbound import Delivery, Outbound, Unavailable
from storage.models import OutboxRow

from .test_desk_core import Harness, make_harness


class Blip:
    """Fails the next ``n`` commits once armed, like a connection dropped mid-transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.left = 0
        self.failed = 0
        event.listen(engine.sync_engine, "commit", self._commit)

    def _commit(self, _conn: Any) -> None:
        if self.left > 0:
            self.left -= 1
            self.failed += 1
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))


@pytest.fixture
async def blippy(engine: AsyncEngine) -> AsyncIterator[tuple[Harness, Blip]]:
    yield make_harness(engine), Blip(engine)


async def test_a_commit_lost_after_a_send_is_retried_not_sent_twice(
    blippy: tuple[Harness, Blip], caplog: pytest.LogCaptureFixture
) -> None:
    desk, blip = blippy
    telegram_send = desk.telegram.send

    async def send_then_blip(message: Outbound) -> Delivery:
        delivery = await telegram_send(message)
        blip.left = 2  # the next two commits (recording this delivery) fail
        return delivery

    desk.telegram.send = send_then_blip  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="deskbot.outbox")
    await desk.inbox.accept([desk.customer("hello")], {})
    for _ in range(10):
        try:
            await desk.settle()
            break
        except OperationalError:
            continue  # the desk's loop logs and carries on; so does this test
    assert blip.failed == 2
    desk.clock.advance(seconds=61)  # past the lease: anything unrecorded would go out again
    await desk.settle()
    assert len(desk.telegram.sent) == 1
    async with desk.sessions() as s:
        row = await s.scalar(select(OutboxRow).where(OutboxRow.channel == "telegram"))
        assert row is not None and row.status == "sent" and row.attempts == 1
    sent_logs = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("outbox.sent") and "channel=telegram" in r.getMessage()
    ]
    assert sent_logs == [f"outbox.sent id={row.id} channel=telegram kind=text"]


class TimingOutSlack:
    """A Slack that takes a post and then times out before answering, once; it keeps what it
    took, with the metadata the desk sent, and answers lookups as conversations.history does."""

    def __init__(self) -> None:
        self.posts: list[Outbound] = []
        self.time_out_next = True
        self.lookups = 0

    async def send(self, message: Outbound) -> Delivery:
        self.posts.append(message)
        if self.time_out_next:
            self.time_out_next = False
            raise Unavailable("TimeoutError: the answer never came")
        return Delivery(platform_message_id=f"{len(self.posts)}.000100")

    async def find_posted(self, message: Outbound) -> Delivery | None:
        self.lookups += 1
        for n, post in enumerate(self.posts, 1):
            if post.outbox_id == message.outbox_id:
                return Delivery(platform_message_id=f"{n}.000100")
        return None


async def test_a_card_post_that_timed_out_is_found_not_posted_twice(engine: AsyncEngine) -> None:
    desk = make_harness(engine)
    slack = TimingOutSlack()
    desk.outbox._senders = {"telegram": desk.telegram, "slack": slack}
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.settle()
    assert [p.kind for p in slack.posts] == ["slack_card"]  # taken, but no answer
    desk.clock.advance(seconds=5)  # past the backoff
    await desk.settle()
    assert [p.kind for p in slack.posts] == ["slack_card"]  # found, not posted again
    assert slack.lookups == 1
    ticket = await desk.ticket()
    assert ticket.slack_ts == "1.000100"
    async with desk.sessions() as s:
        card = await s.scalar(select(OutboxRow).where(OutboxRow.channel == "slack"))
        assert card is not None and card.status == "sent" and card.attempts == 2
        assert slack.posts[0].outbox_id == card.id
