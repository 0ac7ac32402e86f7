"""Email as a channel, end to end: a real Dovecot (IMAP with IDLE) holds the support mailbox,
an aiosmtpd server keeps what the desk sends, Slack is the stand-in.

What the customer gets (the mail in the SMTP server, with its headers), what the agents see
(the card and its thread) and what the mailbox says (\\Seen flags) are asserted, not return
codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from adapters.email import EmailAdapter
from bot.app import DeskApp
from bot.base.settings import EmailSettings, MailServer, mail_server
from bot.selfservice.kb import KnowledgeBase
from storage.crypto import Keyring
from storage.models import Identity, InboxRow, Message, Ticket

from .conftest import (
    ROOT,
    RULES,
    SUPPORT,
    Stack,
    desk_settings,
    eventually,
    free_port,
    start_standins,
)
from .mailservers import Dovecot, SmtpSink, dovecot_available
from .test_kb import ARTICLE, QUESTION, encoder

IN_CI = os.environ.get("CI", "").lower() == "true"
CUSTOMER = "anna@customer.test"
PDF = b"%PDF-1.4\n" + b"invoice line\n" * 300


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    if not dovecot_available():
        if IN_CI:
            pytest.fail("CI=true but dovecot is not installed (.ci/run installs dovecot-imapd)")
        pytest.skip("dovecot-imapd is not installed")
    # Not pytest's tmp_path: its folders are 0700, and dovecot's auth process is another user.
    root = Path(tempfile.mkdtemp(prefix="desk-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MailStack:
    stack: Stack
    dovecot: Dovecot
    smtp: SmtpSink
    address: str  # the desk's support address (also its IMAP user)

    @property
    def adapter(self) -> EmailAdapter:
        return next(a for a in self.stack.desk.adapters if isinstance(a, EmailAdapter))

    def deliver(self, mail: EmailMessage | bytes, *, seen: bool = False) -> None:
        self.dovecot.deliver(self.address, mail, seen=seen)

    async def sent(self, n: int, timeout: float = 15.0) -> list[EmailMessage]:
        async def probe() -> list[EmailMessage] | None:
            return self.smtp.mails if len(self.smtp.mails) >= n else None

        return await eventually(probe, f"{n} mail(s) sent by the desk", timeout)

    async def tickets(self) -> list[Ticket]:
        async with self.stack.sessions() as s:
            return list((await s.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def inbound(self) -> list[Message]:
        async with self.stack.sessions() as s:
            return list(
                (
                    await s.scalars(
                        select(Message).where(Message.direction == "in").order_by(Message.id)
                    )
                ).all()
            )


def mail(
    text: str,
    *,
    subject: str = "Order 55 never arrived",
    sender: str = CUSTOMER,
    name: str = "Anna Smith",
    to: str = "support@example.com",
    in_reply_to: str | None = None,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="customer.test")
    msg["Date"] = "Mon, 07 Dec 2026 08:00:00 +0000"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (headers or {}).items():
        msg[key] = value
    if html is not None and not text:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(text)
    return msg


@asynccontextmanager
async def email_stack(
    database_url: str,
    dovecot: Dovecot,
    *,
    user: str | None = None,
    imap: MailServer | None = None,
    data_keys: Keyring | None = None,
    knowledge: KnowledgeBase | None = None,
) -> AsyncIterator[MailStack]:
    user = user or dovecot.new_user()
    smtp = SmtpSink(user)
    smtp.start()
    standins = await start_standins()
    port: int = standins.desk_port  # type: ignore[attr-defined]
    settings = dataclasses.replace(
        desk_settings(standins, database_url, port),
        email=EmailSettings(
            address=user,
            imap=imap or mail_server("DESK_EMAIL_IMAP_URL", dovecot.url(user)),
            smtp=mail_server("DESK_EMAIL_SMTP_URL", smtp.url()),
            name="Example Support",
            poll_seconds=5,
            public_url=f"http://127.0.0.1:{port}",
        ),
        data_keys=data_keys,
    )
    desk = DeskApp(settings, RULES, idle_poll=0.05, knowledge=knowledge)
    await desk.start()
    try:
        yield MailStack(Stack(standins, desk, database_url), dovecot, smtp, user)
    finally:
        await desk.stop()
        await standins.stop()
        smtp.stop()


@pytest.fixture
async def ms(database_url: str, dovecot: Dovecot) -> AsyncIterator[MailStack]:
    async with email_stack(database_url, dovecot) as running:
        yield running


def _card_text(card: dict[str, Any]) -> str:
    return json.dumps(card["blocks"], ensure_ascii=False)


async def _all_seen(ms: MailStack, n: int) -> None:
    async def probe() -> bool:
        flags = await asyncio.to_thread(ms.dovecot.flags, ms.address)
        return len(flags) == n and all(seen for _, seen in flags)

    await eventually(probe, f"{n} mail(s) flagged \\Seen", 15)


QUOTED = """Hi, my order 55 never arrived. Could you check where it is?

