"""A desk on another host dies holding a claim: the running desks take it over in seconds.

Before: a lease held by a process on another host was waited out, 60 seconds, because nothing
said whether that process still ran. Now every desk beats in the ``processes`` table; one
whose beat is more than five seconds old is dead, and its claims are taken over at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.outbound import Outbound
from storage.db import create_engine, migrate, session_factory
from storage.models import OutboxRow, Process

from .conftest import SUPPORT, Stack, eventually, running_stack

ELSEWHERE = "desk-2.example:4242:0badf00d"  # a desk on another host: its pid means nothing here


async def claimed_by_elsewhere(
    sessions: async_sessionmaker[AsyncSession], text: str, *, beat_age: float
) -> None:
    """What a desk on another host leaves behind: its process row, beating ``beat_age`` seconds
    ago, and an escalation post it had claimed (leased for another minute) when it died."""
    now = datetime.now(UTC)
    post = Outbound(channel="slack", kind="slack_post", destination=SUPPORT, text=text)
    async with sessions.begin() as s:
        beat = now - timedelta(seconds=beat_age)
        s.add(
            Process(
                owner=ELSEWHERE, host="desk-2.example", pid=4242, started_at=beat, heartbeat_at=beat
            )
        )
        s.add(
            OutboxRow(
                idempotency_key=f"test:{text}",
                channel="slack",
                destination_key=f"slack:{SUPPORT}:post",
                payload=post.model_dump(mode="json"),
                status="sending",
                attempts=1,
                next_attempt_at=now,
                lease_until=now + timedelta(seconds=60),
                lease_owner=ELSEWHERE,
                created_at=now,
            )
        )


def posted(stack: Stack, text: str) -> list[str]:
    return [m["ts"] for m in stack.standins.slack.messages(SUPPORT) if m["text"] == text]


async def test_a_dead_desks_claim_is_delivered_soon_after_a_desk_starts(database_url: str) -> None:
    engine = create_engine(database_url)
    await migrate(engine)
    await claimed_by_elsewhere(session_factory(engine), "Escalation: left behind", beat_age=30)
    await engine.dispose()
    started = time.monotonic()
    async with running_stack(database_url) as stack:

        async def delivered() -> list[str]:
            return posted(stack, "Escalation: left behind")

        await eventually(delivered, "the dead desk's post", timeout=10)
        assert time.monotonic() - started < 10

        async def recorded() -> OutboxRow | None:
            # Slack shows the post a moment before the desk has written down that it is sent.
            async with stack.sessions() as s:
                row = await s.scalar(
                    select(OutboxRow).where(
                        OutboxRow.idempotency_key == "test:Escalation: left behind"
                    )
                )
                return row if row is not None and row.status == "sent" else None

        row = await eventually(recorded, "the post recorded as sent")
        assert row.attempts == 2
        async with stack.sessions() as s:
            assert await s.get(Process, ELSEWHERE) is None  # its row is gone with it


async def test_a_desk_that_stops_beating_while_others_run_is_taken_over(stack: Stack) -> None:
    # It was alive a moment ago: its claim is respected at first...
    await claimed_by_elsewhere(stack.sessions, "Escalation: in flight", beat_age=0)
    went_silent = time.monotonic()

    async def delivered() -> list[str]:
        return posted(stack, "Escalation: in flight")

    # ...and taken over once five seconds pass without a beat, not sixty.
    await eventually(delivered, "the silent desk's post", timeout=10)
    took = time.monotonic() - went_silent
    assert 4.0 <= took < 10, f"took over after {took:.1f} s"
    assert len(posted(stack, "Escalation: in flight")) == 1
    async with stack.sessions() as s:
        mine = (await s.scalars(select(Process.owner))).all()
    assert ELSEWHERE not in mine and len(mine) == 1  # the running desk, beating
