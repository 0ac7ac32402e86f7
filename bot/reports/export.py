"""``/desk export``: the period's tickets as CSV, one row per ticket, times in ``DESK_TZ``.

A ticket belongs to the period it was created in (the same rule as ``tickets_created``), so
exports of consecutive periods never share a row. Its later life (first response, resolve,
rating, reopens) is as it stands now.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.tickets import ACTIVE, DONE
from bot.reports.metrics import Period
from storage.models import Ticket, TicketEvent

COLUMNS = (
    "ticket",
    "customer",
    "platform",
    "chat",
    "slack_channel",
    "slack_ts",
    "team",
    "priority",
    "intent",
    "language",
    "status",
    "assignee",
    "created",
    "first_response",
    "resolved",
    "rating",
    "reopen_count",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheets run a cell starting so


def _cell(value: object, tz_period: Period) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(tz_period.tz).isoformat(timespec="seconds")
    text = str(value)
    # Nothing here is typed by a customer, but a cell must never become a formula.
    return "'" + text if text.startswith(FORMULA_START) else text


async def tickets_csv(session: AsyncSession, period: Period) -> tuple[str, int]:
    """The CSV text and how many tickets it lists."""
    reopens = (
        select(TicketEvent.ticket_id, func.count().label("n"))
        .where(
            TicketEvent.kind == "status",
            TicketEvent.from_value.in_(DONE),
            TicketEvent.to_value.in_(ACTIVE),
        )
        .group_by(TicketEvent.ticket_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(Ticket, func.coalesce(reopens.c.n, 0))
            .outerjoin(reopens, reopens.c.ticket_id == Ticket.id)
            .where(Ticket.created_at >= period.start, Ticket.created_at < period.end)
            .order_by(Ticket.id)
        )
    ).all()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for t, reopen_count in rows:
        intent = (t.classification or {}).get("intent")
        values: tuple[object, ...] = (
            t.id,
            f"c{t.customer_id}",  # as History, the audit trail and `/desk forget` name them
            t.channel,
            t.chat_id,
            t.slack_channel,
            t.slack_ts,
            t.team,
            t.priority,
            intent,
            t.language,
            t.status,
            t.assignee_id,
            t.created_at,
            t.first_response_at,
            t.resolved_at,
            t.rating,
            int(reopen_count),
        )
        writer.writerow([_cell(v, period) for v in values])
    return out.getvalue(), len(rows)
