"""What the email adapter keeps in the database, each call its own short transaction.

* How far a mailbox was read: the highest UID taken into the inbox per UIDVALIDITY, only ever
  raised, so two desks reading one mailbox, or one desk after a dropped connection, neither
  skip nor re-read mail (the inbox's dedupe on Message-ID covers the mail read twice between
  the inbox write and the UID's advance).
* What an outgoing mail continues: the address, the subject, the thread's Message-IDs, and
  whether a person wrote it (an agent's reply) or the desk did (``Auto-Submitted``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from storage.models import (
    EmailMailbox,
    EmailMessageId,
    EmailThread,
    Identity,
    Message,
    OutboxRow,
    Ticket,
)

REFERENCES_KEPT = 10  # the first Message-ID of a thread and the latest ones after it


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What one outgoing mail continues."""

    address: str
    subject: str  # the thread's subject as the customer wrote it (without Re: and token)
    in_reply_to: str | None
    references: tuple[str, ...]
    automatic: bool  # written by the desk (acknowledgement, notice, prompt), not by an agent
    undeliverable: bool  # a bounce said this address cannot be reached


class MailStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def mailbox(self, key: str) -> tuple[int, int] | None:
        """``(uidvalidity, last_uid)`` of a mailbox read before, or None."""
        async with self._sessions() as s:
            row = await s.get(EmailMailbox, key)
            return None if row is None else (row.uidvalidity, row.last_uid)

    async def advance(self, key: str, uidvalidity: int, uid: int) -> None:
        """Raise the mailbox's last UID to ``uid`` (never lower it); a new UIDVALIDITY starts
        the count again."""
        now = self._clock.now()
        for _ in range(3):
            try:
                async with self._sessions.begin() as s:
                    row = await s.get(EmailMailbox, key, with_for_update=True)
                    if row is None:
                        s.add(
                            EmailMailbox(
                                key=key, uidvalidity=uidvalidity, last_uid=uid, updated_at=now
                            )
                        )
                    elif row.uidvalidity != uidvalidity:
                        row.uidvalidity, row.last_uid, row.updated_at = uidvalidity, uid, now
                    elif row.last_uid < uid:
                        await s.execute(
                            update(EmailMailbox)
                            .where(EmailMailbox.key == key, EmailMailbox.last_uid < uid)
                            .values(last_uid=uid, updated_at=now)
                        )
                return
            except IntegrityError:
                continue  # another desk made the row first: update it instead

    async def remember_sent(self, message_id: str, chat_id: str) -> None:
        """An outgoing mail's Message-ID, so the customer's reply to it finds its thread."""
        try:
            async with self._sessions.begin() as s:
                if await s.get(EmailMessageId, message_id) is None:
                    s.add(
                        EmailMessageId(
                            message_id=message_id,
                            chat_id=chat_id,
                            direction="out",
                            created_at=self._clock.now(),
                        )
                    )
        except IntegrityError:
            pass  # a retry of the same send: already known

    async def outgoing(self, chat_id: str, outbox_id: int | None, fallback: str) -> Outgoing:
        """What a mail to the thread ``chat_id`` continues. ``fallback``: the address to use
        for a thread the desk has no record of (the chat id's own address part)."""
        async with self._sessions() as s:
            thread = await s.scalar(select(EmailThread).where(EmailThread.chat_id == chat_id))
            address = thread.address if thread is not None else fallback
            ids = (
                await s.execute(
                    select(EmailMessageId.message_id, EmailMessageId.direction)
                    .where(EmailMessageId.chat_id == chat_id)
                    .order_by(EmailMessageId.created_at, EmailMessageId.message_id)
                )
            ).all()
            inbound = [mid for mid, direction in ids if direction == "in"]
            every = [mid for mid, _ in ids]
            refs = every if len(every) <= REFERENCES_KEPT else [every[0], *every[-9:]]
            automatic = True
            if outbox_id is not None:
                author = await s.scalar(
                    select(Message.author)
                    .join(OutboxRow, OutboxRow.message_id == Message.id)
                    .where(OutboxRow.id == outbox_id, Message.purpose.is_(None))
                )
                automatic = author is None or author == "desk"
            blocked = await s.scalar(
                select(Identity.blocked).where(
                    Identity.channel == "email", Identity.external_id == address
                )
            )
            return Outgoing(
                address=address,
                subject=thread.subject if thread is not None else "",
                in_reply_to=inbound[-1] if inbound else (every[-1] if every else None),
                references=tuple(refs),
                automatic=automatic,
                undeliverable=bool(blocked),
            )

    async def rating_state(self, ticket_id: int) -> tuple[str, int | None] | None:
        """An email ticket's chat id and its rating so far; None for no such email ticket."""
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(Ticket.chat_id, Ticket.rating).where(
                        Ticket.id == ticket_id, Ticket.channel == "email"
                    )
                )
            ).first()
            return None if row is None else (row[0], row[1])