Best regards,
Anna

On Sun, Dec 6, 2026 at 9:00 AM Shop <shop@example.com> wrote:
> Your order 55 has shipped.
> Tracking: 123456
"""


async def test_new_mail_opens_one_ticket_with_a_card_and_an_acknowledgement(ms: MailStack) -> None:
    first = mail(QUOTED)
    ms.deliver(first)
    card = await ms.stack.card()
    shown = _card_text(card)
    assert "my order 55 never arrived" in shown
    assert "Your order 55 has shipped" not in shown  # the quoted history is not in the card
    assert "Best regards" not in shown  # nor the signature
    assert f"📧 {CUSTOMER} · “Order 55 never arrived”" in shown  # the address and subject
    [ack] = await ms.sent(1)
    assert ack["To"] == CUSTOMER
    assert ack["Subject"] == "Re: Order 55 never arrived [#1]"
    assert ack["In-Reply-To"] == first["Message-ID"]
    assert first["Message-ID"] in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied"  # the desk wrote it, not a person
    assert ack["Message-ID"].endswith(f"@{ms.address.partition('@')[2]}>")
    assert ack["From"] == f"Example Support <{ms.address}>"
    assert ack.get_content_type() == "multipart/alternative"
    plain = ack.get_body(preferencelist=("plain",))
    html = ack.get_body(preferencelist=("html",))
    assert plain is not None and "#1" in plain.get_content()
    assert html is not None and "#1" in html.get_content()
    await _all_seen(ms, 1)
    tickets = await ms.tickets()
    assert [(t.channel, t.status) for t in tickets] == [("email", "new")]
    [message] = await ms.inbound()
    assert message.text.startswith("Hi, my order 55 never arrived.")
    assert message.platform_message_id == first["Message-ID"].strip("<>")


async def test_replies_by_in_reply_to_and_by_subject_token_join_and_a_new_subject_is_new(
    ms: MailStack,
) -> None:
    ms.deliver(mail("Where is my order 55?"))
    card = await ms.stack.card()
    [ack] = await ms.sent(1)
    # A reply to the desk's acknowledgement, quoting it.
    ms.deliver(
        mail(
            "It is the blue parcel.\n\nOn Mon, Support wrote:\n> We got your message",
            subject=str(ack["Subject"]),
            in_reply_to=str(ack["Message-ID"]),
        )
    )
    await ms.stack.thread_has(card["ts"], "It is the blue parcel.")
    # A mail program that drops In-Reply-To: the token in the subject still finds the ticket.
    ms.deliver(mail("Any news?", subject="Fwd: about my parcel [#1]"))
    await ms.stack.thread_has(card["ts"], "Any news?")
    # A new subject is a new request, even with ticket 1 open.
    ms.deliver(mail("Also, can I change my address?", subject="Address change"))
    second = await ms.stack.card(2)
    assert "change my address" in _card_text(second)
    await _all_seen(ms, 4)
    tickets = await ms.tickets()
    assert len(tickets) == 2
    assert tickets[0].chat_id != tickets[1].chat_id
    assert len([m for m in await ms.inbound() if m.ticket_id == 1]) == 3
    # The thread did not quote history back at the agents.
    thread = ms.stack.standins.slack.thread(SUPPORT, card["ts"])
    assert not any("We got your message" in m["text"] for m in thread)


async def test_someone_elses_ticket_token_opens_a_new_ticket(ms: MailStack) -> None:
    ms.deliver(mail("Where is my order 55?"))
    await ms.stack.card()
    ms.deliver(mail("I want to see ticket 1", subject="Re: [#1]", sender="eve@else.test"))
    await ms.stack.card(2)
    tickets = await ms.tickets()
    assert [t.chat_id.partition("#")[0] for t in tickets] == [CUSTOMER, "eve@else.test"]


async def test_html_only_mail_becomes_readable_text(ms: MailStack) -> None:
    html = (
        "<html><body><p>The <b>invoice</b> for order 77 is wrong.</p>"
        "<table><tr><td>Total</td><td>99 EUR</td></tr></table></body></html>"
    )
    ms.deliver(mail("", html=html, subject="Invoice"))
    card = await ms.stack.card()
    shown = _card_text(card)
    assert "invoice for order 77 is wrong" in shown
    assert "<b>" not in shown and "<p>" not in shown
    [message] = await ms.inbound()
    assert "99 EUR" in message.text


async def test_an_attachment_lands_in_the_cards_thread(ms: MailStack) -> None:
    msg = mail("The invoice is attached.", subject="Invoice")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    ms.deliver(msg)
    card = await ms.stack.card()
    slack = ms.stack.standins.slack

    async def shared() -> list[dict[str, Any]] | None:
        found = [m for m in slack.thread(card["channel"], card["ts"]) if m.get("files")]
        return found or None

    [posted] = await eventually(shared, "the invoice in the card's thread", 15)
    assert bytes(slack.files[posted["files"][0]["id"]]["content"]) == PDF
    [message] = await ms.inbound()
    assert message.attachments[0]["name"] == "invoice.pdf"


async def test_auto_replies_and_bounces_are_recorded_never_answered(ms: MailStack) -> None:
    ms.deliver(mail("Where is my order 55?"))
    card = await ms.stack.card()
    [ack] = await ms.sent(1)
    # An out-of-office answer to our acknowledgement: a line in the thread, nothing sent back.
    ms.deliver(
        mail(
            "I am out of the office until Monday.",
            subject="Automatic reply: Re: Order 55 [#1]",
            in_reply_to=str(ack["Message-ID"]),
            headers={"Auto-Submitted": "auto-replied"},
        )
    )
    await ms.stack.thread_has(card["ts"], "not answered")
    # A list mail from someone else, with no ticket: recorded in the inbox, no card.
    ms.deliver(mail("Newsletter", sender="news@shop.test", headers={"Precedence": "bulk"}))
    # Our own mail coming back (a forwarding loop).
    ms.deliver(mail("loop", sender=ms.address, subject=str(ack["Subject"])))
    # A bounce of a mail to the customer.
    bounce = _bounce(ms.address, CUSTOMER, str(ack["Message-ID"]))
    ms.deliver(bounce)
    await ms.stack.thread_has(card["ts"], "could not be delivered")

    async def card_says_bounced() -> bool:
        return "mail to them bounced" in _card_text(ms.stack.cards()[0])

    await eventually(card_says_bounced, "the card saying the address bounced")
    await _all_seen(ms, 5)
    await ms.stack.outbox_idle()
    assert len(ms.smtp.mails) == 1  # only the acknowledgement of the first mail
    assert len(await ms.tickets()) == 1
    async with ms.stack.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.external_id == CUSTOMER))
        kept = await s.scalar(
            select(func.count()).select_from(InboxRow).where(InboxRow.channel == "email")
        )
    assert ident is not None and ident.blocked  # undeliverable until they write again
    assert kept == 5  # every mail recorded
    # An agent's reply meanwhile is not sent, and the thread says why.
    slack = ms.stack.standins.slack
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await eventually(_assigned(ms), "Alice's claim")
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Your parcel left today.")
    await ms.stack.thread_has(card["ts"], "mail to this address is undeliverable")
    await ms.stack.outbox_idle()
    assert len(ms.smtp.mails) == 1
    # They write again: the address works again.
    ms.deliver(mail("Did you get this?", subject="Re: Order 55 [#1]"))
    await ms.stack.thread_has(card["ts"], "Did you get this?")
    async with ms.stack.sessions() as s:
        ident = await s.scalar(select(Identity).where(Identity.external_id == CUSTOMER))
    assert ident is not None and not ident.blocked


def _bounce(to: str, failed: str, original_id: str) -> bytes:
    """A delivery-status notification (RFC 3464) as Postfix writes one."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='mx.customer.test')}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is the mail system. Your message could not be delivered.\r\n"
        "\r\n--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 mailbox unknown\r\n"
        "\r\n--B\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\nTo: {failed}\r\n"
        "\r\n--B--\r\n"
    ).encode()


