"""The daily digest: yesterday's figures and what needs attention, once a day, in one channel.

``reports.digest: {channel: C…, at: "09:00"}`` in rules.yaml; ``at`` is in ``DESK_TZ``. Every
process checks now and then whether today's digest is due; the one that gets there first inserts
the day's row in ``digests`` and the digest's outbox row in the same transaction. The day is the
primary key, so with several processes, and across restarts, a day's digest is queued once; the
outbox then delivers it like any other post (durably, retried, rate limited).

A desk that was down at ``at`` posts the day's digest when it comes back the same day; a day the
desk never ran on has none (a digest of a stale morning would be noise).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.process import this_process
from bot.base.repeat import repeat
from bot.core.tickets import Desks
from bot.domain.mrkdwn import PRIORITY_ICON, escape
from bot.domain.outbound import Outbound
from bot.domain.rules import Digest as DigestRules
from bot.domain.rules import Rules
from bot.domain.tickets import ACTIVE
from bot.reports.command import current_agents
from bot.reports.metrics import Period, report
from bot.reports.render import duration, metric_lines, title
from storage.models import Digest, SlaFiring, Ticket, TicketEvent

log = logging.getLogger("deskbot.digest")

LISTED = 5  # tickets named per heading; the rest are counted


def due_day(now: datetime, tz: ZoneInfo, rules: DigestRules) -> date | None:
    """Today (in ``tz``) once the digest's time has come, else None."""
    local = now.astimezone(tz)
    if local.hour * 60 + local.minute < rules.minutes:
        return None
    return local.date()


def _link(ticket: Ticket, domain: str) -> str:
    if not ticket.slack_ts or not ticket.slack_channel:
        return f"#{ticket.id}"
    if domain:
        stamp = ticket.slack_ts.replace(".", "")
        return f"<https://{domain}.slack.com/archives/{ticket.slack_channel}/p{stamp}|#{ticket.id}>"
    return f"<https://slack.com/app_redirect?channel={ticket.slack_channel}|#{ticket.id}>"


def _listing(lines: list[str], total: int) -> list[str]:
    more = total - len(lines)
    return lines + ([f"… and {more} more"] if more > 0 else [])


async def compose(
    session: AsyncSession, rules: Rules, day: date, tz: ZoneInfo, now: datetime, domain: str
) -> tuple[str, list[dict[str, Any]]]:
    """The digest posted on ``day``: the figures of the day before, and what needs attention
    now (the oldest unanswered open tickets, SLA breaches and low ratings of the day before)."""
    period = Period(day - timedelta(days=1), day - timedelta(days=1), tz)
    figures = await report(session, period, now, None, current_agents(rules))

    unanswered = (
        await session.scalars(
            select(Ticket)
            .where(Ticket.status.in_(ACTIVE), Ticket.first_response_at.is_(None))
            .order_by(Ticket.created_at, Ticket.id)
            .limit(LISTED + 1)
        )
    ).all()
    waiting = [
        " ".join(x for x in (_link(t, domain), PRIORITY_ICON.get(t.priority), t.priority) if x)
        + f" · waiting {duration(int((now - t.created_at).total_seconds()))}"
        for t in unanswered[:LISTED]
    ]
    breaches = (
        await session.execute(
            select(SlaFiring, Ticket)
            .join(Ticket, Ticket.id == SlaFiring.ticket_id)
            .where(
                SlaFiring.what == "breached",
                SlaFiring.fired_at >= period.start,
                SlaFiring.fired_at < period.end,
            )
            .order_by(SlaFiring.fired_at, SlaFiring.id)
        )
    ).all()
    breached = [
        f"{_link(t, domain)} {f.target.replace('_', ' ')} breached"
        f" at {f.fired_at.astimezone(tz):%H:%M}"
        for f, t in breaches[:LISTED]
    ]
    ratings = (
        await session.execute(
            select(TicketEvent, Ticket)
            .join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(
                and_(
                    TicketEvent.kind == "rating",
                    TicketEvent.at >= period.start,
                    TicketEvent.at < period.end,
                    TicketEvent.to_value.in_(("1", "2")),
                )
            )
            .order_by(TicketEvent.at, TicketEvent.id)
        )
    ).all()
    low = [
        f"{_link(t, domain)} rated {e.to_value}/5"
        + (f" · served by <@{t.assignee_id}>" if t.assignee_id else "")
        for e, t in ratings[:LISTED]
    ]

    # The oldest-unanswered count needs the whole set, not the first few: counted in SQL.
    total_waiting = len(unanswered)
    if total_waiting > LISTED:
        total_waiting = (
            await session.scalar(
                select(func.count())
                .select_from(Ticket)
                .where(Ticket.status.in_(ACTIVE), Ticket.first_response_at.is_(None))
            )
            or 0
        )
    head = f"Daily digest · {day:%a %-d %b %Y} ({tz.key})"
    sections = [
        (f"Yesterday: {title(figures)}", [escape(x) for x in metric_lines(figures["metrics"])]),
        (
            f"Oldest unanswered ({total_waiting})",
            _listing(waiting, total_waiting) or ["None: every open ticket has had a reply."],
        ),
        (
            f"SLA breaches yesterday ({len(breaches)})",
            _listing(breached, len(breaches)) or ["None."],
        ),
        (
            f"Low ratings yesterday ({len(ratings)})",
            _listing(low, len(ratings)) or ["None."],
        ),
    ]
    text = "\n".join([f"*{head}*", *(f"*{name}*\n" + "\n".join(lines) for name, lines in sections)])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}}
    ]
    for name, lines in sections:
        body = f"*{escape(name)}*\n" + "\n".join(lines)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}})
    return text, blocks


