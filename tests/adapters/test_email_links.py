"""Linking an e-mail address, the pure parts: what counts as ``/link name@example.com``, the
address as the desk records it, the signed token, and the mail with the link. The whole path
(Telegram, Dovecot, aiosmtpd, the page) is in tests/e2e/test_email_link.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.email.links import identity_key, is_link_mail, link_mail, sign, verify
from adapters.email.ratings import link_key
from bot.base.settings import load_settings
from bot.customers.email_link import (
    TEXTS,
    button_data,
    normal_address,
    parse_button_data,
    typed_address,
)
from bot.domain.events import CustomerMessage, Sender
from bot.domain.outbound import Button, Outbound

EMAIL = {
    "SLACK_BOT_TOKEN": "x",
    "SLACK_SIGNING_SECRET": "y",
    "DESK_EMAIL_ADDRESS": "support@example.com",
    "DESK_EMAIL_IMAP_URL": "imaps://support%40example.com:secret1@imap.example.com/INBOX",
    "DESK_EMAIL_SMTP_URL": "smtps://support%40example.com:secret2@smtp.example.com",
}


def said(text: str, channel: str = "telegram", shared: str | None = None) -> CustomerMessage:
    return CustomerMessage.model_validate(
        {
            "channel": channel,
            "external_id": "1",
            "conversation": "c",
            "sender": Sender(external_id="55"),
            "chat_id": "55",
            "platform_message_id": "1",
            "text": text,
            "shared": shared,
        }
    )


@pytest.mark.parametrize(
    ("text", "channel", "typed"),
    [
        ("/link anna@example.com", "telegram", "anna@example.com"),
        ("  /LINK   Anna@Example.com  ", "telegram", "Anna@Example.com"),
        ("link anna@example.com", "whatsapp", "anna@example.com"),
        ("/link", "telegram", None),  # the phone link, as before
        ("/link ", "whatsapp", None),
        ("please link anna@example.com", "telegram", None),
        ("/link anna@example.com", "email", None),  # an e-mail customer has the address
        ("/linked anna@example.com", "telegram", None),
        ("/link anna at example", "telegram", "anna at example"),  # answered: not an address
        ("link is broken", "telegram", None),  # something they say, for a ticket
        ("Link anna@example.com please", "whatsapp", None),
    ],
)
def test_what_counts_as_a_request(text: str, channel: str, typed: str | None) -> None:
    assert typed_address(said(text, channel)) == typed


def test_a_shared_contact_is_never_a_request() -> None:
    assert typed_address(said("/link anna@example.com", shared="contact")) is None


@pytest.mark.parametrize(
    ("typed", "address"),
    [
        ("Anna.Smith+shop@Example.CO.uk", "anna.smith+shop@example.co.uk"),
        ("<anna@example.com>", "anna@example.com"),
        ("anna@", None),
        ("anna@example", None),
        ("anna example@example.com", None),
        ("a@b@example.com", None),
        ("anna@example.com, bob@example.com", None),
        ("x" * 80 + "@example.com", None),  # longer than the desk keeps senders
    ],
)
def test_addresses_are_kept_as_the_adapter_keeps_senders(typed: str, address: str | None) -> None:
    assert normal_address(typed) == address


def test_button_data_round_trips_and_fits() -> None:
    data = button_data(123456789, 4_102_444_800)
    assert parse_button_data(data) == (123456789, 4_102_444_800)
    assert parse_button_data("email_link:x:1") is None
    assert parse_button_data("rate:1:2:3") is None
    assert len(data) <= 64


def test_tokens_are_signed_and_name_identity_address_and_expiry() -> None:
    settings = load_settings(EMAIL).email
    assert settings is not None
    key = identity_key(settings)
    assert key != link_key(settings)  # a rating token is never a link token
    token = sign(key, 7, "anna@example.com", 1_900_000_000)
    assert verify(key, token) == (7, "anna@example.com", 1_900_000_000)
    assert verify(b"o" * 32, token) is None  # another desk's key
    body, _, mac = token.partition(".")
    other = sign(key, 7, "eve@example.com", 1_900_000_000).partition(".")[0]
    assert verify(key, f"{other}.{mac}") is None  # moved to another address
    assert verify(key, token[:-2]) is None
    assert verify(key, body) is None
    assert verify(key, "") is None


def test_the_link_mail() -> None:
    texts = TEXTS["en"]
    message = Outbound(
        channel="email",
        kind="text",
        destination="anna@example.com#link",
        text=f"{texts['subject']}\n\nSomeone asked.",
        buttons=(Button(text=texts["button"], data=button_data(7, 1_900_000_000)),),
        outbox_id=3,
    )
    assert is_link_mail(message)
    assert not is_link_mail(message.model_copy(update={"buttons": ()}))
    key = b"k" * 32
    mail = link_mail(
        message,
        key=key,
        public_url="https://desk.example.com",
        sender="support@example.com",
        sender_name="Support",
        to="anna@example.com",
        message_id="desk.3.abc@example.com",
        when=datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
    )
    assert mail["Subject"] == "Link your e-mail address"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["To"] == "anna@example.com"
    assert mail["In-Reply-To"] is None
    url = f"https://desk.example.com/link/{sign(key, 7, 'anna@example.com', 1_900_000_000)}"
    plain = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().startswith("Someone asked.")
    assert f"Link my e-mail: {url}" in plain.get_content()
    assert f'href="{url}"' in html.get_content()


def test_every_language_has_every_text() -> None:
    for language, texts in TEXTS.items():
        assert texts.keys() == TEXTS["en"].keys(), language
        assert "{address}" in texts["sent"] and "{address}" in texts["mail"], language
