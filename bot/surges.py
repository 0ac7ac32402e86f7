"""Incidents in the desk: a surge of alike new tickets becomes one card, answered in one go.

:mod:`bot.incidents` decides (pure); this module does it inside the dispatcher's transaction.
A new ticket's signature (its urgent keyword, its intent, the encoder's vector of its first
message) is stored; while the team's ``surge_locks`` row is held (``FOR UPDATE``; SQLite has
one writer anyway) the ticket is matched against the team's open incidents and its recent
tickets, so two processes never open two incidents for one surge.

The incident card and the lists of attached tickets in its thread are *rendered when sent*
(:func:`render`): the outbox row only names the incident, and one row per incident per
``surges.update_seconds`` (an idempotency key made of the time bucket) keeps the card current
without one ``chat.update`` per attached ticket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cards import CHANNEL_NAME, escape
from bot.classifier import Classification
from bot.incidents import OpenIncident, Seen, centroid, decide
from bot.outbound import Outbound
from bot.rules import Rules
from storage.models import Customer, Incident, Message, SurgeSignature, Ticket, TicketEvent
from storage.queues import lock_key_row

if TYPE_CHECKING:
    from bot.tickets import Desk

KEYWORD_REASON = re.compile(r"^keyword '(.+)' → urgent$")
EXAMPLES = 3
LIST_LIMIT = 40  # tickets named in one thread post; the rest are counted
SUMMARY_LIMIT = 80


def urgent_keyword(reasons: Sequence[str]) -> str | None:
    for reason in reasons:
        m = KEYWORD_REASON.match(reason)
        if m:
            return m.group(1).casefold()
    return None


def signature(cls: Classification, rules: Rules) -> tuple[str | None, str | None]:
    """The ticket's urgent keyword and its (confident, known) intent."""
    intent = cls.details.get("intent")
    confidence = float(cls.details.get("intent_confidence", 0.0) or 0.0)
    if (
        not isinstance(intent, str)
        or intent == "other"
        or confidence < rules.priority.intent_min_confidence
    ):
        intent = None
    return urgent_keyword(cls.reasons), intent