class DigestScheduler:
    """Queues the day's digest once its time has come (see the module's docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        desks: Desks,
        clock: Clock,
        tz: ZoneInfo,
        *,
        workspace: Callable[[], Awaitable[str]] | None = None,
        outbox_wakeup: asyncio.Event | None = None,
        interval: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._rules = desks.rules
        self._clock = clock
        self._tz = tz
        self._workspace = workspace
        self._wakeup = outbox_wakeup
        self.interval = interval

    async def run_once(self) -> date | None:
        """Queue today's digest if it is due and no process has; returns the day queued."""
        settings = self._rules.reports.digest
        if settings is None:
            return None
        now = self._clock.now()
        day = due_day(now, self._tz, settings)
        if day is None:
            return None
        async with self._sessions() as session:
            if await session.get(Digest, day.isoformat()) is not None:
                return None  # the common case: already done today
        domain = await self._domain()
        try:
            async with self._sessions.begin() as session:
                # The row first: a second process blocks here until the first commits, then
                # fails on the key, and never composes a second digest.
                session.add(
                    Digest(
                        day=day.isoformat(),
                        channel=settings.channel,
                        queued_at=now,
                        queued_by=this_process(),
                    )
                )
                await session.flush()
                text, blocks = await compose(session, self._rules, day, self._tz, now, domain)
                desk = self._desks(session, now)
                desk.fx.say(
                    Outbound(
                        channel="slack",
                        kind="slack_post",
                        destination=settings.channel,
                        text=text,
                        blocks=tuple(blocks),
                    )
                )
                await desk.queue(f"digest:{day.isoformat()}")
        except IntegrityError:
            return None  # another process queued it first
        log.info("digest.queued day=%s channel=%s", day.isoformat(), settings.channel)
        if self._wakeup is not None:
            self._wakeup.set()
        return day

    async def _domain(self) -> str:
        """The workspace's subdomain for links to cards; without it links open the channel."""
        if self._workspace is None:
            return ""
        try:
            return await self._workspace()
        except Exception as exc:  # a digest with channel links beats no digest
            log.warning("digest.workspace_unknown error=%s", type(exc).__name__)
            return ""

    async def run(self, stop: asyncio.Event) -> None:
        if self._rules.reports.digest is not None:
            await repeat(self.run_once, stop, self.interval, "digest")
