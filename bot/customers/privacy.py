"""A customer's data: everything held about them as JSON, and erasing it on request.

Forgetting keeps what the reports count and nothing that names or quotes the person: tickets
keep their timestamps, status, priority, team, assignee, intent and rating (so last month's
figures do not change), while names, usernames, phone numbers, platform ids, message texts and
attachments, edits, raw platform payloads in the inbox and what the outbox carried to them are
erased. The desk keeps no copy of a customer's files (the outbox fetches them from the platform
when it sends); the copies it uploaded into Slack threads are deleted with ``files.delete``.
In Slack, the ticket cards are redrawn without the name and the first message, and every
message the desk posted in their threads is replaced by a note with ``chat.update``. Messages
that agents wrote in those threads are theirs, and Slack lets an app edit only its own: the
README says so, and the confirmation lists how many there are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.repeat import repeat
from bot.core.tickets import Desk
from bot.customers import email_link
from bot.domain.mail import conversation_of
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from storage import crypto
from storage.models import (
    Customer,
    EmailMessageId,
    EmailThread,
    Identity,
    InboxRow,
    KbSuggestion,
    Message,
    OutboxRow,
    Ticket,
    TicketEvent,
)

log = logging.getLogger("deskbot.privacy")

ERASED = "(erased at the customer's request)"
FORGOTTEN_NAME = "Forgotten customer"
# Ticket events whose values are codes, not words the customer wrote; the rest are erased.
CODED_EVENTS = frozenset({"created", "status", "assignee", "priority", "team", "rating"})


class NotFound(LookupError):
    """No customer answers to what was asked."""


async def find_customer(session: AsyncSession, ref: str) -> Customer:
    """``#123`` or ``123`` is a ticket number (its customer is meant); ``c45`` a customer id."""
    text = ref.strip().lower().removeprefix("#")
    if text.startswith("c") and text[1:].isdigit():
        customer = await session.get(Customer, int(text[1:]))
    elif text.isdigit():
        ticket = await session.get(Ticket, int(text))
        customer = await session.get(Customer, ticket.customer_id) if ticket else None
    else:
        raise NotFound(f"`{ref}` is neither a ticket number (`123`) nor a customer (`c45`)")
    if customer is None:
        raise NotFound(f"no customer for `{ref}`")
    return customer


async def _tickets(session: AsyncSession, customer_id: int) -> list[Ticket]:
    rows = await session.scalars(
        select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.id)
    )
    return list(rows.all())


async def _identities(session: AsyncSession, customer_id: int) -> list[Identity]:
    rows = await session.scalars(
        select(Identity).where(Identity.customer_id == customer_id).order_by(Identity.id)
    )
    return list(rows.all())


def _conversations(identities: list[Identity], tickets: list[Ticket]) -> list[str]:
    """The inbox conversations that carry this customer's words: their chats, and the threads
    of their tickets' cards (agents' messages about them)."""
    keys = {f"{i.channel}:{i.chat_id}" for i in identities}
    keys |= {f"slack:{t.slack_channel}:{t.slack_ts}" for t in tickets if t.slack_ts}
    # An email customer's mail is ordered by their address (adapters/email), not by thread.
    keys |= {conversation_of(i.external_id) for i in identities if i.channel == "email"}
    return sorted(keys)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export(session: AsyncSession, customer: Customer) -> dict[str, Any]:
    """Everything the desk holds about ``customer``, as plain JSON-able data."""
    identities = await _identities(session, customer.id)
    tickets = await _tickets(session, customer.id)
    ids = [t.id for t in tickets]
    messages = (
        (
            await session.scalars(
                select(Message).where(Message.ticket_id.in_(ids)).order_by(Message.id)
            )
        ).all()
        if ids
        else []
    )
    events = (
        (
            await session.scalars(
                select(TicketEvent).where(TicketEvent.ticket_id.in_(ids)).order_by(TicketEvent.id)
            )
        ).all()
        if ids
        else []
    )
    inbox = (
        await session.scalars(
            select(InboxRow)
            .where(InboxRow.conversation.in_(_conversations(identities, tickets)))
            .order_by(InboxRow.id)
        )
    ).all()
    suggested = (
        await session.scalars(
            select(KbSuggestion)
            .where(KbSuggestion.customer_id == customer.id)
            .order_by(KbSuggestion.id)
        )
    ).all()
    return {
        "customer": {
            "id": customer.id,
            "name": customer.name,
            "language": customer.language,
            "note": customer.note,  # what agents wrote about them (the History modal)
            "created_at": _when(customer.created_at),
        },
        "identities": [
            {
                "channel": i.channel,
                "external_id": i.external_id,
                "chat_id": i.chat_id,
                "username": i.username,
                "phone": i.phone,
                "blocked": i.blocked,
            }
            for i in identities
        ],
        "tickets": [
            {
                "id": t.id,
                "channel": t.channel,
                "status": t.status,
                "priority": t.priority,
                "priority_reasons": t.priority_reasons,
                "classification": t.classification,
                "team": t.team,
                "language": t.language,
                "assignee": t.assignee_id,
                "rating": t.rating,
                "created_at": _when(t.created_at),
                "first_response_at": _when(t.first_response_at),
                "resolved_at": _when(t.resolved_at),
                "messages": [
                    {
                        "direction": m.direction,
                        "author": m.author,
                        "text": m.text,
                        "attachments": m.attachments,
                        "edits": m.edits,
                        "delivery": m.delivery,
                        "purpose": m.purpose,
                        "created_at": _when(m.created_at),
                    }
                    for m in messages
                    if m.ticket_id == t.id
                ],
                "events": [
                    {
                        "kind": e.kind,
                        "actor": e.actor,
                        "from": opened(e.from_value),
                        "to": opened(e.to_value),
                        "reason": e.reason,
                        "at": _when(e.at),
                    }
                    for e in events
                    if e.ticket_id == t.id
                ],
            }
            for t in tickets
        ],
        "kb_suggestions": [
            {
                "channel": k.channel,
                "article": k.article,
                "title": k.title,
                "score": k.score,
                "message": (k.event or {}).get("text"),
                "outcome": k.outcome,
                "ticket": k.ticket_id,
                "created_at": _when(k.created_at),
                "decided_at": _when(k.decided_at),
            }
            for k in suggested
        ],
        "platform_payloads": [
            {
                "channel": r.channel,
                "kind": r.kind,
                "received_at": _when(r.received_at),
                "raw": r.raw,
            }
            for r in inbox
        ],
    }


