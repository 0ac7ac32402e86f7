"""The daily digest: when it is due, what it says, and that it is queued once a day."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot import wiring
from bot.base.clock import FrozenClock
from bot.domain.rules import Digest as DigestRules
from bot.domain.rules import Reports, Rules
from bot.reports.digest import DigestScheduler, compose, due_day
from storage.db import session_factory
from storage.models import Digest, OutboxRow, SlaFiring
from tests.test_metrics import Story

TOKYO = ZoneInfo("Asia/Tokyo")
NINE = DigestRules(channel="C0SUPPORT", at="09:00")


def tokyo(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


def rules_with_digest() -> Rules:
    return Rules(version=1, reports=Reports(digest=NINE))


def test_due_from_its_time_in_the_desks_zone_not_utc() -> None:
    # 23:59 UTC on the 4th is 08:59 on the 5th in Tokyo: not yet; a minute later it is due.
    assert due_day(datetime(2026, 12, 4, 23, 59, tzinfo=UTC), TOKYO, NINE) is None
    assert due_day(datetime(2026, 12, 5, 0, 0, tzinfo=UTC), TOKYO, NINE) == date(2026, 12, 5)
    # Later the same day it is still today's (a desk that was down at nine posts late).
    assert due_day(tokyo(5, 23, 30), TOKYO, NINE) == date(2026, 12, 5)


async def test_the_digest_names_what_needs_attention(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as s:
        # Waiting since the 1st: the oldest unanswered, listed first.
        old = await Story.start(s, tokyo(1, 15))
        # Yesterday (the 3rd in Tokyo): one answered, resolved and rated 2 by its customer...
        rated = await Story.start(s, tokyo(3, 10))
        rated.reply(tokyo(3, 10, 20), "U0BOB")
        prompt = await rated.resolve(tokyo(3, 11), "U0BOB")
        rated.rate(tokyo(3, 11, 5), 2, prompt)
        rated.t.slack_channel, rated.t.slack_ts = "C0SUPPORT", "1764723600.000100"
        # ... and one still unanswered whose first response target was breached at noon.
        waiting = await Story.start(s, tokyo(3, 11), priority="urgent")
        s.add(
            SlaFiring(
                ticket_id=waiting.t.id,
                key=f"{waiting.t.id}:first_response:breached",
                target="first_response",
                what="breached",
                due_at=tokyo(3, 12),
                fired_at=tokyo(3, 12),
            )
        )
        # A rating of 5 and a breach two days ago are not yesterday's business.
        happy = await Story.start(s, tokyo(3, 9))
        happy.reply(tokyo(3, 9, 5), "U0ANN")
        happy.rate(tokyo(3, 9, 30), 5, await happy.resolve(tokyo(3, 9, 10), "U0ANN"))
        await s.flush()

        text, blocks = await compose(
            s, Rules(version=1), date(2026, 12, 4), TOKYO, tokyo(4, 9), "acme"
        )

    ids = {"old": old.t.id, "rated": rated.t.id, "waiting": waiting.t.id}
    lines = text.splitlines()
    assert lines[0] == "*Daily digest · Fri 4 Dec 2026 (Asia/Tokyo)*"
    assert lines[1] == "*Yesterday: Desk figures 2026-12-03 (Asia/Tokyo) · 4 tickets*"
    assert lines[2] == "tickets created 3 · resolutions 2 · tickets resolved 2 · backlog 2"
    unanswered = lines.index("*Oldest unanswered (2)*")
    assert lines[unanswered + 1] == f"#{ids['old']} 🟢 normal · waiting 2d 18h"
    assert lines[unanswered + 2] == f"#{ids['waiting']} 🔴 urgent · waiting 22h 00m"
    breaches = lines.index("*SLA breaches yesterday (1)*")
    assert lines[breaches + 1] == f"#{ids['waiting']} first response breached at 12:00"
    low = lines.index("*Low ratings yesterday (1)*")
    link = f"<https://acme.slack.com/archives/C0SUPPORT/p1764723600000100|#{ids['rated']}>"
    assert lines[low + 1] == f"{link} rated 2/5 · served by <@U0BOB>"
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Daily digest · Fri 4 Dec 2026 (Asia/Tokyo)"},
    }
    assert len(blocks) == 5 and all(len(b["text"]["text"]) <= 3000 for b in blocks)


async def test_a_quiet_desk_says_so(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as s:
        text, _ = await compose(s, Rules(version=1), date(2026, 12, 4), TOKYO, tokyo(4, 9), "")
    assert "tickets created 0 · resolutions 0 · tickets resolved 0 · backlog 0" in text
    assert "None: every open ticket has had a reply." in text
    assert text.count("None.") == 2


async def digests(s: AsyncSession) -> list[tuple[str, Any]]:
    rows = (await s.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
    return [(r.idempotency_key, r.payload["destination"]) for r in rows]


async def test_queued_once_by_racing_processes_and_not_again_after_a_restart(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    clock = FrozenClock(tokyo(4, 8, 59))
    rules = rules_with_digest()

    def process() -> DigestScheduler:
        return DigestScheduler(sessions, wiring.desks(rules), clock, TOKYO)

    a, b = process(), process()
    assert await a.run_once() is None  # 08:59 in Tokyo: not yet
    clock.advance(minutes=1)
    done = await asyncio.gather(a.run_once(), b.run_once())
    assert sorted(done, key=str) == [date(2026, 12, 4), None]
    assert await process().run_once() is None  # a restarted process finds it done
    clock.advance(hours=5)
    assert await a.run_once() is None  # later the same day: still once
    async with sessions() as s:
        assert await digests(s) == [("digest:2026-12-04:0", "C0SUPPORT")]
        row = await s.get(Digest, "2026-12-04")
        assert row is not None and row.channel == "C0SUPPORT"

    clock.advance(days=1)
    assert await b.run_once() == date(2026, 12, 5)  # the next day has its own
    async with sessions() as s:
        assert [k for k, _ in await digests(s)] == ["digest:2026-12-04:0", "digest:2026-12-05:0"]


async def test_no_digest_without_the_setting(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    clock = FrozenClock(tokyo(4, 12))
    assert (
        await DigestScheduler(sessions, wiring.desks(Rules(version=1)), clock, TOKYO).run_once()
        is None
    )
    async with sessions() as s:
        assert await digests(s) == []
