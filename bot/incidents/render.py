"""An incident's card and the lists in its thread, drawn when the outbox sends them.

The outbox row only names the incident (see :mod:`bot.incidents.desk`); what it shows is read
here, in the outbox's transaction, from the incident as it is then.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.domain.mrkdwn import escape
from bot.domain.outbound import ChannelSender, NothingToSay, NotPosted, Outbound
from bot.domain.rules import Rules
from bot.domain.tickets import ACTIVE, CHANNEL_NAME
from bot.incidents.cards import IncidentView, incident_blocks, incident_text
from bot.incidents.desk import summary
from storage.models import Customer, Incident, Message, Ticket
from storage.queues import outbox_add

EXAMPLES = 3
LIST_LIMIT = 40  # tickets named in one thread post (about 4,000 characters); more: more posts


class IncidentRenderer:
    """The outbox's renderer for rows about an incident (they carry ``incident_id``)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], rules: Rules, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock

    def wants(self, out: Outbound) -> bool:
        return out.incident_id is not None

    async def render(self, out: Outbound, row_id: int, sender: ChannelSender | None) -> Outbound:
        async with self._sessions.begin() as session:
            return await render(session, self._rules, out, row_id, self._clock.now())


async def render(
    session: AsyncSession, rules: Rules, out: Outbound, row_id: int, now: datetime
) -> Outbound:
    """Draw an incident post, in the caller's transaction: the incident row is locked (see
    :meth:`IncidentDesk._soon`), and a list post claims the tickets it names (``row_id``), so
    a retried post names the same ones and no ticket is listed twice or never."""
    inc = await session.get(Incident, out.incident_id, with_for_update=True)
    if inc is None:
        raise NotPosted(f"incident {out.incident_id} is gone")
    if out.kind == "slack_card":
        text, blocks = await incident_card(session, rules, inc)
        return out.model_copy(
            update={"destination": inc.slack_channel, "text": text, "blocks": blocks}
        )
    if inc.slack_ts is None:
        raise NotPosted("the incident card was never posted")
    where = {"destination": inc.slack_channel, "reply_to": inc.slack_ts}
    if out.kind == "slack_card_update":
        text, blocks = await incident_card(session, rules, inc)
        return out.model_copy(update={**where, "text": text, "blocks": blocks})
    if out.kind == "slack_thread" and out.incident_list:
        already = (
            await session.scalars(select(Ticket.id).where(Ticket.incident_listed == row_id))
        ).all()
        if not already:  # first drawing: claim the next batch (a retry names the same ones)
            batch = (
                await session.scalars(
                    select(Ticket.id)
                    .where(Ticket.incident_id == inc.id, Ticket.incident_listed.is_(None))
                    .order_by(Ticket.id)
                    .limit(LIST_LIMIT)
                )
            ).all()
            if batch:
                await session.execute(
                    update(Ticket).where(Ticket.id.in_(batch)).values(incident_listed=row_id)
                )
                left = await session.scalar(
                    select(Ticket.id)
                    .where(Ticket.incident_id == inc.id, Ticket.incident_listed.is_(None))
                    .limit(1)
                )
                if left is not None:  # more than one post holds: the next batch follows
                    await outbox_add(
                        session,
                        [
                            {
                                "idempotency_key": f"incident:{inc.id}:list:{uuid.uuid4().hex}",
                                "rank": 2,
                                "channel": "slack",
                                "destination_key": f"slack:incident:{inc.id}",
                                "payload": out.model_copy(update={"outbox_id": None}).model_dump(
                                    mode="json"
                                ),
                                "status": "pending",
                                "attempts": 0,
                                "next_attempt_at": now,
                                "created_at": now,
                            }
                        ],
                    )
        rows = (
            await session.execute(
                select(Ticket.id, Ticket.channel, Customer.name, Ticket.subject)
                .join(Customer, Customer.id == Ticket.customer_id)
                .where(Ticket.incident_id == inc.id, Ticket.incident_listed == row_id)
                .order_by(Ticket.id)
            )
        ).all()
        if not rows:
            raise NothingToSay()
        lines = [
            f"• #{tid} · {escape(name[:80])} via {CHANNEL_NAME.get(ch, ch)}: "
            f"{escape(summary(subject))}"
            for tid, ch, name, subject in rows
        ]
        head = f"📎 {len(rows)} ticket{'s' if len(rows) != 1 else ''} attached:"
        return out.model_copy(update={**where, "text": "\n".join([head, *lines])})
    return out.model_copy(update=where)


async def progress(session: AsyncSession, inc: Incident) -> dict[str, int] | None:
    if inc.reply_at is None:
        return None
    rows = (
        await session.execute(
            select(Message.delivery, Message.delivery_error)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .where(
                Ticket.incident_id == inc.id,
                Message.purpose == "incident_reply",
                Message.created_at >= inc.reply_at,
            )
        )
    ).all()
    counts = {"total": len(rows), "sent": 0, "failed": 0, "blocked": 0, "pending": 0}
    for delivery, error in rows:
        if delivery in ("sent", "delivered", "read"):
            counts["sent"] += 1
        elif delivery == "failed":
            counts["blocked" if (error or "").startswith("Forbidden") else "failed"] += 1
        else:
            counts["pending"] += 1
    return counts


async def incident_card(
    session: AsyncSession, rules: Rules, inc: Incident
) -> tuple[str, tuple[dict[str, Any], ...]]:
    count = int(
        await session.scalar(
            select(func.count()).select_from(Ticket).where(Ticket.incident_id == inc.id)
        )
        or 0
    )
    examples = (
        await session.execute(
            select(Customer.name, Ticket.channel, Ticket.subject)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(Ticket.incident_id == inc.id)
            .order_by(Ticket.id)
            .limit(EXAMPLES)
        )
    ).all()
    open_tickets = int(
        await session.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.incident_id == inc.id, Ticket.status.in_(ACTIVE))
        )
        or 0
    )
    view = IncidentView(
        incident_id=inc.id,
        status=inc.status,
        customers=count,
        open_tickets=open_tickets,
        since=inc.opened_at,
        summary=inc.summary,
        why=inc.why,
        team=inc.team if rules.teams else "",
        examples=tuple((n, c, s) for n, c, s in examples),
        progress=await progress(session, inc),
        closed_by=inc.closed_by,
        merged_into=inc.merged_into,
    )
    return incident_text(view), tuple(incident_blocks(view))