def opened(value: str | None) -> str | None:
    """A trail value as said: an edit's texts are sealed under the data key."""
    return None if value is None else crypto.open_value(value)


def export_name(customer: Customer) -> str:
    return f"customer-c{customer.id}.json"


def export_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True)
class Held:
    """What forgetting a customer would erase (shown before, and audited after)."""

    tickets: int
    messages: int
    identities: int
    payloads: int
    agent_messages: int  # agents' own messages in the threads, which only they can delete
    ticket_refs: str = ""  # "#1, #7"


async def held(session: AsyncSession, customer: Customer) -> Held:
    identities = await _identities(session, customer.id)
    tickets = await _tickets(session, customer.id)
    ids = [t.id for t in tickets]
    messages = (
        (await session.scalars(select(Message).where(Message.ticket_id.in_(ids)))).all()
        if ids
        else []
    )
    payloads = (
        await session.scalars(
            select(InboxRow.id).where(
                InboxRow.conversation.in_(_conversations(identities, tickets))
            )
        )
    ).all()
    return Held(
        tickets=len(tickets),
        messages=sum(1 for m in messages if m.text or m.attachments),
        identities=len(identities),
        payloads=len(payloads),
        agent_messages=sum(1 for m in messages if m.slack_ts),
        ticket_refs=", ".join(f"#{t.id}" for t in tickets) or "none",
    )


