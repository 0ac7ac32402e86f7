"""The daily digest in the running desk: two processes on one database post it once, and a
restarted process does not post it again."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from sqlalchemy import select

from bot.app import DeskApp
from bot.base.clock import FrozenClock
from bot.delivery.outbox import RateLimits
from bot.domain.rules import Digest, Reports
from storage.models import Digest as DigestRow

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, free_port, start_standins

DIGEST_RULES = RULES.model_copy(update={"reports": Reports(digest=Digest(channel=SUPPORT))})


async def test_two_desks_post_the_digest_once_and_a_restart_does_not_repeat_it(
    database_url: str,
) -> None:
    standins = await start_standins(rate_limits=False)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    settings_a = desk_settings(standins, database_url, port)
    settings_b = dataclasses.replace(settings_a, http_port=free_port(), telegram=None)
    clock = FrozenClock(datetime(2026, 12, 4, 8, 0, tzinfo=UTC))  # DESK_TZ is UTC here
    lifted = RateLimits.lifted()

    def desk(settings: object) -> DeskApp:
        return DeskApp(settings, DIGEST_RULES, clock=clock, idle_poll=0.05, limits=lifted)  # type: ignore[arg-type]

    def digests() -> list[str]:
        return [
            m["text"]
            for m in standins.slack.messages(SUPPORT)
            if m["text"].startswith("*Daily digest")
        ]

    a, b = desk(settings_a), desk(settings_b)
    await a.start()
    await b.start()
    stack = Stack(standins, a, database_url)
    try:
        await standins.telegram.customer_says(71, "Nobody answers my emails", "Ola")
        card = await stack.card()

        async def card_recorded() -> str | None:
            return (await stack.ticket()).slack_ts

        await eventually(card_recorded, "the card's ts recorded (the digest links to it)")
        assert await a.digest.run_once() is None  # 08:00: not yet

        clock.advance(hours=1, minutes=5)
        # What each process's digest loop does every 30 s, at the same moment in both.
        await asyncio.gather(a.digest.run_once(), b.digest.run_once())

        async def posted_digests() -> list[str]:
            return digests()

        posted = await eventually(posted_digests, "the digest in the channel")
        await asyncio.sleep(0.5)  # time for a second one, if there were one
        assert len(digests()) == 1
        text = posted[0]
        assert text.startswith("*Daily digest · Fri 4 Dec 2026 (UTC)*")
        stamp = card["ts"].replace(".", "")
        link = f"<https://sandbox.slack.com/archives/{SUPPORT}/p{stamp}|#1>"
        assert f"*Oldest unanswered (1)*\n{link} 🟢 normal · waiting 1h 05m" in text
    finally:
        await a.stop()
        await b.stop()

    c = desk(settings_a)
    await c.start()
    try:
        assert await c.digest.run_once() is None
        await asyncio.sleep(0.3)
        assert len(digests()) == 1
        async with Stack(standins, c, database_url).sessions() as s:
            rows = (await s.scalars(select(DigestRow))).all()
            assert [(r.day, r.channel) for r in rows] == [("2026-12-04", SUPPORT)]
    finally:
        await c.stop()
        await standins.stop()