async def test_the_agents_reply_arrives_in_the_customers_thread(ms: MailStack) -> None:
    first = mail("Where is my order 55?")
    ms.deliver(first)
    card = await ms.stack.card()
    await ms.sent(1)
    slack = ms.stack.standins.slack
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")

    async def claimed() -> bool:
        return (await ms.stack.ticket(1)).assignee_id == "U0ALICE"

    await eventually(claimed, "Alice's claim")
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "It left our warehouse today.")
    mails = await ms.sent(2)
    reply = mails[-1]
    assert reply["To"] == CUSTOMER
    assert reply["Subject"] == "Re: Order 55 never arrived [#1]"
    assert reply["In-Reply-To"] == first["Message-ID"]
    refs = str(reply["References"]).split()
    assert refs[0] == first["Message-ID"] and mails[0]["Message-ID"] in refs
    assert reply["Auto-Submitted"] is None  # a person wrote it
    plain = reply.get_body(preferencelist=("plain",))
    html = reply.get_body(preferencelist=("html",))
    assert plain is not None and plain.get_content().strip() == "It left our warehouse today."
    assert html is not None and "It left our warehouse today." in html.get_content()
    await ms.stack.outbox_idle()  # the send's outcome is recorded after the server took it
    async with ms.stack.sessions() as s:
        out = await s.scalar(
            select(Message).where(Message.direction == "out", Message.channel == "email")
        )
    assert out is not None and out.platform_message_id == reply["Message-ID"].strip("<>")


