"""``/desk``: the state of the desk, counted from the tables (never from a cache)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Ticket
from storage.queues import inbox_lag_seconds, outbox_backlog

ORDER = ("urgent", "high", "normal", "low")


async def desk_status(session: AsyncSession, now: datetime, _args: str = "") -> str:
    rows = (
        await session.execute(
            select(Ticket.status, Ticket.priority, func.count())
            .where(Ticket.status.in_(("new", "open", "pending")))
            .group_by(Ticket.status, Ticket.priority)
        )
    ).all()
    by_status: dict[str, int] = {}
    by_priority: dict[str, int] = {}
    for status, priority, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        by_priority[priority] = by_priority.get(priority, 0) + count
    total = sum(by_status.values())
    lag = await inbox_lag_seconds(session, now)
    backlog = await outbox_backlog(session)
    lines = [
        f"*Desk status* · {total} active tickets",
        "• unclaimed (new): {new} · open: {open} · waiting on customer: {pending}".format(
            new=by_status.get("new", 0),
            open=by_status.get("open", 0),
            pending=by_status.get("pending", 0),
        ),
        "• by priority: " + " · ".join(f"{p} {by_priority.get(p, 0)}" for p in ORDER),
        f"• inbox lag {lag:.1f} s · outbox backlog {backlog}",
    ]
    return "\n".join(lines)
