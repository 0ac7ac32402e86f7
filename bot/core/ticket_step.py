"""A step that works on tickets: the lookups and moves both sides of the desk share.

:class:`TicketStep` is the base of the state machine's two halves (``customer_side``,
``agent_side``), which :class:`bot.core.tickets.Desk` puts together.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, func, select

from bot.core.assignment import Assigner
from bot.core.step import Step
from bot.domain.events import CustomerMessage, Sender
from bot.domain.language import AGREEING, language_to_keep, primary
from nlp.language import detect_language
from storage.crypto import address_forms
from storage.models import Customer, Identity, Message, OutboxRow, Ticket, TicketEvent
from storage.rows import insert_row
from storage.statements import Statement, address_in

# A customer message's reads, built and compiled once (storage/statements.py).
_IDENTITY_AND_CUSTOMER = Statement(
    select(Identity, Customer)
    .join(Customer, Customer.id == Identity.customer_id)
    .where(Identity.channel == bindparam("channel"), address_in(Identity.external_id, "sender"))
)
_LATEST_TICKET = Statement(
    select(Ticket)
    .where(Ticket.channel == bindparam("channel"), address_in(Ticket.chat_id, "chat"))
    .order_by(Ticket.id.desc())
    .limit(1)
    .with_for_update()
)


class TooEarly(Exception):
    """An event about something this desk is still recording (another transaction, or a send
    whose outcome a dead process left unknown): the dispatcher tries it again shortly."""


class StatusTooEarly(TooEarly):
    """A delivery status arrived while the send it reports on is still being recorded."""


class CardTooEarly(TooEarly):
    """An agent wrote in a card's thread before the card's ts was recorded (Slack answered
    the post, but the transaction that records it has not committed yet, or its process died
    and the card is about to be found by its metadata). Dropping the message would lose the
    agent's reply without a trace."""