async def test_first_start_reads_the_unseen_mail_only(database_url: str, dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    dovecot.deliver(user, mail("old, already handled", subject="Old"), seen=True)
    dovecot.deliver(user, mail("Please help with order 9", subject="New"))
    async with email_stack(database_url, dovecot, user=user) as ms:
        card = await ms.stack.card()
        assert "order 9" in _card_text(card)
        await ms.stack.outbox_idle()
        assert len(await ms.tickets()) == 1


async def test_a_restart_reads_on_from_the_last_uid(database_url: str, dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    async with email_stack(database_url, dovecot, user=user) as ms:
        ms.deliver(mail("First question", subject="One"))
        await ms.stack.card()
        await _all_seen(ms, 1)
    # While the desk is down: one mail arrives, and someone reads it in their mail program.
    dovecot.deliver(user, mail("Second question", subject="Two"), seen=True)
    async with email_stack(database_url, dovecot, user=user) as ms:
        await ms.stack.card(1)
        await eventually(_count_tickets(ms, 2), "the second mail's ticket", 15)
        await ms.stack.outbox_idle()
        assert [t.subject for t in await ms.tickets()] == ["First question", "Second question"]


def _count_tickets(ms: MailStack, n: int) -> Any:
    async def probe() -> bool:
        return len(await ms.tickets()) == n

    return probe


async def test_a_dropped_connection_loses_and_doubles_nothing(ms: MailStack) -> None:
    ms.deliver(mail("Mail one", subject="One"))
    await ms.stack.card()
    reader = ms.adapter.reader
    assert reader is not None
    # The server drops the desk's connection; mail keeps arriving while it reconnects.
    await asyncio.to_thread(ms.dovecot.kick, ms.address)
    ms.deliver(mail("Mail two", subject="Two"))
    ms.deliver(mail("Mail three", subject="Three"))
    await eventually(_count_tickets(ms, 3), "three tickets", 20)
    await _all_seen(ms, 3)
    await ms.stack.outbox_idle()
    assert sorted(t.subject for t in await ms.tickets()) == ["Mail one", "Mail three", "Mail two"]
    assert len(ms.smtp.mails) == 3  # one acknowledgement each


async def test_a_crash_between_the_inbox_and_seen_doubles_nothing(
    ms: MailStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The desk dies after the inbox write and before \\Seen (here: the flag fails once):
    the mail is read again and the inbox's dedupe on Message-ID keeps it single."""
    reader = ms.adapter.reader
    assert reader is not None
    took: list[int] = []
    real_take = reader._take

    async def take_then_die(uidvalidity: int, uid: int, raw: bytes) -> None:
        await real_take(uidvalidity, uid, raw)
        took.append(uid)
        if len(took) == 1:
            raise ConnectionResetError("killed after the inbox write")

    monkeypatch.setattr(reader, "_take", take_then_die)
    ms.deliver(mail("Only once, please", subject="Once"))
    await ms.stack.card()
    await _all_seen(ms, 1)
    await eventually(lambda: _ready(len(took) >= 2), "the mail read a second time", 20)
    await ms.stack.outbox_idle()
    assert len(await ms.tickets()) == 1
    assert len(ms.smtp.mails) == 1
    assert len(ms.stack.cards()) == 1


async def _ready(value: bool) -> bool:
    return value


def test_the_dovecot_helper_has_room(tmp_path: Path) -> None:
    """Each test takes its own mailbox from a fixed list: keep it longer than the tests."""
    from .mailservers import USERS

    assert USERS >= 2 * 45  # the tests of test_email.py, on both databases, with room


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_desks_read_each_mail_once(
    backend: str, database_url: str, dovecot: Dovecot
) -> None:
    """Two desks on one PostgreSQL database, both reading the mailbox (each with its own IDLE):
    every mail is one ticket, one card and one acknowledgement."""
    async with email_stack(database_url, dovecot) as ms:
        settings = ms.stack.desk.settings
        other = DeskApp(
            dataclasses.replace(settings, http_port=free_port(), telegram=None, whatsapp=None),
            RULES,
            idle_poll=0.05,
        )
        await other.start()
        try:
            for n in range(8):
                ms.deliver(mail(f"Question number {n}", subject=f"Question {n}"))
            await eventually(_count_tickets(ms, 8), "eight tickets", 30)
            await _all_seen(ms, 8)
            await ms.stack.outbox_idle()
            await ms.sent(8)
            await asyncio.sleep(1)  # room for a double to show
            assert len(await ms.tickets()) == 8
            assert len(ms.smtp.mails) == 8
            assert len(ms.stack.cards()) == 8
            assert len(await ms.inbound()) == 8
            second = next(a for a in other.adapters if isinstance(a, EmailAdapter)).reader
            assert second is not None and second.syncs >= 1  # it was reading too
        finally:
            await other.stop()


async def test_a_rating_link_works_once(ms: MailStack) -> None:
    ms.deliver(mail("Where is my order 55?"))
    card = await ms.stack.card()
    await ms.sent(1)
    slack = ms.stack.standins.slack
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await eventually(_assigned(ms), "Alice's claim")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0ALICE")
    request = (await ms.sent(2))[-1]
    assert request["Auto-Submitted"] == "auto-replied"
    html_part = request.get_body(preferencelist=("html",))
    plain_part = request.get_body(preferencelist=("plain",))
    assert html_part is not None and plain_part is not None
    links = re.findall(r"http://127\.0\.0\.1:\d+/rate/[\w.-]+/[1-5]", plain_part.get_content())
    assert [link[-1] for link in links] == ["1", "2", "3", "4", "5"]
    assert all(link in html_part.get_content() for link in links)
    four = links[3]
    async with aiohttp.ClientSession() as http:
        # Opening the link (as a mail scanner would) only shows the button.
        async with http.get(four) as resp:
            assert resp.status == 200
            assert "Send my rating: 4/5" in await resp.text()
        await asyncio.sleep(0.3)
        assert (await ms.stack.ticket(1)).rating is None
        async with http.post(four) as resp:
            assert resp.status == 200
            assert "You rated ticket #1 4/5." in await resp.text()
        await eventually(_rated(ms), "the rating on the ticket")
        await ms.stack.thread_has(card["ts"], "rated this ticket 4/5")
        # Once: another number from the same mail does not change it.
        async with http.post(links[0]) as resp:
            assert "You already rated ticket #1." in await resp.text()
        # Not guessable, and not movable to another ticket.
        token = four.split("/")[-2]
        forged = four.replace(token, "2." + token.partition(".")[2])
        async with http.post(forged) as resp:
            assert resp.status == 404
    await ms.stack.outbox_idle()
    assert (await ms.stack.ticket(1)).rating == 4
    thanks = ms.smtp.mails[-1]
    thanks_text = thanks.get_body(preferencelist=("plain",))
    assert thanks_text is not None and "4/5" in thanks_text.get_content()


def _assigned(ms: MailStack) -> Any:
    async def probe() -> bool:
        return (await ms.stack.ticket(1)).assignee_id == "U0ALICE"

    return probe


def _rated(ms: MailStack) -> Any:
    async def probe() -> bool:
        return (await ms.stack.ticket(1)).rating == 4

    return probe


async def test_status_by_mail_answers_in_the_thread_without_a_ticket(ms: MailStack) -> None:
    ms.deliver(mail("My parcel has not arrived yet", subject="Parcel"))
    await ms.stack.card()
    await ms.sent(1)
    ms.deliver(mail("status 1", subject="status"))
    answer = (await ms.sent(2))[-1]
    body = answer.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().startswith("Ticket #1: received")
    assert answer["To"] == CUSTOMER and answer["Auto-Submitted"] == "auto-replied"
    await _all_seen(ms, 2)
    await ms.stack.outbox_idle()
    assert len(await ms.tickets()) == 1
    assert len(ms.stack.cards()) == 1


async def test_a_question_by_mail_is_answered_from_the_knowledge_base(
    database_url: str, dovecot: Dovecot
) -> None:
    """The knowledge base answers by mail too: the article comes back in the customer's thread
    and no ticket is opened; mail has no buttons, so writing back ("that did not help") is
    how the customer asks for a person, and then they get a ticket and a card."""
    knowledge = KnowledgeBase(ROOT / "kb", encoder())
    async with email_stack(database_url, dovecot, knowledge=knowledge) as ms:
        ms.deliver(mail(QUESTION, subject="Subscription"))
        answer = (await ms.sent(1))[0]
        body = answer.get_body(preferencelist=("plain",))
        assert body is not None
        text = body.get_content().replace("\r\n", "\n")  # mail's line ends
        assert text.startswith(f"This may answer your question:\n\n{ARTICLE}")
        assert "https://help.example.com/articles/cancel-subscription" in text
        assert answer["To"] == CUSTOMER and answer["Auto-Submitted"] == "auto-replied"
        await _all_seen(ms, 1)
        await ms.stack.outbox_idle()
        assert await ms.tickets() == [] and ms.stack.cards() == []
        ms.deliver(
            mail(
                "That did not help, I still get charged",
                subject="Re: Subscription",
                in_reply_to=answer["Message-ID"],
            )
        )
        await ms.stack.card()
        assert len(await ms.tickets()) == 1


async def test_kill_9_during_intake_loses_and_doubles_nothing(
    database_url: str, dovecot: Dovecot
) -> None:
    """A real ``deskbot run`` killed with SIGKILL while it takes a batch of mail in, then
    started again: every mail is one ticket, every mail ends \\Seen, none is acknowledged twice."""
    import signal
    import sys

    from .conftest import SLACK_SECRET, SLACK_TOKEN

    user = dovecot.new_user()
    smtp = SmtpSink(user)
    smtp.start()
    standins = await start_standins(rate_limits=False)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DESK_", "TELEGRAM_"))},
        "PYTHONPATH": str(ROOT),
        "DESK_DATABASE_URL": database_url,
        "DESK_HTTP_PORT": str(port),
        "DESK_RULES": str(ROOT / "rules.yaml"),
        "DESK_MODEL": "rules",
        "DESK_EMAIL_ADDRESS": user,
        "DESK_EMAIL_IMAP_URL": dovecot.url(user),
        "DESK_EMAIL_SMTP_URL": smtp.url(),
        "DESK_EMAIL_POLL_SECONDS": "5",
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_BASE": standins.slack_api_base,
    }
    n = 24
    procs: list[asyncio.subprocess.Process] = []
    engine_url = database_url

    async def start() -> None:
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                env=env,
                cwd=str(ROOT),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )

    from storage.db import create_engine, session_factory

    engine = create_engine(engine_url)
    sessions = session_factory(engine)

    async def tickets() -> list[str]:
        try:
            async with sessions() as s:
                return list((await s.scalars(select(Ticket.subject))).all())
        except Exception:
            return []  # not migrated yet

    try:
        await start()
        for i in range(n):
            # From n customers: one sender's 24 mails in a minute would be throttled as a flood.
            sender = f"c{i}@customer.test"
            dovecot.deliver(user, mail(f"Request number {i}", subject=f"R {i}", sender=sender))

        async def some() -> bool:
            return len(await tickets()) >= 3

        await eventually(some, "the first tickets", 60)
        procs[-1].send_signal(signal.SIGKILL)  # somewhere in the middle of the batch
        await procs[-1].wait()
        taken = len(await tickets())
        await start()

        async def all_in() -> bool:
            return len(await tickets()) >= n

        await eventually(all_in, f"{n} tickets", 90)

        async def all_seen() -> bool:
            flags = await asyncio.to_thread(dovecot.flags, user)
            return len(flags) == n and all(seen for _, seen in flags)

        await eventually(all_seen, "every mail \\Seen", 30)
        await asyncio.sleep(2)  # room for a double to show
        subjects = await tickets()
        assert sorted(subjects) == sorted(f"Request number {i}" for i in range(n))
        acks = [str(m["To"]) + str(m["Subject"]) for m in smtp.mails]
        assert len(acks) == len(set(acks))  # no mail acknowledged twice
        assert taken < n  # the kill did land in the middle
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await engine.dispose()
        await standins.stop()
        smtp.stop()


async def test_a_forgotten_email_customer_is_nowhere_in_the_database(ms: MailStack) -> None:
    from .test_privacy import ask, everything_stored

    ms.deliver(mail("My flat is at 5 Elm Street", subject="Moving to Elm Street"))
    await ms.stack.card()
    await ms.sent(1)
    ms.deliver(mail("I am out of the office", headers={"Auto-Submitted": "auto-replied"}))
    await _all_seen(ms, 2)
    await ms.stack.outbox_idle()
    assert CUSTOMER in await everything_stored(ms.stack)
    asked = await ask(ms.stack, "forget 1", "U0CAROL")
    slack = ms.stack.standins.slack
    done = await slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL")
    assert done[-1]["text"].startswith("Customer c1 is forgotten")
    await ms.stack.outbox_idle()
    stored = await everything_stored(ms.stack)
    assert CUSTOMER not in stored
    assert "Elm Street" not in stored


async def test_an_agents_file_reaches_the_customer_as_an_attachment(ms: MailStack) -> None:
    first = mail("How do I set it up?", subject="Setup")
    ms.deliver(first)
    card = await ms.stack.card()
    await ms.sent(1)
    slack = ms.stack.standins.slack
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await eventually(_assigned(ms), "Alice's claim")
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "guide.pdf", PDF, mimetype="application/pdf"
    )

    async def with_file() -> EmailMessage | None:
        return next((m for m in ms.smtp.mails if any(m.iter_attachments())), None)

    sent = await eventually(with_file, "the mail with the guide", 15)
    [attached] = list(sent.iter_attachments())
    assert attached.get_filename() == "guide.pdf"
    assert attached.get_content() == PDF
    assert sent["In-Reply-To"] == first["Message-ID"]
    assert sent["Subject"] == "Re: Setup [#1]"
    assert sent["Auto-Submitted"] is None  # an agent sent it


