"""The platforms' rate limits, kept by the desk itself, for one process or for a fleet.

One process (SQLite, or a single desk on PostgreSQL) keeps its token buckets in memory. Several
processes on one PostgreSQL database keep them in the ``rate_buckets`` table, so the fleet
together stays within what Slack, Telegram and WhatsApp allow: three desks posting into one
Slack channel get one message a second between them, not three each leaning on 429s.

A bucket row is read and updated under a row lock in one short transaction per send, on the
database's clock (``clock_timestamp()``), so hosts whose clocks differ still share one budget.
Written by hand: a token bucket is a dozen lines, and no library keeps one in PostgreSQL for
SQLAlchemy's async sessions (Redis-based limiters exist, but the desk needs no Redis).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.outbound import Outbound
from storage.crypto import seal_address
from storage.models import RateBucket, UTCDateTime

log = logging.getLogger("deskbot.ratelimit")


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The platforms' published limits (see the README); the desk keeps under them itself."""

    telegram_chat: Rate = Rate(1.0, 3)
    telegram_total: Rate = Rate(30.0, 30)
    # chat.postMessage: about one a second per channel, with short bursts (the stand-in allows
    # 10); the desk bursts to 8, leaving two for the jitter between taking a token and Slack
    # counting the post.
    slack_channel: Rate = Rate(1.0, 8)
    slack_updates: Rate = Rate(50 / 60, 10)  # chat.update: Tier 3, 50+ a minute per workspace
    whatsapp_number: Rate = Rate(80.0, 80)
    # views.publish and views.update are Tier 4 (100+ a minute for the workspace); Homes are
    # debounced besides.
    slack_views: Rate = Rate(1.5, 20)
    # SMTP: providers cap a mailbox at a few thousand mails a day and frown on bursts.
    email_total: Rate = Rate(2.0, 10)
    unlimited: bool = False  # tests and benchmarks: no limits, and nothing shared to keep

    @classmethod
    def lifted(cls) -> RateLimits:
        big = Rate(1e6, 1_000_000)
        return cls(
            telegram_chat=big,
            telegram_total=big,
            slack_channel=big,
            slack_updates=big,
            whatsapp_number=big,
            slack_views=big,
            email_total=big,
            unlimited=True,
        )


def refill(tokens: float, elapsed: float, rate: Rate) -> float:
    return min(float(rate.burst), tokens + max(elapsed, 0.0) * rate.per_second)


def wait_for(tokens: float, rate: Rate) -> float:
    """Seconds until one token is there (0 when it is there now)."""
    return 0.0 if tokens >= 1 else (1 - tokens) / rate.per_second


class TokenBucket:
    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.tokens = float(rate.burst)
        self.stamp = time.monotonic()

    def wait_time(self) -> float:
        now = time.monotonic()
        self.tokens = refill(self.tokens, now - self.stamp, self.rate)
        self.stamp = now
        return wait_for(self.tokens, self.rate)

    def take(self) -> None:
        self.tokens -= 1


class SharedBuckets:
    """Token buckets in PostgreSQL, shared by every process of the fleet."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def reserve(self, keys: list[tuple[str, Rate]]) -> float:
        """Take a token from every bucket, or none and say how long to wait."""
        async with self._sessions.begin() as s:
            # The database's clock: one clock for every host of the fleet.
            now = (await s.execute(select(func.clock_timestamp(type_=UTCDateTime())))).scalar_one()
            rates = dict(keys)
            await s.execute(
                pg_insert(RateBucket)
                .values([{"key": k, "tokens": float(r.burst), "stamp": now} for k, r in keys])
                .on_conflict_do_nothing(index_elements=["key"])
            )
            # In key order, so two processes taking the same buckets cannot deadlock.
            rows = (
                await s.scalars(
                    select(RateBucket)
                    .where(RateBucket.key.in_(rates))
                    .order_by(RateBucket.key)
                    .with_for_update()
                )
            ).all()
            wait = 0.0
            for row in rows:
                row.tokens = refill(row.tokens, (now - row.stamp).total_seconds(), rates[row.key])
                row.stamp = now
                wait = max(wait, wait_for(row.tokens, rates[row.key]))
            if wait == 0.0:
                for row in rows:
                    row.tokens -= 1
            return wait


@dataclass
class Limiter:
    limits: RateLimits
    shared: SharedBuckets | None = None
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    # One reservation at a time, first come first served (asyncio.Lock wakes its waiters in
    # order): the outbox starts a batch's sends in priority order, and an urgent card must get
    # the next token before the normal cards claimed with it.
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _keys(self, out: Outbound, slack_channel: str | None) -> list[tuple[str, Rate]]:
        if out.kind in ("answer_callback", "slack_reaction", "slack_response", "slack_ephemeral"):
            return []  # other methods, other (looser) limits
        if out.channel == "telegram":
            return [
                # A chat's bucket is named by its sealed address with a data key (storage/crypto):
                # the fleet's rate_buckets table names no customer.
                (seal_address(f"tg:{out.destination}"), self.limits.telegram_chat),
                ("tg:*", self.limits.telegram_total),
            ]
        if out.channel == "whatsapp":
            return [("wa:*", self.limits.whatsapp_number)]
        if out.channel == "email":
            return [("mail:*", self.limits.email_total)]
        if out.kind in ("slack_home", "slack_view_update"):
            return [("slack:views", self.limits.slack_views)]
        if out.kind == "slack_card_update":
            return [("slack:update:*", self.limits.slack_updates)]
        return [(f"slack:{slack_channel or out.destination}", self.limits.slack_channel)]

    def pacing(self, out: Outbound, slack_channel: str | None = None) -> tuple[str, float]:
        """The bucket that paces ``out`` most slowly, and the seconds between two of its sends."""
        keys = self._keys(out, slack_channel)
        if not keys:
            return "", 0.0
        key, rate = min(keys, key=lambda k: k[1].per_second)
        return key, 1.0 / rate.per_second

    async def reserve(self, out: Outbound, slack_channel: str | None = None) -> float:
        """Take a token from every bucket the message counts against, or say how long to wait."""
        keys = self._keys(out, slack_channel)
        if not keys:
            return 0.0
        if self.shared is not None and not self.limits.unlimited:
            try:
                async with self._turn:
                    return await self.shared.reserve(keys)
            except (DBAPIError, OSError) as exc:
                # The database blinked: this process's own buckets keep it within the limits
                # on its own until the shared ones answer again.
                log.warning("ratelimit.shared_unavailable error=%s", type(exc).__name__)
        return self._reserve_here(keys)

    def _reserve_here(self, keys: list[tuple[str, Rate]]) -> float:
        buckets = []
        for key, rate in keys:
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = TokenBucket(rate)
            buckets.append(bucket)
        wait = max(b.wait_time() for b in buckets)
        if wait == 0.0:
            for b in buckets:
                b.take()
        return wait
