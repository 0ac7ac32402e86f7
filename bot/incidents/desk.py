"""Incidents in the desk: a surge of alike new tickets becomes one card, answered in one go.

:mod:`bot.domain.surge` decides (pure); this module does it inside the dispatcher's transaction.
A new ticket's signature (its urgent keyword, its intent, the encoder's vector of its first
message) is stored; while the team's ``surge_locks`` row is held (``FOR UPDATE``; SQLite has
one writer anyway) the ticket is matched against the team's open incidents and its recent
tickets, so two processes never open two incidents for one surge.

The incident card and the lists of attached tickets in its thread are *rendered when sent*
(:mod:`bot.incidents.render`): the outbox row only names the incident, and at most one pending
update and one pending list per incident, each due ``surges.update_seconds`` after it was
queued, keep the card current without one ``chat.update`` (or one thread post) per attached ticket.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.assignment import seat
from bot.core.step import DeliveryRecorded, Step, TicketReopened
from bot.domain.classifier import Classification
from bot.domain.mrkdwn import conversation_summary, escape
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from bot.domain.surge import MEMBERS, OpenIncident, Seen, decide, joined
from bot.domain.tickets import ACTIVE
from storage.models import Customer, Incident, Message, OutboxRow, SurgeSignature, Ticket
from storage.queues import lock_key_row
from storage.rows import insert_row

KEYWORD_REASON = re.compile(r"^keyword '(.+)' → urgent$")
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


def _vec(data: Sequence[Any] | None) -> np.ndarray | None:
    return None if data is None else np.asarray(data, dtype=np.float32)


class IncidentDesk:
    def __init__(self, desk: Step) -> None:
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
        await insert_row(  # written now, without the ORM's flush (storage/rows.py)
            self.s,
            SurgeSignature(
                ticket_id=ticket.id,
                team=ticket.team,
                at=self.d.now,
                keyword=keyword,
                intent=intent,  # kept for the record; grouping goes by the vector
                vector=vector,
            ),
        )
        if keyword is None and vector is None:
            return None  # nothing to match it by
        # One decision at a time per team, across processes: the row stays locked to commit.
        await lock_key_row(self.s, ticket.team, self.d.now)
        new = Seen(ticket.id, self.d.now, ticket.team, keyword, _vec(vector))
        open_rows = (
            await self.s.scalars(
                select(Incident)
                .where(Incident.team == ticket.team, Incident.status == "open")
                .order_by(Incident.id)
            )
        ).all()
        incidents = [
            OpenIncident(i.id, i.team, i.keyword, _vec(i.centroid), await self._members(i))
            for i in open_rows
        ]
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
                    Ticket.status.in_(ACTIVE),
                )
            )
        ).scalars()
        recent = [Seen(r.ticket_id, r.at, r.team, r.keyword, _vec(r.vector)) for r in rows]
        # Decided in lock order, which may differ from the order of the steps' clocks: a step
        # that waited for the lock counts what committed meanwhile, later clocks included.
        latest = max((r.at for r in recent), default=new.at)
        new = dataclasses.replace(new, at=max(new.at, latest))
        decision = decide(new, recent, incidents, self.cfg)
        vectors = {r.ticket_id: r.vector for r in recent}
        if decision.action == "attach" and decision.incident_id is not None:
            inc = await self.s.get_one(Incident, decision.incident_id, with_for_update=True)
            for tid in decision.together:  # another wording of its problem, several at once
                other = await self.s.get_one(Ticket, tid, with_for_update=True)
                await self.attach(
                    inc, other, "desk", decision.why, only=False, vector=vectors.get(tid)
                )
                self.d.thread(other, f"🚨 Part of incident #{inc.id} ({escape(decision.why)}).")
            await self.attach(inc, ticket, "desk", decision.why, only=True, vector=new.vector)
            return inc
        if decision.action != "open":
            return None
        by_keyword = decision.why.startswith("shared urgent word")
        mean = decision.centroid
        inc = Incident(
            team=ticket.team,
            slack_channel=ticket.slack_channel,
            status="open",
            keyword=keyword if by_keyword else None,
            intent=None,
            centroid=None if mean is None else [float(x) for x in mean],
            summary="",
            why=decision.why,
            opened_at=self.d.now,
            updated_at=self.d.now,
        )
        self.s.add(inc)
        await self.s.flush()
        first = await self.s.get_one(Ticket, min(decision.together))
        inc.summary = summary(first.subject)
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

    async def _members(self, inc: Incident) -> tuple[np.ndarray, ...]:
        """The vectors of an incident's most recent tickets (``MEMBERS`` of them)."""
        rows = (
            await self.s.scalars(
                select(SurgeSignature.vector)
                .join(Ticket, Ticket.id == SurgeSignature.ticket_id)
                .where(Ticket.incident_id == inc.id, SurgeSignature.vector.is_not(None))
                .order_by(SurgeSignature.at.desc(), SurgeSignature.ticket_id.desc())
                .limit(MEMBERS)
            )
        ).all()
        return tuple(v for v in (_vec(r) for r in rows) if v is not None)

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
        if vector is not None:
            n = int(
                await self.s.scalar(
                    select(func.count()).select_from(Ticket).where(Ticket.incident_id == inc.id)
                )
                or 1
            )
            old = _vec(inc.centroid)
            mixed = joined(old, n - 1, vector)  # n counts this ticket already (flushed above)
            if mixed is not None:
                inc.centroid = [float(x) for x in mixed]
        inc.updated_at = self.d.now
        ticket.incident_listed = None  # listed in this incident's thread by the next list post
        await self.card_soon(inc)
        await self.list_soon(inc)
        self.d.decided("surges.attached ticket=%d incident=%d by=%s", ticket.id, inc.id, actor)

    async def _soon(self, inc: Incident, what: str, out: Outbound) -> None:
        """Queue ``out`` in ``update_seconds``, unless one like it is still waiting: at most one
        card update and one list post per incident are pending at a time. The incident row is
        locked by whoever calls this (and by the outbox when it draws the post), so a post drawn
        before this step commits cannot miss what the step did: either it waits for the commit,
        or it was claimed already and this step queues the next one."""
        mark = f"{inc.id}:{what}"
        if mark in self.d.fx.soon:
            return
        waiting = await self.s.scalar(
            select(OutboxRow.id)
            .where(
                OutboxRow.destination_key == f"slack:incident:{inc.id}",
                OutboxRow.status == "pending",
                OutboxRow.idempotency_key.like(f"incident:{inc.id}:{what}:%"),
            )
            .limit(1)
        )
        self.d.fx.soon.add(mark)
        if waiting is not None:
            return
        self.d.fx.say(
            out,
            # Unique: a step that commits queues it once; one rolled back queued nothing.
            key=f"incident:{inc.id}:{what}:{uuid.uuid4().hex}",
            due=self.d.now + timedelta(seconds=self.cfg.update_seconds),
        )

    async def card_soon(self, inc: Incident) -> None:
        """Bring the incident card up to date, at most once per ``update_seconds``."""
        out = Outbound(
            channel="slack",
            kind="slack_card_update",
            destination=inc.slack_channel,
            incident_id=inc.id,
        )
        await self._soon(inc, "update", out)

    async def list_soon(self, inc: Incident) -> None:
        """List the tickets attached since the last list, in one post in the incident's thread."""
        out = Outbound(
            channel="slack",
            kind="slack_thread",
            destination=inc.slack_channel,
            incident_id=inc.id,
            incident_list=True,
        )
        await self._soon(inc, "list", out)

    # -- agents' actions -------------------------------------------------------------------

    def finish(self, inc: Incident, status: str, user_id: str) -> None:
        inc.status = status
        inc.closed_at = self.d.now
        inc.closed_by = user_id
        inc.updated_at = self.d.now
        self.card_now(inc)
        self.d.decided("surges.incident_%s incident=%d by=%s", status, inc.id, user_id)

    def card_now(self, inc: Incident) -> None:
        """An update of the card at once (a person's action: they want to see it)."""
        self.d.fx.say(
            Outbound(
                channel="slack",
                kind="slack_card_update",
                destination=inc.slack_channel,
                incident_id=inc.id,
            )
        )

    async def release(self, ticket: Ticket, inc: Incident, actor: str, why: str) -> None:
        """Take a ticket out of its incident; one shown only there gets a card of its own,
        with the conversation so far in its thread."""
        only = ticket.incident_only
        ticket.incident_id = None
        ticket.incident_only = False
        ticket.updated_at = self.d.now
        self.d.history(ticket, "incident", actor, f"#{inc.id}", None, why)
        self.d.decided("surges.detached ticket=%d incident=%d by=%s", ticket.id, inc.id, actor)
        if not only or ticket.status not in ACTIVE:
            return
        await seat(self.d, ticket)
        customer = await self.s.get_one(Customer, ticket.customer_id)
        said = (
            await self.s.scalars(
                select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
            )
        ).all()
        head = f"🧩 Out of incident #{inc.id}: {escape(why)}."
        self.d.thread(ticket, conversation_summary(customer.name, said, head=head))

    async def reopened(self, ticket: Ticket) -> None:
        """A ticket shown only on an incident that the customer reopened: alone from now on."""
        inc = await self.s.get(Incident, ticket.incident_id or -1, with_for_update=True)
        if inc is None or inc.status == "open":
            return  # still part of an open incident (merged or attached again by hand)
        await self.release(ticket, inc, "customer", "the customer wrote again after it ended")

    async def reply_all(self, inc: Incident, user_id: str, texts: dict[str, str]) -> None:
        """One message per attached customer, in their language, on their own channel: each
        an outbox row exactly like an agent's reply in a ticket's thread."""
        default = self.rules.texts.default_language
        fallback = texts.get(default) or next((t for t in texts.values() if t.strip()), "")
        if not fallback.strip():
            return
        members = await incident_members(self.s, inc)
        inc.reply_at = self.d.now
        by_language: dict[str, int] = {}
        for ticket in members:
            language = (ticket.language or default).lower().split("-")[0]
            if not (texts.get(language) or "").strip():
                language = default  # no text in their language: the default language's
            text = (texts.get(language) or fallback).strip()
            by_language[language] = by_language.get(language, 0) + 1
            msg = Message(
                ticket_id=ticket.id,
                direction="out",
                author=user_id,
                channel=ticket.channel,
                text=text,
                delivery="pending",
                purpose="incident_reply",
                created_at=self.d.now,
            )
            self.s.add(msg)
            await self.s.flush()
            if ticket.first_response_at is None:
                ticket.first_response_at = self.d.now
            if ticket.status in ("new", "open"):
                self.d.set_status(
                    ticket, "pending", user_id, f"reply to all affected (incident #{inc.id})"
                )
            ticket.updated_at = self.d.now
            self.d.history(ticket, "incident_reply", user_id, None, f"#{inc.id}", "")
            self.d.tell_customer(ticket, text, message=msg)
        self.card_now(inc)
        lines = [f"📣 <@{user_id}> replied to all {len(members)} affected customers:"]
        for language, count in sorted(by_language.items()):
            lines.append(f"*{language}* ({count}): {escape(texts.get(language) or fallback)}")
        self.say_in_thread(inc, "\n".join(lines))
        self.d.decided(
            "surges.reply_all incident=%d by=%s customers=%d", inc.id, user_id, len(members)
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


def summary(text: str) -> str:
    text = " ".join(text.split()) or "(no text)"
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


async def incident_members(
    s: AsyncSession, inc: Incident, active_only: bool = False
) -> list[Ticket]:
    stmt = select(Ticket).where(Ticket.incident_id == inc.id).order_by(Ticket.id)
    if active_only:
        stmt = stmt.where(Ticket.status.in_(ACTIVE))
    return list((await s.scalars(stmt.with_for_update())).all())


# -- what the core asks, and what it tells ---------------------------------------------------


class IncidentPlacer:
    """Implements :class:`bot.core.step.Placer`."""

    async def place(self, step: Step, ticket: Ticket, cls: Classification) -> Incident | None:
        return await IncidentDesk(step).place(ticket, cls)


async def on_reopened(step: Step, event: TicketReopened) -> None:
    """A ticket shown only on an ended incident, reopened by its customer, goes on alone."""
    if event.ticket.incident_only:
        await IncidentDesk(step).reopened(event.ticket)


async def on_delivered(step: Step, event: DeliveryRecorded) -> None:
    """Progress of a Reply to all affected, on the incident card (throttled)."""
    message, ticket = event.message, event.ticket
    if message is None or message.purpose != "incident_reply" or ticket is None:
        return
    incident = await step.s.get(Incident, ticket.incident_id or -1, with_for_update=True)
    if incident is not None:
        await IncidentDesk(step).card_soon(incident)
