"""One customer across channels by e-mail: a Telegram or WhatsApp customer's verified address
becomes an e-mail identity of theirs, so their mail joins the same customer.

Never on a typed claim alone: ``/link name@example.com`` makes the desk mail that address a
link to the desk (``{DESK_PUBLIC_URL}/link/<signed token>``, built by the e-mail adapter from
the button this module puts on the mail, adapters/email/links.py). Only whoever reads that
mailbox can press the link's button; the press comes back as a ``CustomerButton`` on the e-mail
channel, and :func:`confirm` links: the address becomes an identity of the customer who asked,
or, when an e-mail customer with that address exists, the two customers are made one with
:func:`bot.customers.linking.link` (the older keeps its id and takes the other's identities
and tickets). The token names the chat identity that asked (so the customer it belongs to now,
after any link or unlink since), the address and an expiry; it is checked, and used once, by
the adapter before the press reaches the inbox.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.tickets import Desk
from bot.customers.linking import link
from bot.domain.events import CustomerButton, CustomerMessage
from bot.domain.mrkdwn import escape
from bot.domain.outbound import Button, Outbound
from bot.domain.tickets import ACTIVE
from storage import crypto
from storage.models import Customer, Identity, OutboxRow, Ticket

VALID_FOR = timedelta(minutes=30)
BUTTON_PREFIX = "email_link:"
# The chat id the link mail goes to: the address, on a thread of its own (a reply to the mail
# opens a ticket there like any new mail would).
LINK_THREAD = "link"
# As the e-mail adapter takes senders (adapters/email/parse.py): lower case, room in a chat id
# for the thread's key.
MAX_ADDRESS = 88
ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\.]+")
LINK_COMMAND = re.compile(r"^\s*/?link\s+(?P<address>\S.*?)\s*$", re.I | re.S)

# What the customer reads (and the mail they get); by the language they were last seen writing
# in, like the phone link's texts (bot/customers/linking.py).
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "sent": "We sent a link to {address}. Open it within 30 minutes and press the button"
        " to link your e-mail with this chat.",
        "linked": "Thanks! We will recognise your e-mail too.",
        "invalid": "That does not look like an e-mail address. Please write it like this:"
        " /link name@example.com",
        "unavailable": "Linking by e-mail is not available here.",
        "subject": "Link your e-mail address",
        "mail": "Someone asked to link {address} with their {channel} chat with us. If that was"
        " you, open the link below within 30 minutes and press the button. If it was not you,"
        " ignore this mail: nothing is linked without the button.",
        "button": "Link my e-mail",
    },
    "zh": {
        "sent": "我们已向 {address} 发送了一个链接。请在 30 分钟内打开并点击按钮，"
        "将您的邮箱与此对话关联。",
        "linked": "谢谢！我们也能通过您的电子邮件识别您了。",
        "invalid": "这看起来不像电子邮件地址。请这样输入：/link name@example.com",
        "unavailable": "此处不支持通过电子邮件关联。",
        "subject": "关联您的电子邮件地址",
        "mail": "有人请求将 {address} 与其在 {channel} 上与我们的对话关联。如果是您本人，"
        "请在 30 分钟内打开下面的链接并点击按钮。"
        "如果不是您，请忽略此邮件：不点击按钮不会关联任何内容。",
        "button": "关联我的邮箱",
    },
    "es": {
        # "usted", as in every other Spanish text the desk sends (rules.yaml).
        "sent": "Le enviamos un enlace a {address}. Ábralo en los próximos 30 minutos y pulse"
        " el botón para vincular su correo con este chat.",
        "linked": "¡Gracias! También le reconoceremos por su correo electrónico.",
        "invalid": "Eso no parece una dirección de correo. Escríbala así: /link nombre@ejemplo.com",
        "unavailable": "La vinculación por correo electrónico no está disponible aquí.",
        "subject": "Vincule su dirección de correo",
        "mail": "Alguien pidió vincular {address} con su chat de {channel} con nosotros. Si fue"
        " usted, abra el enlace de abajo en los próximos 30 minutos y pulse el botón. Si no fue"
        " usted, ignore este correo: nada se vincula sin el botón.",
        "button": "Vincular mi correo",
    },
    "ru": {
        "sent": "Мы отправили ссылку на {address}. Откройте её в течение 30 минут и нажмите"
        " кнопку, чтобы связать вашу почту с этим чатом.",
        "linked": "Спасибо! Теперь мы узнаем вас и по электронной почте.",
        "invalid": "Это не похоже на адрес электронной почты. Напишите так: /link name@example.com",
        "unavailable": "Связать чат с электронной почтой здесь нельзя.",
        "subject": "Подтвердите ваш адрес электронной почты",
        "mail": "Кто-то попросил связать {address} со своим чатом {channel} с нами. Если это"
        " были вы, откройте ссылку ниже в течение 30 минут и нажмите кнопку. Если нет,"
        " просто проигнорируйте это письмо: без кнопки ничего не связывается.",
        "button": "Связать мою почту",
    },
}


def email_texts(language: str | None) -> dict[str, str]:
    return TEXTS.get((language or "en").split("-")[0].lower(), TEXTS["en"])


def typed_address(ev: CustomerMessage) -> str | None:
    """What a Telegram or WhatsApp customer typed after ``/link`` (``/link name@example.com``),
    or None when it is not such a request (``/link`` alone stays the phone link)."""
    if ev.channel not in ("telegram", "whatsapp") or ev.shared is not None:
        return None
    found = LINK_COMMAND.match(ev.text)
    if found is None:
        return None
    typed = found.group("address")
    # "/link …" is always the command; without the slash, only "link" and one address ("link
    # is broken" is something the customer says, for a ticket).
    if ev.text.lstrip().startswith("/") or ("@" in typed and not any(c.isspace() for c in typed)):
        return typed
    return None


def is_email_link_request(ev: CustomerMessage) -> bool:
    return typed_address(ev) is not None


def normal_address(typed: str) -> str | None:
    """The address in the form the e-mail adapter records senders (lower case), or None when
    it is not one address."""
    address = typed.strip().strip("<>").strip().lower()
    if len(address) > MAX_ADDRESS or ADDRESS.fullmatch(address) is None:
        return None
    return address


def button_data(identity_id: int, expires: int) -> str:
    """What the link mail's button carries to the e-mail adapter, which turns it into the
    signed link (the address is the mail's own)."""
    return f"{BUTTON_PREFIX}{identity_id}:{expires}"


def parse_button_data(data: str) -> tuple[int, int] | None:
    """``(identity id, expiry as a Unix time)`` of a link button, or None."""
    if not data.startswith(BUTTON_PREFIX):
        return None
    ident, _, expires = data.removeprefix(BUTTON_PREFIX).partition(":")
    if not (ident.isascii() and ident.isdigit() and expires.isascii() and expires.isdigit()):
        return None
    return int(ident), int(expires)


def confirmed_data(identity_id: int) -> str:
    """The data of the ``CustomerButton`` a press of the link's button becomes."""
    return f"{BUTTON_PREFIX}{identity_id}"


def is_confirmation(ev: CustomerButton) -> bool:
    return ev.channel == "email" and ev.data.startswith(BUTTON_PREFIX)


def _say(desk: Desk, channel: str, chat_id: str, text: str) -> None:
    desk.fx.say(
        Outbound(
            channel="telegram" if channel == "telegram" else "whatsapp",
            kind="text",
            destination=chat_id,
            text=text,
        )
    )


async def request(desk: Desk, ev: CustomerMessage, *, enabled: bool) -> None:
    """``/link name@example.com``: the link mailed to that address, and no ticket. ``enabled``:
    the desk has a mailbox and a public URL for the link to point at."""
    typed = typed_address(ev) or ""
    ident = await desk.identity(ev.channel, ev.sender, ev.chat_id)
    customer = await desk.s.get_one(Customer, ident.customer_id)
    said = email_texts(customer.language or ev.sender.language)
    if not enabled:
        _say(desk, ev.channel, ev.chat_id, said["unavailable"])
        desk.decided("customers.email_link_unavailable customer=%d", customer.id)
        return
    address = normal_address(typed)
    if address is None:
        _say(desk, ev.channel, ev.chat_id, said["invalid"])
        desk.decided("customers.email_link_invalid customer=%d", customer.id)
        return
    expires = int((desk.now + VALID_FOR).timestamp())
    channel = "Telegram" if ev.channel == "telegram" else "WhatsApp"
    desk.fx.say(
        Outbound(
            channel="email",
            kind="text",
            destination=f"{address}#{LINK_THREAD}",
            # The adapter takes the first paragraph as the subject (adapters/email/links.py).
            text=f"{said['subject']}\n\n{said['mail'].format(address=address, channel=channel)}",
            buttons=(Button(text=said["button"], data=button_data(ident.id, expires)),),
        )
    )
    _say(desk, ev.channel, ev.chat_id, said["sent"].format(address=address))
    desk.decided("customers.email_link_sent customer=%d identity=%d", customer.id, ident.id)


async def confirm(desk: Desk, ev: CustomerButton) -> None:
    """The link's button was pressed: the address is the asking customer's from now on."""
    ident_id = int(ev.data.removeprefix(BUTTON_PREFIX) or 0)
    address = ev.sender.external_id
    asked = await desk.s.get(Identity, ident_id)
    if asked is None or asked.external_id == f"forgotten-{asked.id}":
        # Forgotten since it asked (bot/customers/privacy.py): nobody to link the address to.
        desk.decided("customers.email_link_lost identity=%d", ident_id)
        return
    customer_id = asked.customer_id
    # Told in the language of the chat that asked (the other side's may differ).
    said = email_texts((await desk.s.get_one(Customer, customer_id)).language)
    known = await desk.s.scalar(
        select(Identity).where(Identity.channel == "email", Identity.external_id == address)
    )
    if known is None:
        desk.s.add(
            Identity(
                customer_id=customer_id,
                channel="email",
                external_id=address,
                chat_id=address,
                username=None,
                phone=None,
            )
        )
        await desk.s.flush()
        await _note_added(desk, customer_id, address)
        survivor = customer_id
    elif known.customer_id == customer_id:
        survivor = customer_id  # pressed again, or linked already: nothing changes
    else:
        survivor = await link(desk, customer_id, known.customer_id, actor="customer", how="email")
    _say(desk, asked.channel, asked.chat_id, said["linked"])
    desk.decided("customers.linked customer=%d by=verified_email", survivor)


async def _note_added(desk: Desk, customer_id: int, address: str) -> None:
    """The address is new to the desk: each of the customer's tickets gets a ``customer``
    event, and the open ones' threads a line, as a link does."""
    tickets = list(
        (
            await desk.s.scalars(
                select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.id)
            )
        ).all()
    )
    for ticket in tickets:
        desk.history(
            ticket,
            "customer",
            "customer",
            f"c{customer_id}",
            f"c{customer_id}",
            "linked: verified e-mail address",
        )
        if ticket.status in ACTIVE and ticket.slack_ts:
            desk.thread(
                ticket,
                f"🔗 This customer verified the e-mail address {escape(address)}: their mail"
                f" joins customer c{customer_id} now. `/desk unlink c{customer_id} email`"
                " undoes it.",
            )


async def link_mails(s: AsyncSession, identity_ids: list[int]) -> list[OutboxRow]:
    """The outbox rows of the link mails these chat identities asked for: they carry the
    address, and are erased with the customer (bot/customers/privacy.py)."""
    if not identity_ids:
        return []
    asked = set(identity_ids)
    mails = [OutboxRow.channel == "email"]
    if crypto.keyring() is None:
        mails.append(OutboxRow.destination_key.like(f"email:%#{LINK_THREAD}"))
    # With a key the destination is sealed (storage/crypto.Address): compared once read back.
    rows = await s.scalars(select(OutboxRow).where(*mails))
    found = []
    for row in rows:
        if not row.destination_key.endswith(f"#{LINK_THREAD}"):
            continue
        for button in (row.payload or {}).get("buttons") or ():
            named = parse_button_data(str(button.get("data", "")))
            if named is not None and named[0] in asked:
                found.append(row)
                break
    return found
