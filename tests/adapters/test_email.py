"""The email channel's pure parts: settings, parsing one mail, the subject rules, composing a
reply. The servers are exercised in tests/e2e/test_email.py."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.compose import compose, message_id_for
from adapters.email.parse import new_text, parse_mail
from bot.base.settings import SettingsError, load_settings
from bot.domain.events import CustomerMessage, Ignored
from bot.domain.mail import base_subject, reply_subject, ticket_token
from bot.domain.outbound import FileContent

from .adapter_fakes import FakeInbox

BASE = {"SLACK_BOT_TOKEN": "x", "SLACK_SIGNING_SECRET": "y"}
EMAIL = {
    "DESK_EMAIL_ADDRESS": "Support@Example.com",
    "DESK_EMAIL_IMAP_URL": "imaps://support%40example.com:p%2Fw%40rd@imap.example.com/INBOX",
    "DESK_EMAIL_SMTP_URL": "smtp://support%40example.com:p%2Fw%40rd@smtp.example.com:587",
}


# -- settings ----------------------------------------------------------------------------------


def test_settings_decode_the_user_name_and_pick_tls_and_ports() -> None:
    s = load_settings({**BASE, **EMAIL})
    assert s.email is not None and s.customer_channels == ["email"]
    assert s.email.address == "support@example.com"
    imap, smtp = s.email.imap, s.email.smtp
    assert (imap.user, imap.password, imap.host, imap.port, imap.tls, imap.mailbox) == (
        "support@example.com",
        "p/w@rd",
        "imap.example.com",
        993,
        "implicit",
        "INBOX",
    )
    assert (smtp.port, smtp.tls) == (587, "starttls")
    assert "p/w@rd" not in repr(s.email)  # never printed
    # smtp:// to another machine may send the password in the clear: `deskbot check` warns.
    [warning] = s.email.plain_text_warnings()
    assert warning.startswith("DESK_EMAIL_SMTP_URL is smtp:// to smtp.example.com")


def test_defaults_name_and_limits() -> None:
    env = {
        **BASE,
        **EMAIL,
        "DESK_EMAIL_IMAP_URL": "imap://u:p@127.0.0.1/Support%20Desk",
        "DESK_EMAIL_SMTP_URL": "smtps://u:p@smtp.example.com",
        "DESK_EMAIL_NAME": "Example Support",
        "DESK_EMAIL_MAX_ATTACHMENT_MB": "5",
    }
    s = load_settings(env)
    assert s.email is not None
    assert (s.email.imap.port, s.email.imap.mailbox, s.email.imap.tls) == (
        143,
        "Support Desk",
        "starttls",
    )
    assert (s.email.smtp.port, s.email.smtp.tls) == (465, "implicit")
    assert (s.email.name, s.email.max_attachment_mb) == ("Example Support", 5)
    assert s.email.plain_text_warnings() == []  # imap:// on loopback, smtps:// elsewhere


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"DESK_EMAIL_SMTP_URL": ""}, "Email is half configured: set DESK_EMAIL_SMTP_URL"),
        ({"DESK_EMAIL_ADDRESS": "support"}, "DESK_EMAIL_ADDRESS must be an address"),
        ({"DESK_EMAIL_IMAP_URL": "pop3://u:p@h"}, "DESK_EMAIL_IMAP_URL must start with imap://"),
        ({"DESK_EMAIL_IMAP_URL": "imap://h/INBOX"}, "needs a user name and a password"),
        ({"DESK_EMAIL_SMTP_URL": "smtp://u:p@h:99999"}, "DESK_EMAIL_SMTP_URL is not a URL"),
        ({"DESK_EMAIL_SMTP_URL": "smtp://u:p@h/INBOX"}, "takes no path"),
        ({"DESK_EMAIL_MAX_ATTACHMENT_MB": "0"}, "DESK_EMAIL_MAX_ATTACHMENT_MB must be"),
    ],
)
def test_bad_email_settings_are_named(change: dict[str, str], said: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, **EMAIL, **change})
    assert said in str(err.value)
    assert "p%2Fw" not in str(err.value) and "p/w@rd" not in str(err.value)


def test_no_email_settings_means_no_email_channel() -> None:
    assert load_settings(BASE).email is None


# -- subjects ----------------------------------------------------------------------------------


def test_subject_rules() -> None:
    assert ticket_token("Re: Refund [#123]") == 123
    assert ticket_token("AW: Rückerstattung [Ticket #77]") == 77
    assert ticket_token("Re: order #55") is None  # a number in words is not the token
    assert base_subject("Re: AW: Fwd: Refund [#123]") == "Refund"
    assert reply_subject("Re: Refund [#123]", 123) == "Re: Refund [#123]"
    assert reply_subject("", 9) == "Re: Your request [#9]"


# -- parsing one mail --------------------------------------------------------------------------


def _mail(text: str = "Hello", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "Anna <Anna@Customer.test>")
    msg["To"] = "support@example.com"
    msg["Subject"] = headers.pop("Subject", "Help")
    msg["Message-ID"] = headers.pop("Message_ID", "<m1@customer.test>")
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes()


def _parse(raw: bytes) -> CustomerMessage:
    event = parse_mail(raw, "support@example.com", file_prefix="1:1", max_attachment_bytes=1000)
    assert isinstance(event, CustomerMessage)
    return event


def test_a_mail_becomes_a_customer_message() -> None:
    ev = _parse(_mail("Where is my order?", In_Reply_To="<a@x>", References="<r@x> <a@x>"))
    assert (ev.channel, ev.external_id, ev.platform_message_id) == (
        "email",
        "m1@customer.test",
        "m1@customer.test",
    )
    assert ev.sender.external_id == "anna@customer.test" and ev.sender.name == "Anna"
    assert ev.chat_id.startswith("anna@customer.test#")
    assert ev.conversation.startswith("email:") and "anna" not in ev.conversation
    assert ev.text == "Where is my order?"
    assert ev.mail is not None
    assert ev.mail.in_reply_to == ("a@x",) and ev.mail.references == ("r@x", "a@x")
    assert ev.mail.noise is None


@pytest.mark.parametrize(
    ("headers", "noise"),
    [
        ({"Auto_Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
        ({"Precedence": "bulk"}, "Precedence: bulk"),
        ({"Precedence": "auto_reply"}, "Precedence: auto_reply"),
        ({"X_Autoreply": "yes"}, "X-Autoreply"),
        ({"X_Autorespond": "yes"}, "X-Autorespond"),
        ({"From": "support@example.com"}, "own address"),
        ({"From": "MAILER-DAEMON@mx.test"}, "mailer-daemon"),
    ],
)
def test_noise_is_named(headers: dict[str, str], noise: str) -> None:
    ev = _parse(_mail(**headers))
    assert ev.mail is not None and ev.mail.noise is not None and noise in ev.mail.noise


def test_a_person_writing_with_auto_submitted_no_is_not_noise() -> None:
    ev = _parse(_mail(Auto_Submitted="no", X_Auto_Response_Suppress="All"))
    assert ev.mail is not None and ev.mail.noise is None


def test_quotes_and_signatures_are_stripped_in_several_languages() -> None:
    english = "Still broken.\n\nOn Mon, Dec 7, 2026 at 9:00 Support <s@x> wrote:\n> old\n"
    german = "Geht immer noch nicht.\n\nAm 07.12.2026 um 09:00 schrieb Support <s@x>:\n> alt\n"
    signed = "Still broken.\n-- \nAnna Smith\nACME Ltd"
    assert new_text(english) == "Still broken."
    assert new_text(german) == "Geht immer noch nicht."
    assert new_text(signed) == "Still broken."
    ev = _parse(_mail(english))
    assert ev.text == "Still broken."
    assert ev.mail is not None and "> old" in ev.mail.full_text  # the original stays


def test_html_only_and_attachments_over_the_limit() -> None:
    msg = EmailMessage()
    msg["From"] = "a@customer.test"
    msg["Message-ID"] = "<h@x>"
    msg.set_content("<p>The <b>box</b> is broken</p><ul><li>one</li></ul>", subtype="html")
    msg.add_attachment(b"x" * 10, maintype="image", subtype="png", filename="small.png")
    msg.add_attachment(b"y" * 2000, maintype="application", subtype="pdf", filename="big.pdf")
    ev = _parse(msg.as_bytes())
    assert ev.text.startswith("The box is broken")
    assert "<p>" not in ev.text
    [small] = ev.attachments
    assert (small.kind, small.name, small.file_id, small.size) == (
        "image",
        "small.png",
        "1:1/0",
        10,
    )
    assert "big.pdf" in ev.text and "not relayed" in ev.text


def test_a_bounce_names_the_failed_address_and_the_mail_it_returns() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.test\r\nTo: support@example.com\r\nSubject: Undelivered\r\n"
        b"Message-ID: <b1@mx.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n"
        b"Final-Recipient: rfc822; Anna@Customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <desk.4.ab@example.com>\r\n"
        b"--B--\r\n"
    )
    ev = _parse(raw)
    assert ev.mail is not None
    assert ev.mail.bounced == "anna@customer.test"
    assert ev.mail.noise is not None and "550 5.1.1 no such user" in ev.mail.noise
    assert "desk.4.ab@example.com" in ev.mail.references


def test_mail_without_a_sender_is_kept_as_ignored() -> None:
    event = parse_mail(
        b"Subject: hi\r\n\r\nbody", "s@example.com", file_prefix="1:1", max_attachment_bytes=1
    )
    assert isinstance(event, Ignored) and "sender" in event.reason


# -- composing a reply -------------------------------------------------------------------------


def test_a_reply_continues_the_thread() -> None:
    mid = message_id_for(7, "anna@customer.test#abc", "hi", "example.com")
    assert mid == message_id_for(7, "anna@customer.test#abc", "other", "example.com")  # retries
    assert mid.endswith("@example.com")
    from datetime import UTC, datetime

    msg = compose(
        sender="support@example.com",
        sender_name="Example Support",
        to="anna@customer.test",
        subject="Refund",
        ticket_id=12,
        text="See https://example.com/help <here>",
        message_id=mid,
        in_reply_to="m2@customer.test",
        references=("m1@customer.test", "m2@customer.test"),
        automatic=False,
        when=datetime(2026, 12, 7, tzinfo=UTC),
        attachment=FileContent(data=b"%PDF", name="label.pdf", mime_type="application/pdf"),
    )
    back = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(back, EmailMessage)
    assert back["Subject"] == "Re: Refund [#12]"
    assert back["In-Reply-To"] == "<m2@customer.test>"
    assert back["References"] == "<m1@customer.test> <m2@customer.test>"
    assert back["Auto-Submitted"] is None
    html = back.get_body(preferencelist=("html",))
    assert html is not None
    assert '<a href="https://example.com/help">' in html.get_content()
    assert "&lt;here&gt;" in html.get_content()
    [attached] = list(back.iter_attachments())
    assert attached.get_filename() == "label.pdf" and attached.get_content() == b"%PDF"


def test_deskbot_check_warns_about_plain_text_off_loopback(tmp_path: Path) -> None:
    from tests.test_cli_check import deskbot

    ran = deskbot("check", {"TELEGRAM_BOT_TOKEN": "", **EMAIL}, tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("settings ok (customer channels: email;")
    assert lines[1].startswith(
        "warning: DESK_EMAIL_SMTP_URL is smtp:// to smtp.example.com, which is not this machine"
    )
    assert "p/w@rd" not in ran.stdout and "p%2Fw" not in ran.stdout


def test_rating_tokens_are_signed_and_bound_to_their_ticket() -> None:
    from adapters.email.ratings import rating_links, sign, verify
    from bot.domain.customer_requests import rating_data
    from bot.domain.outbound import Button

    key, other = b"k" * 32, b"o" * 32
    token = sign(key, 12, 40)
    assert verify(key, token) == (12, 40)
    assert verify(other, token) is None  # another desk's key
    assert verify(key, "13." + token.partition(".")[2]) is None  # moved to another ticket
    assert verify(key, token[:-2]) is None
    assert verify(key, "12.40") is None
    buttons = tuple(Button(text=str(n), data=rating_data(12, 40, n)) for n in range(1, 6))
    links = rating_links(
        key, "https://desk.example.com", (Button(text="x", data="status"), *buttons)
    )
    assert [url for _, url in links][3] == f"https://desk.example.com/rate/{token}/4"
    assert rating_links(key, None, buttons) == []  # no DESK_PUBLIC_URL: no links


def test_public_url_setting() -> None:
    s = load_settings({**BASE, **EMAIL, "DESK_PUBLIC_URL": "https://desk.example.com/"})
    assert s.email is not None and s.email.public_url == "https://desk.example.com"
    with pytest.raises(SettingsError, match="DESK_PUBLIC_URL must be"):
        load_settings({**BASE, **EMAIL, "DESK_PUBLIC_URL": "desk.example.com"})


async def test_a_mail_the_parser_chokes_on_is_kept_and_does_not_block_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import adapters.email as email_adapter

    inbox = FakeInbox()
    accepted = inbox.events

    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("a parser bug")

    monkeypatch.setattr(email_adapter, "parse_mail", broken)
    settings = load_settings({**BASE, **EMAIL}).email
    assert settings is not None
    adapter = email_adapter.EmailAdapter(settings, inbox)
    await adapter._take(7, 3, _mail())
    [event] = accepted
    assert (
        isinstance(event, Ignored) and "unparseable mail: ValueError: a parser bug" in event.reason
    )


async def test_a_sender_over_ten_mails_a_minute_is_throttled() -> None:
    import adapters.email as email_adapter

    inbox = FakeInbox()
    accepted = inbox.events

    settings = load_settings({**BASE, **EMAIL}).email
    assert settings is not None
    adapter = email_adapter.EmailAdapter(settings, inbox)
    for n in range(12):
        await adapter._take(7, n + 1, _mail(f"mail {n}", Message_ID=f"<t{n}@customer.test>"))
    await adapter._take(7, 20, _mail("other", From="bo@else.test", Message_ID="<o@else.test>"))
    noise = [e.mail.noise if isinstance(e, CustomerMessage) and e.mail else "?" for e in accepted]
    assert noise[:10] == [None] * 10
    assert noise[10] == noise[11] == "over 10 mails a minute from this sender"
    assert noise[12] is None  # someone else is not held up


def test_routing_rules_can_name_the_email_channel() -> None:
    from bot.domain.routing import Route, TicketFacts, choose_team

    route = Route.model_validate({"when": {"channel": "email"}, "team": "mailroom"})
    assert choose_team(TicketFacts(channel="email"), [route], "support").team == "mailroom"
    assert choose_team(TicketFacts(channel="telegram"), [route], "support").team == "support"


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ("refused", "Forbidden"),
        ("greylisted", "Unavailable"),
        ("auth", "Unavailable"),
        ("data", "BadRequest"),
        ("timeout", "Unavailable"),
    ],
)
async def test_smtp_errors_map_onto_the_desks_outcomes(
    error: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typing import Any

    import aiosmtplib

    import adapters.email as email_adapter
    from bot.domain.outbound import DeliveryError

    raised: dict[str, Exception] = {
        "refused": aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.test")]
        ),
        "greylisted": aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(451, "try later", "a@b.test")]
        ),
        "auth": aiosmtplib.SMTPAuthenticationError(535, "bad credentials"),
        "data": aiosmtplib.SMTPDataError(554, "message rejected as spam"),
        "timeout": aiosmtplib.SMTPConnectTimeoutError("timed out"),
    }

    async def send(*args: Any, **kwargs: Any) -> None:
        raise raised[error]

    monkeypatch.setattr(aiosmtplib, "send", send)
    settings = load_settings({**BASE, **EMAIL}).email
    assert settings is not None
    adapter = email_adapter.EmailAdapter(settings, inbox=None)  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as caught:
        await adapter._smtp(EmailMessage())
    assert type(caught.value).__name__ == outcome
    assert "p/w@rd" not in str(caught.value)
