"""A chat customer's e-mail address, verified and linked: ``/link name@example.com`` on
Telegram mails a link (real aiosmtpd), only the button on the link's page links, and the
address's mail (real Dovecot) then lands on the same customer. A used, expired or forged token
links nothing.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage

import aiohttp
from sqlalchemy import select

from adapters.email.links import identity_key, sign
from storage.models import Customer, Identity, Ticket, TicketEvent

from . import test_email
from .conftest import SUPPORT, Stack, eventually
from .test_email import CUSTOMER, MailStack, mail

# The real Dovecot and aiosmtpd of the e-mail tests, and the desk reading and sending by them.
dovecot = test_email.dovecot
ms = test_email.ms

CHAT = 77
LINK = re.compile(r"http://127\.0\.0\.1:\d+/link/[\w.-]+")


async def _identities(ms: MailStack) -> dict[str, int]:
    async with ms.stack.sessions() as s:
        rows = (await s.execute(select(Identity.channel, Identity.customer_id))).all()
        return {channel: customer for channel, customer in rows}


async def _link_mail(ms: MailStack, n: int) -> tuple[EmailMessage, str]:
    sent = (await ms.sent(n))[n - 1]
    plain = sent.get_body(preferencelist=("plain",))
    assert plain is not None
    [url] = LINK.findall(plain.get_content())
    return sent, url


async def test_a_telegram_customer_verifies_an_address_and_its_mail_joins_them(
    ms: MailStack,
) -> None:
    tg = ms.stack.standins.telegram
    await tg.customer_says(CHAT, "My parcel is late", first_name="Anna")
    card = await ms.stack.card()
    await tg.wait_for_sent(CHAT, 1)  # the acknowledgement

    # A typo is said plainly; nothing is mailed.
    await tg.customer_says(CHAT, "/link anna@", first_name="Anna")
    invalid = (await tg.wait_for_sent(CHAT, 2))[1]
    assert invalid["text"].startswith("That does not look like an e-mail address.")

    await tg.customer_says(CHAT, "/link Anna@Customer.test", first_name="Anna")
    told = (await tg.wait_for_sent(CHAT, 3))[2]
    assert told["text"].startswith(f"We sent a link to {CUSTOMER}.")
    sent, url = await _link_mail(ms, 1)
    assert sent["To"] == CUSTOMER
    assert sent["Subject"] == "Link your e-mail address"
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["In-Reply-To"] is None
    html_part = sent.get_body(preferencelist=("html",))
    assert html_part is not None and url in html_part.get_content()
    assert await _identities(ms) == {"telegram": 1}  # the claim alone links nothing

    async with aiohttp.ClientSession() as http:
        # A mail scanner opening the link only sees the button.
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.text()
            assert "Link my e-mail</button>" in page and CUSTOMER in page
        await asyncio.sleep(0.3)
        await ms.stack.outbox_idle()
        assert await _identities(ms) == {"telegram": 1}

        async with http.post(url) as resp:
            assert resp.status == 200
            assert "is linked with your chat" in await resp.text()
        thanks = (await tg.wait_for_sent(CHAT, 4))[3]
        assert thanks["text"] == "Thanks! We will recognise your e-mail too."
        assert await _identities(ms) == {"telegram": 1, "email": 1}
        await ms.stack.thread_has(card["ts"], f"verified the e-mail address {CUSTOMER}")

        # Once: the same link again says so and changes nothing.
        async with http.post(url) as resp:
            assert resp.status == 410
            assert "used already" in await resp.text()

    # Their mail is the same customer's now: one history, two tickets.
    ms.deliver(mail("Also, the invoice is wrong", subject="Invoice"))
    await ms.stack.card(2)
    async with ms.stack.sessions() as s:
        owners = (await s.execute(select(Ticket.channel, Ticket.customer_id))).all()
        assert sorted(owners) == [("email", 1), ("telegram", 1)]
        assert await s.scalar(select(Customer.id).where(Customer.id != 1)) is None
        events = (
            await s.scalars(select(TicketEvent.reason).where(TicketEvent.kind == "customer"))
        ).all()
        assert list(events) == ["linked: verified e-mail address"]
    assert len(tg.sent_to(CHAT)) == 4  # nothing more told on Telegram


async def test_an_email_customer_and_a_telegram_customer_become_one_and_an_agent_unlinks(
    ms: MailStack,
) -> None:
    tg, slack = ms.stack.standins.telegram, ms.stack.standins.slack
    ms.deliver(mail("Where is my order 55?"))
    first = await ms.stack.card()
    await ms.sent(1)  # the acknowledgement
    await tg.customer_says(CHAT, "Hola, mi pedido no llegó", first_name="Anna", language_code="es")
    second = await ms.stack.card(2)
    assert await _identities(ms) == {"email": 1, "telegram": 2}

    await tg.customer_says(CHAT, f"/link {CUSTOMER}", first_name="Anna", language_code="es")
    told = (await tg.wait_for_sent(CHAT, 2))[-1]
    assert told["text"].startswith(f"Le enviamos un enlace a {CUSTOMER}.")
    sent, url = await _link_mail(ms, 2)
    assert sent["Subject"] == "Vincule su dirección de correo"
    async with aiohttp.ClientSession() as http, http.post(url) as resp:
        assert resp.status == 200
    thanks = (await tg.wait_for_sent(CHAT, 3))[-1]
    assert thanks["text"] == "¡Gracias! También le reconoceremos por su correo electrónico."
    # The older customer (the e-mail one) keeps its id and takes the Telegram side.
    assert await _identities(ms) == {"email": 1, "telegram": 1}
    for card in (first, second):
        await ms.stack.thread_has(
            card["ts"], "🔗 This customer is one person on Email and Telegram now (linked by a"
        )
    async with ms.stack.sessions() as s:
        notes = (
            await s.scalars(select(TicketEvent.reason).where(TicketEvent.kind == "customer"))
        ).all()
        assert list(notes) == ["linked: same verified email"] * 2

    answers = await slack.slash_command("/desk", "unlink c1 email", "U0ALICE", SUPPORT)
    said = re.fullmatch(
        r"Unlinked: customer c1's email identity is customer c(\d+) now\.", answers[-1]["text"]
    )
    assert said is not None
    split = int(said.group(1))
    assert await _identities(ms) == {"email": split, "telegram": 1}
    await ms.stack.thread_has(first["ts"], "unlinked this customer's email identity")


async def test_expired_forged_and_foreign_tokens_link_nothing(ms: MailStack) -> None:
    tg = ms.stack.standins.telegram
    await tg.customer_says(CHAT, f"/link {CUSTOMER}", first_name="Anna")
    await tg.wait_for_sent(CHAT, 1)
    _, url = await _link_mail(ms, 1)
    token = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0]
    settings = ms.adapter._settings
    assert settings is not None
    async with ms.stack.sessions() as s:
        ident = await s.scalar(select(Identity.id).where(Identity.channel == "telegram"))
    assert ident is not None
    key = identity_key(settings)
    expired = sign(key, ident, CUSTOMER, 1_000_000)  # long past
    mac = token.partition(".")[2]
    # Another address in the same signature, or a made-up one: not the desk's.
    moved = sign(b"not the desk's key", ident, "eve@else.test", 4_000_000_000)
    swapped = sign(key, ident, "eve@else.test", 4_000_000_000).partition(".")[0] + "." + mac
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/{expired}") as resp:
            assert resp.status == 410
            assert "This link has expired" in await resp.text()
        async with http.post(f"{base}/{expired}") as resp:
            assert resp.status == 410
            assert "Nothing was linked" in await resp.text()
        for forged in (moved, swapped, "x" + token, token[:-2]):
            async with http.post(f"{base}/{forged}") as resp:
                assert resp.status == 404, forged
                assert "This link is not valid" in await resp.text()
    await ms.stack.outbox_idle()
    assert await _identities(ms) == {"telegram": 1}
    assert len(tg.sent_to(CHAT)) == 1  # no "Thanks"

    # Forgetting the customer who asked erases the address the link mail carried, too.
    from .test_privacy import ask, everything_stored

    assert CUSTOMER in await everything_stored(ms.stack)
    asked = await ask(ms.stack, "forget c1", "U0CAROL")
    done = await ms.stack.standins.slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL")
    assert done[-1]["text"].startswith("Customer c1 is forgotten")
    await ms.stack.outbox_idle()
    assert CUSTOMER not in await everything_stored(ms.stack)
    # The mail already delivered still holds an unexpired link: pressed now, it links the
    # address to nobody (the chat that asked is forgotten).
    async with aiohttp.ClientSession() as http, http.post(url) as resp:
        assert resp.status == 200
    await ms.stack.outbox_idle()
    assert "email" not in await _identities(ms)
    assert len(tg.sent_to(CHAT)) == 1


async def test_without_email_linking_by_address_is_not_available(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(CHAT, "/link anna@customer.test", first_name="Anna", language_code="ru")
    told = (await tg.wait_for_sent(CHAT, 1))[0]
    assert told["text"] == "Связать чат с электронной почтой здесь нельзя."
    # /link alone is the phone link, as before.
    await tg.customer_says(CHAT, "/link", first_name="Anna")
    prompt = (await tg.wait_for_sent(CHAT, 2))[1]
    assert "keyboard" in prompt["reply_markup"]

    async def no_ticket() -> bool:
        async with stack.sessions() as s:
            return await s.scalar(select(Ticket.id)) is None

    await stack.outbox_idle()
    assert await eventually(no_ticket, "no ticket for /link")


async def test_a_whatsapp_customer_links_an_address_too(ms: MailStack) -> None:
    wa = ms.stack.standins.whatsapp
    await wa.customer_says("447700900123", "/link anna@customer.test", name="Anna")
    told = (await wa.wait_for_sent("447700900123", 1))[0]
    assert told["text"]["body"].startswith(f"We sent a link to {CUSTOMER}.")
    sent, url = await _link_mail(ms, 1)
    plain = sent.get_body(preferencelist=("plain",))
    assert plain is not None and "with their WhatsApp chat" in plain.get_content()
    async with aiohttp.ClientSession() as http, http.post(url) as resp:
        assert resp.status == 200
    thanks = (await wa.wait_for_sent("447700900123", 2))[1]
    assert thanks["text"]["body"] == "Thanks! We will recognise your e-mail too."
    assert await _identities(ms) == {"whatsapp": 1, "email": 1}
    async with ms.stack.sessions() as s:
        assert await s.scalar(select(Ticket.id)) is None  # /link opened no ticket