def bucket(at: datetime, seconds: float) -> int:
    return int(at.timestamp() // seconds)


def bucket_bounds(n: int, seconds: float) -> tuple[datetime, datetime]:
    return (
        datetime.fromtimestamp(n * seconds, UTC),
        datetime.fromtimestamp((n + 1) * seconds, UTC),
    )


def _vec(data: Sequence[Any] | None) -> np.ndarray | None:
    return None if data is None else np.asarray(data, dtype=np.float32)


class IncidentDesk:
    def __init__(self, desk: Desk) -> None:
        self.d = desk
        self.s: AsyncSession = desk.s
        self.rules = desk.rules
        self.cfg = desk.rules.surges

    # -- detection -----------------------------------------------------------------------------

    async def place(self, ticket: Ticket, cls: Classification) -> Incident | None:
        """Record a new ticket's signature and attach it to an incident when it belongs to one
        (opening it if this ticket completes a surge). Returns the incident, or None."""
        if not self.cfg.enabled:
            return None
        keyword, intent = signature(cls, self.rules)
        vector = list(cls.vector) if cls.vector is not None else None
        self.s.add(
            SurgeSignature(
                ticket_id=ticket.id,
                team=ticket.team,
                at=self.d.now,
                keyword=keyword,
                intent=intent,
                vector=vector if intent is not None else None,
            )
        )
        if keyword is None and (intent is None or vector is None):
            return None  # nothing to match it by
        await self.s.flush()
        # One decision at a time per team, across processes: the row stays locked to commit.
        await lock_key_row(self.s, ticket.team, self.d.now)
        new = Seen(ticket.id, self.d.now, ticket.team, keyword, intent, _vec(vector))
        open_rows = (
            await self.s.scalars(
                select(Incident)
                .where(Incident.team == ticket.team, Incident.status == "open")
                .order_by(Incident.id)
            )
        ).all()
        incidents = [
            OpenIncident(i.id, i.team, i.keyword, i.intent, _vec(i.centroid)) for i in open_rows
        ]
        decision = decide(new, [], incidents, self.cfg)
        if decision.action == "attach" and decision.incident_id is not None:
            inc = await self.s.get_one(Incident, decision.incident_id, with_for_update=True)
            await self.attach(inc, ticket, "desk", decision.why, only=True, vector=new.vector)
            return inc
        since = self.d.now - timedelta(minutes=self.cfg.window_minutes)
        rows = (
            await self.s.execute(
                select(SurgeSignature)
                .join(Ticket, Ticket.id == SurgeSignature.ticket_id)
                .where(
                    SurgeSignature.team == ticket.team,
                    SurgeSignature.at >= since,
                    SurgeSignature.ticket_id != ticket.id,
                    Ticket.incident_id.is_(None),
                    Ticket.status.in_(("new", "open", "pending")),
                )
            )
        ).scalars()
        recent = [
            Seen(r.ticket_id, r.at, r.team, r.keyword, r.intent, _vec(r.vector)) for r in rows
        ]
        decision = decide(new, recent, [], self.cfg)
        if decision.action != "open":
            return None
        by_keyword = decision.why.startswith("keyword")
        vectors = [new.vector, *(r.vector for r in recent if r.ticket_id in decision.together)]
        mean = None if by_keyword else centroid([v for v in vectors if v is not None])
        inc = Incident(
            team=ticket.team,
            slack_channel=ticket.slack_channel,
            status="open",
            keyword=keyword if by_keyword else None,
            intent=None if by_keyword else intent,
            centroid=None if mean is None else [float(x) for x in mean],
            summary="",
            why=decision.why,
            opened_at=self.d.now,
            updated_at=self.d.now,
        )
        self.s.add(inc)
        await self.s.flush()
        first = await self.s.get_one(Ticket, min(decision.together))
        inc.summary = _summary(first.subject)
        self.d.fx.say(
            Outbound(
                channel="slack",
                kind="slack_card",
                destination=inc.slack_channel,
                incident_id=inc.id,
            ),
            key=f"incident:{inc.id}:card",
            rank=0,  # many customers at once: ahead of single new cards
        )
        for tid in decision.together:
            other = await self.s.get_one(Ticket, tid, with_for_update=True)
            await self.attach(inc, other, "desk", decision.why, only=False)
            self.d.thread(other, f"🚨 Part of incident #{inc.id} ({escape(inc.why)}).")
        await self.attach(inc, ticket, "desk", decision.why, only=True)
        self.d.decided(
            "surges.incident_opened incident=%d team=%s tickets=%d",
            inc.id,
            inc.team,
            len(decision.together) + 1,
        )
        return inc

    # -- membership ----------------------------------------------------------------------------

    async def attach(
        self,
        inc: Incident,
        ticket: Ticket,
        actor: str,
        why: str,
        *,
        only: bool,
        vector: np.ndarray | None = None,
    ) -> None:
        ticket.incident_id = inc.id
        ticket.incident_only = only
        ticket.updated_at = self.d.now
        self.d.history(ticket, "incident", actor, None, f"#{inc.id}", why)
        if vector is not None and inc.centroid:
            n = int(
                await self.s.scalar(
                    select(func.count()).select_from(Ticket).where(Ticket.incident_id == inc.id)
                )
                or 1
            )
            old = np.asarray(inc.centroid, dtype=np.float32)
            mixed = centroid([old * n, vector])
            if mixed is not None:
                inc.centroid = [float(x) for x in mixed]
        inc.updated_at = self.d.now
        self.card_soon(inc)
        self.list_soon(inc)
        self.d.decided("surges.attached ticket=%d incident=%d by=%s", ticket.id, inc.id, actor)

    def _due(self) -> tuple[int, datetime]:
        n = bucket(self.d.now, self.cfg.update_seconds)
        # A second past the bucket's end: a step that committed late in the bucket is in.
        return n, bucket_bounds(n, self.cfg.update_seconds)[1] + timedelta(seconds=1)

    def card_soon(self, inc: Incident) -> None:
        """Bring the incident card up to date, at most once per ``update_seconds``."""
        n, due = self._due()
        self.d.fx.say(
            Outbound(
                channel="slack",
                kind="slack_card_update",
                destination=inc.slack_channel,
                incident_id=inc.id,
            ),
            key=f"incident:{inc.id}:update:{n}",
            due=due,
        )

    def list_soon(self, inc: Incident) -> None:
        """List the tickets attached during this time bucket in the incident's thread."""
        n, due = self._due()
        self.d.fx.say(
            Outbound(
                channel="slack",
                kind="slack_thread",
                destination=inc.slack_channel,
                incident_id=inc.id,
                incident_bucket=n,
            ),
            key=f"incident:{inc.id}:list:{n}",
            due=due,
        )

    def say_in_thread(self, inc: Incident, text: str) -> None:
        self.d.fx.say(
            Outbound(
                channel="slack",
                kind="slack_thread",
                destination=inc.slack_channel,
                incident_id=inc.id,
                text=text,
            )
        )


def _summary(text: str) -> str:
    text = " ".join(text.split()) or "(no text)"
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


# -- rendering, when the outbox sends --------------------------------------------------------


class NothingToSay(Exception):
    """A batch whose tickets all left the incident before it was posted."""


class NotPosted(Exception):
    """The incident card has no ts yet (or never got one)."""


async def render(session: AsyncSession, rules: Rules, out: Outbound) -> Outbound:
    inc = await session.get(Incident, out.incident_id)
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
    if out.kind == "slack_thread" and out.incident_bucket is not None:
        start, end = bucket_bounds(out.incident_bucket, rules.surges.update_seconds)
        rows = (
            await session.execute(
                select(Ticket.id, Ticket.channel, Customer.name, Ticket.subject)
                .join(TicketEvent, TicketEvent.ticket_id == Ticket.id)
                .join(Customer, Customer.id == Ticket.customer_id)
                .where(
                    TicketEvent.kind == "incident",
                    TicketEvent.to_value == f"#{inc.id}",
                    TicketEvent.at >= start,
                    TicketEvent.at < end,
                )
                .order_by(Ticket.id)
            )
        ).all()
        if not rows:
            raise NothingToSay()
        lines = [
            f"• #{tid} · {escape(name[:80])} via {CHANNEL_NAME.get(ch, ch)}: "
            f"{escape(_summary(subject))}"
            for tid, ch, name, subject in rows[:LIST_LIMIT]
        ]
        more = len(rows) - LIST_LIMIT
        head = f"📎 {len(rows)} ticket{'s' if len(rows) != 1 else ''} attached:"
        tail = [f"…and {more} more (see `/desk` or the tickets' history)."] if more > 0 else []
        return out.model_copy(update={**where, "text": "\n".join([head, *lines, *tail])})
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
    from bot.incident_cards import IncidentView, incident_blocks, incident_text

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
            .where(Ticket.incident_id == inc.id, Ticket.status.in_(("new", "open", "pending")))
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
