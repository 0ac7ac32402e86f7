"""Which ticket an inbound mail belongs to, worked out inside the dispatcher's transaction.

Threading, in this order:

1. ``In-Reply-To`` / ``References`` naming a Message-ID the desk sent or received: that thread.
2. The ticket token in the subject (``[#123]``, a word allowed before the ``#``) of an email
   ticket of the same sender: that ticket's thread.
3. Otherwise a new thread, even when the sender has another ticket open: a new subject is a new
   request.

A thread is a chat id (``address#key``): the core's usual rules then apply to it (a message
joins the thread's active ticket, reopens a resolved one within the reopen window, or opens a
new ticket). Noise (auto-replies, bounces, the desk's own mail, a sender over the rate) is
recorded as a line in the thread's (or the sender's) open ticket and never answered.
"""

from __future__ import annotations

from sqlalchemy import select

from bot.core.tickets import Desk
from bot.domain.events import CustomerMessage, MailFacts
from bot.domain.mail import address_of, base_subject, ticket_token
from bot.domain.mrkdwn import escape
from bot.domain.prepared import Prepared
from bot.domain.tickets import ACTIVE
from storage import crypto
from storage.models import EmailMessageId, EmailThread, Identity, Ticket


async def find_thread(desk: Desk, ev: CustomerMessage, mail: MailFacts) -> str | None:
    """The chat id of the thread this mail continues, or None for a new thread."""
    named = [*mail.in_reply_to, *reversed(mail.references)]
    if named:
        found = await desk.s.scalar(
            select(EmailMessageId.chat_id)
            .where(
                EmailMessageId.message_id.in_(named), EmailMessageId.message_id != mail.message_id
            )
            .order_by(EmailMessageId.created_at.desc())
            .limit(1)
        )
        if found is not None:
            return found
    number = ticket_token(mail.subject)
    if number is not None:
        ticket = await desk.s.get(Ticket, number)
        if (
            ticket is not None
            and ticket.channel == "email"
            and address_of(ticket.chat_id) == ev.sender.external_id
        ):
            return ticket.chat_id
    return None


async def thread_mail(desk: Desk, prep: Prepared) -> bool:
    """The first route of an email: puts the mail on its thread (the event's chat id), records
    its Message-ID, and takes noise off the ticket path (True: done with it); a person's mail
    goes on (False) to the routes every channel shares (status lookup, knowledge base,
    ticket)."""
    ev = prep.event
    assert isinstance(ev, CustomerMessage) and ev.mail is not None
    mail = ev.mail
    found = await find_thread(desk, ev, mail)
    chat_id = found or ev.chat_id
    if chat_id != ev.chat_id:
        ev = ev.model_copy(update={"chat_id": chat_id})
        prep.event = ev
    if mail.noise is not None:
        # Noise opens no conversation of its own (nothing is said back to it, and a thread
        # row would hold an address no ticket accounts for).
        await _record_noise(desk, ev, mail, threaded=found is not None)
        return True
    # By a query, not ``get``: the address column also matches an old key's form (storage/crypto).
    if await desk.s.scalar(select(EmailThread).where(EmailThread.chat_id == chat_id)) is None:
        desk.s.add(
            EmailThread(
                chat_id=chat_id,
                address=ev.sender.external_id,
                subject=base_subject(mail.subject),
                created_at=desk.now,
            )
        )
    if await desk.s.get(EmailMessageId, mail.message_id) is None:
        desk.s.add(
            EmailMessageId(
                message_id=mail.message_id, chat_id=chat_id, direction="in", created_at=desk.now
            )
        )
    ident = await desk.s.scalar(
        select(Identity).where(
            Identity.channel == "email", Identity.external_id == ev.sender.external_id
        )
    )
    if ident is not None and ident.blocked:
        ident.blocked = False  # they wrote: the address works again
    return False


async def _latest_active(desk: Desk, address: str) -> Ticket | None:
    if crypto.keyring() is None:
        return await desk.s.scalar(
            select(Ticket)
            .where(
                Ticket.channel == "email",
                Ticket.chat_id.like(f"{address}#%"),
                Ticket.status.in_(ACTIVE),
            )
            .order_by(Ticket.id.desc())
            .limit(1)
        )
    # Sealed chat ids have no prefix to match: the address's customer's active mail tickets,
    # read back, and the first whose thread is this address.
    customer = await desk.s.scalar(
        select(Identity.customer_id).where(
            Identity.channel == "email", Identity.external_id == address
        )
    )
    if customer is None:
        return None
    tickets = await desk.s.scalars(
        select(Ticket)
        .where(
            Ticket.customer_id == customer,
            Ticket.channel == "email",
            Ticket.status.in_(ACTIVE),
        )
        .order_by(Ticket.id.desc())
    )
    return next((t for t in tickets if address_of(t.chat_id) == address), None)


async def _record_noise(
    desk: Desk, ev: CustomerMessage, mail: MailFacts, *, threaded: bool
) -> None:
    """A line in the open ticket it concerns, if any; a bounce marks the address
    undeliverable. Never an acknowledgement, never a card of its own."""
    ticket: Ticket | None = None
    if mail.bounced is not None:
        ident = await desk.s.scalar(
            select(Identity).where(
                Identity.channel == "email", Identity.external_id == mail.bounced
            )
        )
        if ident is not None:
            ident.blocked = True
        if threaded:
            ticket = await desk.latest_ticket("email", ev.chat_id)
        if ticket is None or ticket.status not in ACTIVE:
            ticket = await _latest_active(desk, mail.bounced)
    else:
        if threaded:
            ticket = await desk.latest_ticket("email", ev.chat_id)
        if ticket is None or ticket.status not in ACTIVE:
            ticket = await _latest_active(desk, ev.sender.external_id)
    desk.decided(
        "mail.noise channel=email reason=%s ticket=%s",
        (mail.noise or "")[:60],
        ticket.id if ticket is not None and ticket.status in ACTIVE else "-",
    )
    if ticket is None or ticket.status not in ACTIVE:
        return
    subject = f" “{escape(mail.subject[:120])}”" if mail.subject else ""
    if mail.bounced is not None:
        line = (
            f"📭 {escape(mail.noise or 'a bounce')}.{subject} Replies to {escape(mail.bounced)}"
            " are not sent until they write again."
        )
    else:
        who = escape(ev.sender.external_id)
        line = f"🤖 Mail from {who} not answered: {escape(mail.noise or '')}.{subject}"
    desk.thread(ticket, line)
    if mail.bounced is not None:
        await desk.refresh_card(ticket)