async def forget(desk: Desk, customer: Customer) -> Held:
    """Erase ``customer``'s personal data in the caller's transaction; queue the redaction of
    their cards and the desk's posts in their threads. Irreversible."""
    s = desk.s
    before = await held(s, customer)
    identities = await _identities(s, customer.id)
    tickets = await _tickets(s, customer.id)
    conversations = _conversations(identities, tickets)
    ids = [t.id for t in tickets]
    mail_threads = [t.chat_id for t in tickets if t.channel == "email"]

    customer.name = FORGOTTEN_NAME
    customer.note = None  # agents' words about them go too
    for ident in identities:
        # The platform's id is the person (a WhatsApp id is their phone number); a new message
        # from them starts a new customer, which is what forgetting means.
        ident.external_id = ident.chat_id = f"forgotten-{ident.id}"
        ident.username = ident.phone = None
    for ticket in tickets:
        ticket.chat_id = f"forgotten-{ticket.id}"
        ticket.subject = ERASED
        ticket.classification = {
            k: v for k, v in (ticket.classification or {}).items() if k != "text"
        }
    if ids:
        await s.execute(
            update(Message)
            .where(Message.ticket_id.in_(ids))
            .values(text="", attachments=[], edits=[], delivery_error=None)
        )
        await s.execute(
            update(TicketEvent)
            .where(TicketEvent.ticket_id.in_(ids), TicketEvent.kind.not_in(CODED_EVENTS))
            .values(from_value=None, to_value=None, reason="")
        )
    # The order key is their address (``whatsapp:<number>``; sealed with a key, but the key
    # opens it): one that names nobody keeps their rows in one group.
    await s.execute(
        update(InboxRow)
        .where(InboxRow.conversation.in_(conversations))
        .values(payload={}, raw={}, error=None, conversation=f"forgotten:c{customer.id}")
    )
    if mail_threads:  # their address and subjects, and the Message-IDs naming their domain
        await s.execute(delete(EmailThread).where(EmailThread.chat_id.in_(mail_threads)))
        await s.execute(delete(EmailMessageId).where(EmailMessageId.chat_id.in_(mail_threads)))
    # Knowledge-base suggestions held their first message; which article, the score and the
    # outcome stay (the deflection figures). One still pending can no longer become a ticket.
    await s.execute(
        update(KbSuggestion)
        .where(KbSuggestion.customer_id == customer.id, KbSuggestion.outcome == "pending")
        .values(outcome="forgotten", decided_at=desk.now)
    )
    await s.execute(
        update(KbSuggestion)
        .where(KbSuggestion.customer_id == customer.id)
        .values(event={}, classification={}, chat_id="forgotten")
    )
    # Pending work for them is cancelled (a reply to a forgotten person cannot be sent); sent
    # rows keep only what a delivery report needs, not what was said.
    theirs = [OutboxRow.destination_key.in_(conversations)]
    if ids:
        theirs.append(OutboxRow.ticket_id.in_(ids))
    outbox = list((await s.scalars(select(OutboxRow).where(or_(*theirs)))).all())
    # Exports of this customer sent to supervisors carried all of it in the row's payload.
    slack_desk = (OutboxRow.channel == "slack", OutboxRow.ticket_id.is_(None))
    if crypto.keyring() is None:
        exports = await s.scalars(
            select(OutboxRow).where(
                *slack_desk, OutboxRow.payload["file_name"].as_string() == export_name(customer)
            )
        )
        outbox += list(exports)
    else:  # sealed payloads: the file name is compared once they are opened
        name = export_name(customer)
        candidates = await s.scalars(select(OutboxRow).where(*slack_desk))
        outbox += [r for r in candidates if (r.payload or {}).get("file_name") == name]
    # The mails that verify an address for one of their chats (/link name@example.com).
    outbox += await email_link.link_mails(s, [i.id for i in identities])
    slack_posts: list[tuple[str, str]] = []
    slack_files: list[tuple[str, str]] = []
    for row in outbox:
        payload = row.payload or {}
        if (
            row.status == "sent"
            and row.channel == "slack"
            and payload.get("kind") in ("slack_thread", "slack_post")
            and row.platform_message_id
        ):
            slack_posts.append((str(payload.get("destination", "")), row.platform_message_id))
        if (
            row.status == "sent"
            and row.channel == "slack"
            and payload.get("kind") == "slack_thread_file"
            and row.platform_message_id
        ):
            # The customer's file the desk put into Slack (the desk keeps no copy of its own).
            slack_files.append((str(payload.get("destination", "")), row.platform_message_id))
        if row.status in ("pending", "sending"):
            row.status = "failed"
            row.last_error = "cancelled: the customer's data was erased"
            row.lease_until = None
        row.payload = {
            "channel": row.channel,
            "kind": payload.get("kind"),
            "destination": ERASED if row.channel != "slack" else payload.get("destination"),
            "text": ERASED,
        }
        if row.channel != "slack":
            # A chat's key is the customer's address (a WhatsApp number, an e-mail thread).
            row.destination_key = f"{row.channel}:forgotten-{row.id}"
    for ticket in tickets:
        if ticket.slack_ts:
            await desk.refresh_card(ticket)
    for channel, ts in slack_posts:
        if not channel:
            continue
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_card_update",
                destination=channel,
                reply_to=ts,
                text=ERASED,
                blocks=({"type": "section", "text": {"type": "mrkdwn", "text": f"_{ERASED}_"}},),
            )
        )
    for channel, file_id in slack_files:
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_file_delete",
                destination=channel,
                reply_to=file_id,
                text=ERASED,  # over the message that shared it (the customer's caption)
            )
        )
    return before


class RawPurger:
    """``retention.raw_days``: the platforms' raw payloads kept in the inbox (for audit and
    replay) are erased once older than this, when their event has been dealt with. The first
    pass covers everything old enough; later passes only what has aged past the line since."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules: Rules,
        clock: Clock,
        *,
        interval: float = 3600.0,
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock
        self.interval = interval
        self._done_until: datetime | None = None

    async def run_once(self) -> int:
        days = self._rules.retention.raw_days
        if days is None:
            return 0
        cutoff = self._clock.now() - timedelta(days=days)
        where = [
            InboxRow.received_at < cutoff,
            InboxRow.status.in_(("done", "ignored", "failed")),
        ]
        if self._done_until is not None:
            # A day of overlap: rows still being processed at the last pass are taken now.
            where.append(InboxRow.received_at >= self._done_until - timedelta(days=1))
        async with self._sessions.begin() as session:
            result = await session.execute(update(InboxRow).where(*where).values(raw={}))
        self._done_until = cutoff
        purged = max(getattr(result, "rowcount", 0) or 0, 0)
        if purged:
            log.info("retention.raw_purged rows=%d older_than_days=%d", purged, days)
        return purged

    async def run(self, stop: asyncio.Event) -> None:
        if self._rules.retention.raw_days is not None:
            await repeat(self.run_once, stop, self.interval, "retention")