class TicketStep(Step):
    async def identity(
        self, channel: str, sender: Sender, chat_id: str, language: str | None = None
    ) -> Identity:
        """The sender's identity (and customer), made on first contact. ``language`` is the
        language to keep for the customer, as :meth:`kept_language` decided from their message;
        without it the platform's hint only fills a language the customer does not have yet, so
        a /start, a button or one short message never undoes a language read from what they
        wrote."""
        key = (channel, sender.external_id)
        if key in self.read_identity:  # read a moment ago by kept_language, in this step
            ident = self.read_identity.pop(key)
        else:
            ident = await self.s.scalar(
                select(Identity).where(
                    Identity.channel == channel, Identity.external_id == sender.external_id
                )
            )
        if ident is None:
            customer = Customer(
                name=sender.name or sender.username or sender.external_id,
                language=language or sender.language,
                created_at=self.now,
            )
            await insert_row(self.s, customer)  # ids at once, without the ORM's flush
            ident = Identity(
                customer_id=customer.id,
                channel=channel,
                external_id=sender.external_id,
                chat_id=chat_id,
                username=sender.username,
                phone=sender.phone,
                last_inbound_at=self.customer_wrote_at,
            )
            await insert_row(self.s, ident)
            self.made.customers[customer.id] = ident
        else:
            customer = await self.s.get_one(Customer, ident.customer_id)
            if sender.name and customer.name != sender.name:
                customer.name = sender.name
            if language and customer.language != language:
                customer.language = language
            elif sender.language and customer.language is None:
                customer.language = sender.language
            ident.chat_id = chat_id
            ident.blocked = False  # they wrote to us, so they can hear us again
        return ident

    async def kept_language(self, ev: CustomerMessage, detected: str | None) -> str | None:
        """What to pass :meth:`identity` for a message: the language to keep for the customer
        from now on, or None to leave theirs alone (:func:`bot.domain.language.language_to_keep`:
        one short message never changes it)."""
        # The identity and its customer in one statement; identity() takes it from here.
        found = await _IDENTITY_AND_CUSTOMER.first(
            self.s, channel=ev.channel, sender=address_forms(ev.sender.external_id)
        )
        self.read_identity[(ev.channel, ev.sender.external_id)] = found[0] if found else None
        kept = found[1].language if found else None
        hint = ev.sender.language
        if kept is None or detected is None or primary(kept) == detected:
            return language_to_keep(kept, hint, detected, ev.text)
        # A short message in another language: do the ones before it agree? Re-read (a few
        # milliseconds each) only in this case, and only as many as it takes.
        texts = await self.s.scalars(
            select(Message.text)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .join(Identity, Identity.customer_id == Ticket.customer_id)
            .where(
                Identity.channel == ev.channel,
                Identity.external_id == ev.sender.external_id,
                Message.direction == "in",
                Message.text != "",
            )
            .order_by(Message.id.desc())
            .limit(AGREEING - 1)
        )
        spoken = self.rules.spoken_languages()
        earlier = [detect_language(text, spoken) for text in texts]
        return language_to_keep(kept, hint, detected, ev.text, earlier)

    async def latest_ticket(self, channel: str, chat_id: str) -> Ticket | None:
        ticket: Ticket | None = await _LATEST_TICKET.scalar(
            self.s, channel=channel, chat=address_forms(chat_id)
        )
        return ticket

    async def recent_ticket_count(self, customer_id: int, hours: float) -> int:
        since = self.now - timedelta(hours=hours)
        return int(
            await self.s.scalar(
                select(func.count())
                .select_from(Ticket)
                .where(Ticket.customer_id == customer_id, Ticket.created_at >= since)
            )
            or 0
        )

    async def ticket_by_card(self, slack_channel: str, thread_ts: str) -> Ticket | None:
        return await self.s.scalar(
            select(Ticket)
            .where(Ticket.slack_channel == slack_channel, Ticket.slack_ts == thread_ts)
            .with_for_update()
        )

    async def ticket_by_former_card(self, slack_channel: str, ts: str) -> Ticket | None:
        """The ticket whose card was at ``slack_channel``/``ts`` before the desk replaced it
        (a transfer posts a new card; a card someone deleted is posted again)."""
        posted = await self.s.execute(
            select(OutboxRow.ticket_id, OutboxRow.payload).where(
                OutboxRow.platform_message_id == ts,
                OutboxRow.channel == "slack",
                OutboxRow.ticket_id.is_not(None),
            )
        )
        for ticket_id, payload in posted.all():
            if payload.get("kind") == "slack_card" and payload.get("destination") == slack_channel:
                return await self.s.get(Ticket, ticket_id, with_for_update=True)
        reposted = await self.s.scalar(
            select(TicketEvent.ticket_id)
            .where(TicketEvent.kind == "card", TicketEvent.from_value == f"{slack_channel}/{ts}")
            .limit(1)
        )
        if reposted is not None:
            return await self.s.get(Ticket, reposted, with_for_update=True)
        return None

    async def _card_in_flight(self, slack_channel: str) -> bool:
        """Is a card being posted to this channel whose ts is not recorded yet?"""
        return (
            await self.s.scalar(
                select(OutboxRow.id)
                .join(Ticket, Ticket.id == OutboxRow.ticket_id)
                .where(
                    Ticket.slack_channel == slack_channel,
                    Ticket.slack_ts.is_(None),
                    OutboxRow.channel == "slack",
                    OutboxRow.status.in_(("pending", "sending")),
                )
                .limit(1)
            )
            is not None
        )

    def _assign(self, ticket: Ticket, user_id: str, name: str, reason: str, code: str) -> None:
        """``reason`` goes to the history for people; ``code`` is the log's one-word reason."""
        self.history(ticket, "assignee", user_id, ticket.assignee_id, user_id, reason)
        ticket.assignee_id = user_id
        ticket.assignee_name = name or None
        ticket.assigned_by = user_id
        ticket.waiting_reason = None
        self.decided("tickets.assigned ticket=%d agent=%s reason=%s", ticket.id, user_id, code)

    async def _capacity_freed(self, agent: str | None) -> None:
        """The agent holds one open ticket fewer: give waiting tickets of their teams out."""
        if agent is not None:
            await Assigner(self).fill(self.rules.teams_of(agent))


def cap_first(text: str) -> str:
    return text[:1].upper() + text[1:]
