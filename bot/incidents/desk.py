"""Incidents in the desk: a surge of alike new tickets becomes one card, answered in one go.

:mod:`bot.domain.surge` decides (pure); this module does it inside the dispatcher's transaction.
A new ticket's signature (its urgent keyword, its intent, the encoder's vector of its first
message) is stored; while the team's ``surge_locks`` row is held (``FOR UPDATE``; SQLite has
one writer anyway) the ticket is matched against the team's open incidents and its recent
tickets, so two processes never open two incidents for one surge.

The incident card and the lists of attached tickets in its thread are *rendered when sent*
(:func:`render`): the outbox row only names the incident, and at most one pending update and
one pending list per incident, each due ``surges.update_seconds`` after it was queued, keep the
card current without one ``chat.update`` (or one thread post) per attached ticket.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.classifier import Classification
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from bot.domain.surge import OpenIncident, Seen, centroid, decide
from bot.workspace.cards import CHANNEL_NAME, escape
from storage.models import Customer, Incident, Message, OutboxRow, SurgeSignature, Ticket
from storage.queues import lock_key_row, outbox_add

if TYPE_CHECKING:
    from bot.core.tickets import Desk

KEYWORD_REASON = re.compile(r"^keyword '(.+)' → urgent$")
EXAMPLES = 3
LIST_LIMIT = 40  # tickets named in one thread post (about 4,000 characters); more: more posts
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
        # Decided in lock order, which may differ from the order of the steps' clocks: a step
        # that waited for the lock counts what committed meanwhile, later clocks included.
        latest = max((r.at for r in recent), default=new.at)
        new = dataclasses.replace(new, at=max(new.at, latest))
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

    async def action(self, ev: Any) -> None:
        """An agent's Reply to all affected, Resolve incident or Close (an AgentAction)."""
        await incident_action(self, ev)

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
        from bot.core.assignment import Assigner
        from bot.sla.keeper import SlaKeeper
        from bot.workspace.cards import conversation_summary

        only = ticket.incident_only
        ticket.incident_id = None
        ticket.incident_only = False
        ticket.updated_at = self.d.now
        self.d.history(ticket, "incident", actor, f"#{inc.id}", None, why)
        self.d.decided("surges.detached ticket=%d incident=%d by=%s", ticket.id, inc.id, actor)
        if not only or ticket.status not in ACTIVE:
            return
        await Assigner(self.d).assign(ticket, announce=False)
        await SlaKeeper(self.d).refresh(ticket)
        await self.d.post_card(ticket)
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
        members = await _members(self.s, inc)
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


def _summary(text: str) -> str:
    text = " ".join(text.split()) or "(no text)"
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


# -- rendering, when the outbox sends --------------------------------------------------------


class NothingToSay(Exception):
    """A batch whose tickets all left the incident before it was posted."""


class NotPosted(Exception):
    """The incident card has no ts yet (or never got one)."""


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
            f"{escape(_summary(subject))}"
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
    from bot.incidents.cards import IncidentView, incident_blocks, incident_text

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


# -- what agents do with an incident ---------------------------------------------------------

ACTIVE = ("new", "open", "pending")


async def _members(s: AsyncSession, inc: Incident, active_only: bool = False) -> list[Ticket]:
    stmt = select(Ticket).where(Ticket.incident_id == inc.id).order_by(Ticket.id)
    if active_only:
        stmt = stmt.where(Ticket.status.in_(ACTIVE))
    return list((await s.scalars(stmt.with_for_update())).all())


async def _may_act(desk: Desk, inc: Incident, user_id: str) -> bool:
    from bot.core.roles import has_role

    team = desk.rules.team(inc.team)
    if not team.agents or user_id in team.agents or team.lead == user_id:
        return True
    return await has_role(desk.s, desk.rules, user_id, "supervisor")


def _refuse(desk: Desk, response_url: str | None, text: str) -> None:
    if response_url:
        desk.fx.say(
            Outbound(channel="slack", kind="slack_response", destination=response_url, text=text)
        )


async def incident_action(idesk: IncidentDesk, ev: Any) -> None:
    desk = idesk.d
    inc = await desk.s.get(Incident, ev.incident_id, with_for_update=True)
    if inc is None:
        return
    if inc.status != "open":
        _refuse(desk, ev.response_url, f"Incident #{inc.id} is {inc.status} already.")
        return
    if not await _may_act(desk, inc, ev.user_id):
        _refuse(
            desk,
            ev.response_url,
            f"Incident #{inc.id} belongs to team {inc.team}: only its agents, its lead or a"
            " supervisor can act on it. Nothing was done.",
        )
        return
    who = f"<@{ev.user_id}>"
    if ev.action == "incident_reply":
        await idesk.reply_all(inc, ev.user_id, dict(ev.texts))
    elif ev.action == "incident_resolve":
        members = await _members(desk.s, inc, active_only=True)
        for ticket in members:
            await desk.resolve(ticket, ev.user_id, ev.user_name, f"incident #{inc.id} resolved")
        idesk.finish(inc, "resolved", ev.user_id)
        idesk.say_in_thread(
            inc, f"✅ {who} resolved the incident and its {len(members)} open tickets."
        )
    elif ev.action == "incident_close":
        members = await _members(desk.s, inc, active_only=True)
        for ticket in members:
            await idesk.release(ticket, inc, ev.user_id, f"incident #{inc.id} closed")
        idesk.finish(inc, "closed", ev.user_id)
        idesk.say_in_thread(
            inc,
            f"🗂️ {who} closed the incident without resolving its tickets; its {len(members)}"
            " open tickets are handled one by one now (those without a card got one).",
        )


