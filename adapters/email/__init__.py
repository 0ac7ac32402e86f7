"""Email as a customer channel: a support mailbox read over IMAP, replies sent over SMTP.

Intake (:mod:`adapters.email.imap`): IDLE (or polling), each new mail parsed
(:mod:`adapters.email.parse`) into one ``CustomerMessage`` and written to the inbox before it is
flagged ``\\Seen``; the last UID read is kept per UIDVALIDITY in the database
(:mod:`bot.mail.store`). Threading onto tickets happens in the dispatcher (:mod:`bot.mail.threads`).

Sending (:meth:`EmailAdapter.send`): the outbox hands over each message; it goes by SMTP as
``multipart/alternative`` continuing the customer's thread (:mod:`adapters.email.compose`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email
import email.policy
import logging
import ssl
from email.message import EmailMessage

import aiosmtplib
from aiohttp import web

from adapters._common import digest_id
from adapters.email.compose import compose, message_id_for
from adapters.email.imap import MailboxReader
from adapters.email.links import ROUTE as LINK_ROUTE
from adapters.email.links import LinkPages, identity_key, is_link_mail, link_mail
from adapters.email.parse import audit_record, parse_mail
from adapters.email.ratings import ROUTE as RATE_ROUTE
from adapters.email.ratings import RatingPages, link_key, rating_links
from bot.base.clock import Clock, SystemClock
from bot.base.settings import EmailSettings
from bot.delivery.inbox import Inbox
from bot.domain.events import Channel, CustomerMessage, Event, Ignored
from bot.domain.mail import address_of
from bot.domain.outbound import (
    BadRequest,
    Delivery,
    FileContent,
    FileRef,
    Forbidden,
    Outbound,
    Unavailable,
)
from bot.mail.store import MailStore

log = logging.getLogger("deskbot.adapters.email")

MB = 1024 * 1024
THROTTLE_PER_MINUTE = 10  # a sender mailing more often is a loop or a flood: recorded only


class EmailAdapter:
    channel: Channel = "email"

    def __init__(
        self,
        settings: EmailSettings,
        inbox: Inbox,
        *,
        store: MailStore | None = None,
        clock: Clock | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        # The desk passes its database store (bot/app.py, build_adapters); without one the
        # adapter can neither read the mailbox nor send.
        self.store = store
        self._clock = clock or SystemClock()
        self._ssl = ssl_context
        self._timeout = timeout
        self._started = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recent: dict[str, collections.deque[float]] = {}
        self.reader: MailboxReader | None = None

    @property
    def started(self) -> bool:
        return self._started

    @property
    def imap_state(self) -> str:
        """How the mailbox is read, for /healthz."""
        reader = self.reader
        if reader is None:
            return "not started"
        if reader.connected:
            how = "IDLE" if reader.idle else f"polling every {self._settings.poll_seconds:g} s"
            return f"connected ({how})"
        if reader.failing:
            return f"reconnecting after {reader.failing}"
        return "connecting"

    @property
    def max_attachment_bytes(self) -> int:
        return self._settings.max_attachment_mb * MB

    # -- lifecycle ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """No webhook (the desk reads the mailbox itself); the rating links' pages, and the
        pages of the links that verify an address for a chat customer (adapters/email/links.py)."""
        if self.store is None:
            raise RuntimeError("the email adapter needs its MailStore before install()")
        pages = RatingPages(self._settings, self._inbox, self.store)
        app.router.add_get(RATE_ROUTE, pages.show)
        app.router.add_post(RATE_ROUTE, pages.rate)
        linking = LinkPages(self._settings, self._inbox, self._clock)
        app.router.add_get(LINK_ROUTE, linking.show)
        app.router.add_post(LINK_ROUTE, linking.confirm)

    async def start(self) -> None:
        if self.store is None:
            raise RuntimeError("the email adapter needs its MailStore before start()")
        store = self.store
        self._stop = asyncio.Event()
        self.reader = MailboxReader(
            self._settings.imap,
            take=self._take,
            last_read=store.mailbox,
            advance=store.advance,
            poll_seconds=self._settings.poll_seconds,
            timeout=self._timeout,
            ssl_context=self._ssl,
        )
        self._task = asyncio.create_task(self.reader.run(self._stop), name="email-intake")
        # Started means reading: a mail server that is down at start is retried with backoff
        # (and logged) rather than stopping the desk's other channels.
        self._started = True
        log.info(
            "email.started address=%s imap=%s smtp=%s",
            self._settings.address,
            self._settings.imap.host,
            self._settings.smtp.host,
        )

    async def stop(self) -> None:
        was_started, self._started = self._started, False  # stopped twice: logged once
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 5)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if was_started:
            log.info("email.stopped")

    # -- inbound -----------------------------------------------------------------------------

    def _throttled(self, address: str) -> bool:
        now = self._clock.now().timestamp()
        recent = self._recent.setdefault(address, collections.deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        recent.append(now)
        if len(self._recent) > 10_000:  # forget the quiet ones
            for key in [k for k, v in self._recent.items() if now - v[-1] > 60]:
                del self._recent[key]
        return len(recent) > THROTTLE_PER_MINUTE

    async def _take(self, uidvalidity: int, uid: int, raw: bytes) -> None:
        """One mail into the inbox, committed before the reader flags it \\Seen."""
        mailbox = self._settings.imap.mailbox
        try:
            event: Event = parse_mail(
                raw,
                self._settings.address,
                file_prefix=f"{uidvalidity}:{uid}",
                max_attachment_bytes=self.max_attachment_bytes,
            )
        except Exception as exc:
            # A mail the parser cannot read must not stop the mail behind it (it would be
            # fetched again and again): kept as Ignored, with the reason, and flagged \Seen.
            log.exception("email.unparseable uid=%d", uid)
            event = Ignored(
                channel="email",
                external_id=digest_id("mail", raw),
                conversation="email:unparseable",
                reason=f"unparseable mail: {type(exc).__name__}: {str(exc)[:200]}",
            )
        if (
            isinstance(event, CustomerMessage)
            and event.mail is not None
            and event.mail.noise is None
            and self._throttled(event.sender.external_id)
        ):
            mail = event.mail.model_copy(
                update={"noise": f"over {THROTTLE_PER_MINUTE} mails a minute from this sender"}
            )
            event = event.model_copy(update={"mail": mail})
        await self._inbox.accept([event], audit_record(raw, uid, uidvalidity, mailbox))
        noise = event.mail.noise if isinstance(event, CustomerMessage) and event.mail else None
        log.info(
            "email.mail_accepted uid=%d kind=%s noise=%s", uid, event.kind, "yes" if noise else "no"
        )

    async def fetch_file(self, ref: FileRef) -> FileContent:
        """A customer's attachment, read again from the mailbox (``uidvalidity:uid/index``)."""
        place, _, index_raw = ref.file_id.partition("/")
        validity_raw, _, uid_raw = place.partition(":")
        if not (validity_raw.isdigit() and uid_raw.isdigit() and index_raw.isdigit()):
            raise BadRequest("not an email attachment id")
        raw = await self._refetch(int(validity_raw), int(uid_raw))
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        parts = list(msg.iter_attachments())
        index = int(index_raw)
        if index >= len(parts):
            raise BadRequest("the mail has no such attachment")
        part = parts[index]
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            raise BadRequest("the attachment has no content")
        mime = part.get_content_type()
        return FileContent(
            data=data, name=part.get_filename() or ref.name or "attachment", mime_type=mime
        )

    async def _refetch(self, uidvalidity: int, uid: int) -> bytes:
        reader = MailboxReader(
            self._settings.imap,
            take=self._take,
            last_read=_never,
            advance=_nowhere,
            poll_seconds=self._settings.poll_seconds,
            timeout=self._timeout,
            ssl_context=self._ssl,
        )
        try:
            return await reader.fetch_one(uidvalidity, uid)
        except LookupError as exc:
            raise BadRequest(str(exc)) from None
        except Exception as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, message: Outbound) -> Delivery:
        if message.kind in ("answer_callback", "edit_buttons"):
            return Delivery()  # a mail has no buttons to answer or take off
        if message.kind not in ("text", "file"):
            raise BadRequest(f"email cannot send {message.kind}")
        if self.store is None:
            raise Unavailable("the email adapter is not started")
        if is_link_mail(message):
            return await self._send_link(message)
        out = await self.store.outgoing(
            message.destination, message.outbox_id, address_of(message.destination)
        )
        if out.undeliverable:
            raise Forbidden(f"mail to {out.address} bounced; not sent until they write again")
        attachment = None
        if message.kind == "file":
            if message.content is None:
                raise BadRequest("file needs its content")
            if len(message.content.data) > self.max_attachment_bytes:
                raise BadRequest(
                    f"the file is over the {self._settings.max_attachment_mb} MB limit for email"
                )
            attachment = message.content
        domain = self._settings.domain
        message_id = message_id_for(message.outbox_id, message.destination, message.text, domain)
        await self.store.remember_sent(message_id, message.destination)
        mail = compose(
            sender=self._settings.address,
            sender_name=self._settings.name,
            to=out.address,
            subject=out.subject,
            ticket_id=message.ticket_id,
            text=message.text,
            message_id=message_id,
            in_reply_to=out.in_reply_to,
            references=out.references,
            automatic=out.automatic,
            when=self._clock.now(),
            links=rating_links(
                link_key(self._settings), self._settings.public_url, message.buttons
            ),
            attachment=attachment,
        )
        await self._smtp(mail)
        log.info("email.sent ticket=%s automatic=%s", message.ticket_id, out.automatic)
        return Delivery(platform_message_id=message_id)

    async def _send_link(self, message: Outbound) -> Delivery:
        """The mail that verifies an address for a chat customer: a thread of its own."""
        to = address_of(message.destination)
        if not self._settings.public_url:
            raise BadRequest("DESK_PUBLIC_URL is not set: the link would lead nowhere")
        if to == self._settings.address.lower():
            raise BadRequest("the desk's own address cannot be linked to a customer")
        message_id = message_id_for(
            message.outbox_id, message.destination, message.text, self._settings.domain
        )
        mail = link_mail(
            message,
            key=identity_key(self._settings),
            public_url=self._settings.public_url,
            sender=self._settings.address,
            sender_name=self._settings.name,
            to=to,
            message_id=message_id,
            when=self._clock.now(),
        )
        await self._smtp(mail)
        log.info("email.link_sent")
        return Delivery(platform_message_id=message_id)

    async def _smtp(self, mail: EmailMessage) -> None:
        server = self._settings.smtp
        try:
            await aiosmtplib.send(
                mail,
                hostname=server.host,
                port=server.port,
                username=server.user,
                password=server.password,
                use_tls=server.tls == "implicit",
                start_tls=None if server.tls == "starttls" else False,
                tls_context=self._ssl,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            detail = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)[:300]
            if codes and all(500 <= c < 600 for c in codes):
                raise Forbidden(f"the mail server refused the address: {detail}") from None
            raise Unavailable(detail) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A wrong password is fixed by a person, and the message should go then.
            raise Unavailable(f"SMTP login refused: {exc.code} {exc.message}"[:300]) from None
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise BadRequest(f"SMTP {exc.code} {exc.message}"[:300]) from None
            raise Unavailable(f"SMTP {exc.code} {exc.message}"[:300]) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}"[:300]) from None


async def _never(_key: str) -> tuple[int, int] | None:
    return None


async def _nowhere(_key: str, _validity: int, _uid: int) -> None:
    return None