async def test_without_idle_the_desk_polls(
    dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that does not offer IDLE is asked again every DESK_EMAIL_POLL_SECONDS."""
    import aioimaplib

    from adapters.email.imap import MailboxReader

    real = aioimaplib.IMAP4.has_capability

    def no_idle(self: aioimaplib.IMAP4, capability: str) -> bool:
        return capability != "IDLE" and bool(real(self, capability))

    monkeypatch.setattr(aioimaplib.IMAP4, "has_capability", no_idle)
    user = dovecot.new_user()
    state: dict[str, tuple[int, int]] = {}
    took: list[bytes] = []

    async def last(key: str) -> tuple[int, int] | None:
        return state.get(key)

    async def advance(key: str, validity: int, uid: int) -> None:
        state[key] = (validity, max(uid, state.get(key, (validity, 0))[1]))

    async def take(_validity: int, _uid: int, raw: bytes) -> None:
        took.append(raw)

    reader = MailboxReader(
        mail_server("DESK_EMAIL_IMAP_URL", dovecot.url(user)),
        take=take,
        last_read=last,
        advance=advance,
        poll_seconds=1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        await eventually(_ready_after(reader), "the first poll", 10)
        assert reader.idle is False
        dovecot.deliver(user, mail("polled", subject="Poll"))
        await eventually(lambda: _ready(len(took) == 1), "the polled mail", 10)
        assert b"polled" in took[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _ready_after(reader: Any) -> Any:
    async def probe() -> bool:
        return bool(reader.syncs >= 1)

    return probe


async def test_a_reply_to_a_resolved_ticket_reopens_it(ms: MailStack) -> None:
    ms.deliver(mail("Where is my order 55?"))
    card = await ms.stack.card()
    slack = ms.stack.standins.slack
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
    await eventually(_assigned(ms), "Alice's claim")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0ALICE")
    request = (await ms.sent(2))[-1]  # the rating request
    ms.deliver(
        mail(
            "It still has not arrived.",
            subject=str(request["Subject"]),
            in_reply_to=str(request["Message-ID"]),
        )
    )
    await ms.stack.thread_has(card["ts"], "Reopened")
    await ms.stack.thread_has(card["ts"], "It still has not arrived.")
    await ms.stack.outbox_idle()
    tickets = await ms.tickets()
    assert len(tickets) == 1 and tickets[0].status in ("new", "open")  # reopened, not a new one


async def test_healthz_says_how_the_mailbox_is_read(database_url: str, dovecot: Dovecot) -> None:
    async with email_stack(database_url, dovecot) as ms:
        url = f"{ms.stack.desk.url}/healthz"

        async def state() -> str | None:
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                found = (await resp.json()).get("email_imap")
                return found if found == "connected (IDLE)" else None

        await eventually(state, "the mailbox connected", 10)
    # Another desk, with a wrong password: listed, and /healthz still answers.
    user = dovecot.new_user()
    wrong = dataclasses.replace(
        mail_server("DESK_EMAIL_IMAP_URL", dovecot.url(user)), password="wrong"
    )
    async with email_stack(database_url, dovecot, user=user, imap=wrong) as ms:
        url = f"{ms.stack.desk.url}/healthz"

        async def failing() -> dict[str, Any] | None:
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                body: dict[str, Any] = await resp.json()
                return body if "LOGIN" in str(body.get("email_imap")) else None

        body = await eventually(failing, "the failed login in /healthz", 15)
        assert body["email_imap"].startswith("reconnecting after ImapError: LOGIN: NO")
        assert "wrong" not in json.dumps(body)