INCIDENT_HELP = (
    "agents: `detach 123` (ticket #123 leaves its incident and gets its own card),"
    " `attach 123 7` (ticket #123 joins incident #7), `merge 7 8` (incident #7 into #8)"
)


async def incident_command(desk: Desk, user_id: str, args: str) -> str:
    """``/desk incident detach|attach|merge``: the by-hand changes to incidents."""
    words = args.lower().replace("#", "").split()
    if not words or not all(w.isdigit() for w in words[1:]):
        return f"`/desk incident`: {INCIDENT_HELP}."
    verb, numbers = words[0], [int(w) for w in words[1:]]
    idesk = IncidentDesk(desk)
    who = f"<@{user_id}>"
    if verb == "detach" and len(numbers) == 1:
        ticket = await desk.s.get(Ticket, numbers[0], with_for_update=True)
        if ticket is None or ticket.incident_id is None:
            return f"Ticket #{numbers[0]} is not part of an incident; nothing was done."
        inc = await desk.s.get_one(Incident, ticket.incident_id, with_for_update=True)
        if not await _may_act(desk, inc, user_id):
            return f"Incident #{inc.id} is team {inc.team}'s; nothing was done."
        await idesk.release(ticket, inc, user_id, f"detached by {who}")
        idesk.card_now(inc)
        idesk.say_in_thread(inc, f"🧩 {who} detached ticket #{ticket.id}; it has its own card.")
        return f"Ticket #{ticket.id} left incident #{inc.id}."
    if verb == "attach" and len(numbers) == 2:
        ticket = await desk.s.get(Ticket, numbers[0], with_for_update=True)
        target = await desk.s.get(Incident, numbers[1], with_for_update=True)
        if ticket is None or target is None or target.status != "open":
            return "No such ticket, or no such open incident; nothing was done."
        inc = target
        if not await _may_act(desk, inc, user_id):
            return f"Incident #{inc.id} is team {inc.team}'s; nothing was done."
        if ticket.incident_id == inc.id:
            return f"Ticket #{ticket.id} is part of incident #{inc.id} already."
        if ticket.incident_id is not None:
            old = await desk.s.get_one(Incident, ticket.incident_id, with_for_update=True)
            desk.history(ticket, "incident", user_id, f"#{old.id}", None, "moved by hand")
            ticket.incident_id = None
            idesk.card_now(old)
        # It keeps the card it has; one shown only on the other incident stays card-less.
        await idesk.attach(inc, ticket, user_id, f"attached by {who}", only=ticket.incident_only)
        if not ticket.incident_only:
            desk.thread(ticket, f"🚨 {who} attached this ticket to incident #{inc.id}.")
        idesk.card_now(inc)
        return f"Ticket #{ticket.id} is part of incident #{inc.id} now."
    if verb == "merge" and len(numbers) == 2 and numbers[0] != numbers[1]:
        a = await desk.s.get(Incident, numbers[0], with_for_update=True)
        b = await desk.s.get(Incident, numbers[1], with_for_update=True)
        if a is None or b is None or a.status != "open" or b.status != "open":
            return "Both incidents must exist and be open; nothing was done."
        if not (await _may_act(desk, a, user_id) and await _may_act(desk, b, user_id)):
            return "Only the incidents' teams can merge them; nothing was done."
        moved = await _members(desk.s, a)
        for ticket in moved:
            desk.history(ticket, "incident", user_id, f"#{a.id}", None, f"merged into #{b.id}")
            await idesk.attach(
                b, ticket, user_id, f"incident #{a.id} merged by {who}", only=ticket.incident_only
            )
        a.status = "merged"
        a.merged_into = b.id
        a.closed_at = desk.now
        a.closed_by = user_id
        idesk.card_now(a)
        idesk.card_now(b)
        idesk.say_in_thread(a, f"🔀 {who} merged this incident into incident #{b.id}.")
        idesk.say_in_thread(
            b, f"🔀 {who} merged incident #{a.id} into this one ({len(moved)} tickets)."
        )
        desk.decided("surges.merged incident=%d into=%d by=%s", a.id, b.id, user_id)
        return f"Incident #{a.id} ({len(moved)} tickets) is part of incident #{b.id} now."
    return f"`/desk incident`: {INCIDENT_HELP}."


async def incident_languages(
    sessions: Any, rules: Rules, incident_id: int
) -> dict[str, int] | None:
    """How many of an open incident's customers speak each language the desk has texts in
    (others are counted under the default language): the Reply to all affected modal."""
    default = rules.texts.default_language
    async with sessions() as session:
        inc = await session.get(Incident, incident_id)
        if inc is None or inc.status != "open":
            return None
        rows = (
            await session.execute(
                select(Ticket.language, func.count())
                .where(Ticket.incident_id == incident_id)
                .group_by(Ticket.language)
            )
        ).all()
    counts: dict[str, int] = {}
    for language, n in rows:
        tag = (language or default).lower().split("-")[0]
        tag = tag if tag in rules.texts.languages else default
        counts[tag] = counts.get(tag, 0) + int(n)
    return counts
