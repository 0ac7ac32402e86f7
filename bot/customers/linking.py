"""One customer across channels: a Telegram customer's verified phone number links them to the
WhatsApp customer with the same number; an agent can undo a wrong link.

Only verified numbers link: Telegram's "share my phone number" button sends the account's own
number, and Telegram marks it as the sender's (the contact's user id is theirs); a WhatsApp id
*is* the phone number WhatsApp verified. A contact card of someone else, a number typed as text
or a matching name never links. Numbers are compared in E.164 form (``phonenumbers``).

Linking moves the newer customer's identities and tickets to the older one, so the history,
the repeat-contact rule, VIP lists (matched against any of the customer's identities) and the
reports see one person. Both link and unlink are written as ticket events on the tickets they
concern and said in the open tickets' threads.
"""

from __future__ import annotations

import phonenumbers
from sqlalchemy import select, update

from bot.core.tickets import Desk
from bot.domain.events import CustomerContact, CustomerMessage
from bot.domain.outbound import Outbound
from bot.domain.tickets import ACTIVE, CHANNEL_NAME
from storage.models import Customer, Identity, StatusLookup, Ticket

# What the customer reads; by the language they were last seen writing in.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "prompt": "To link this chat with your WhatsApp, share your phone number with the button"
        " below. We only use it to recognise you.",
        "button": "Share my phone number",
        "linked": "Thanks! We will recognise you on WhatsApp too.",
        "saved": "Thanks, your number is saved.",
        "not_own": "Please use the button to share your own number; we cannot link another"
        " person's contact.",
        "invalid": "That number could not be read. Please use the button to share it.",
    },
    "zh": {
        "prompt": "如需将此对话与您的 WhatsApp 关联，请点击下方按钮分享您的手机号码。"
        "我们只用它来识别您。",
        "button": "分享我的手机号码",
        "linked": "谢谢！我们在 WhatsApp 上也能识别您了。",
        "saved": "谢谢，您的号码已保存。",
        "not_own": "请使用按钮分享您本人的号码；我们无法关联他人的联系人。",
        "invalid": "无法识别该号码，请使用按钮分享。",
    },
    "es": {
        # "usted", as in every other Spanish text the desk sends (rules.yaml).
        "prompt": "Para vincular este chat con su WhatsApp, comparta su número de teléfono con"
        " el botón de abajo. Solo lo usamos para reconocerle.",
        "button": "Compartir mi número",
        "linked": "¡Gracias! También le reconoceremos en WhatsApp.",
        "saved": "Gracias, su número está guardado.",
        "not_own": "Use el botón para compartir su propio número; no podemos vincular el"
        " contacto de otra persona.",
        "invalid": "No pudimos leer ese número. Use el botón para compartirlo.",
    },
    "ru": {
        "prompt": "Чтобы связать этот чат с вашим WhatsApp, поделитесь номером телефона кнопкой"
        " ниже. Мы используем его только чтобы узнавать вас.",
        "button": "Поделиться моим номером",
        "linked": "Спасибо! Теперь мы узнаем вас и в WhatsApp.",
        "saved": "Спасибо, ваш номер сохранён.",
        "not_own": "Пожалуйста, поделитесь своим номером с помощью кнопки; чужой контакт"
        " связать нельзя.",
        "invalid": "Не удалось прочитать номер. Пожалуйста, поделитесь им с помощью кнопки.",
    },
}


def texts(language: str | None) -> dict[str, str]:
    return TEXTS.get((language or "en").split("-")[0].lower(), TEXTS["en"])


def e164(phone: str) -> str | None:
    """``+447700900123`` for any way of writing a full international number, else None. Both
    platforms give numbers with the country code (WhatsApp ids and Telegram contacts; Telegram
    leaves out the plus sign)."""
    digits = phone.strip()
    if not digits.startswith("+"):
        digits = "+" + digits
    try:
        number = phonenumbers.parse(digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def ask_for_number(desk: Desk, channel: str, chat_id: str, language: str | None) -> None:
    said = texts(language)
    desk.fx.say(
        Outbound(
            channel="telegram" if channel == "telegram" else "whatsapp",
            kind="text",
            destination=chat_id,
            text=said["prompt"],
            ask_contact=said["button"],
        )
    )


async def offer_link(desk: Desk, ev: CustomerMessage) -> None:
    """The customer typed /link: the share-my-number button, and no ticket."""
    ident = await desk.identity(ev.channel, ev.sender, ev.chat_id)
    customer = await desk.s.get_one(Customer, ident.customer_id)
    ask_for_number(desk, ev.channel, ev.chat_id, customer.language or ev.sender.language)
    desk.decided("customers.link_offered customer=%d", customer.id)


def _reply(desk: Desk, ev: CustomerContact, text: str) -> None:
    desk.fx.say(
        Outbound(
            channel="telegram",
            kind="text",
            destination=ev.chat_id,
            text=text,
            remove_keyboard=True,
        )
    )


async def contact_shared(desk: Desk, ev: CustomerContact) -> None:
    """A Telegram customer shared a number: keep it if it is their own, and link them to the
    WhatsApp customer with that number if there is one."""
    ident = await desk.identity(ev.channel, ev.sender, ev.chat_id)
    customer = await desk.s.get_one(Customer, ident.customer_id)
    said = texts(customer.language or ev.sender.language)
    if not ev.own:
        _reply(desk, ev, said["not_own"])
        desk.decided("customers.contact_refused customer=%d reason=not_own", customer.id)
        return
    number = e164(ev.phone)
    if number is None:
        _reply(desk, ev, said["invalid"])
        desk.decided("customers.contact_refused customer=%d reason=invalid", customer.id)
        return
    ident.phone = number
    whatsapp = await desk.s.scalar(
        select(Identity).where(
            Identity.channel == "whatsapp", Identity.external_id == number.removeprefix("+")
        )
    )
    if whatsapp is None or whatsapp.customer_id == customer.id:
        _reply(desk, ev, said["saved"] if whatsapp is None else said["linked"])
        return
    survivor = await link(desk, customer.id, whatsapp.customer_id, actor="customer")
    _reply(desk, ev, said["linked"])
    desk.decided("customers.linked customer=%d by=verified_phone", survivor)


async def _tickets_of(desk: Desk, customer_id: int) -> list[Ticket]:
    rows = await desk.s.scalars(
        select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.id)
    )
    return list(rows.all())


def _channels(identities: list[Identity]) -> str:
    names = CHANNEL_NAME
    return " and ".join(sorted({names.get(i.channel, i.channel) for i in identities}))


async def link(desk: Desk, a: int, b: int, *, actor: str, how: str = "phone") -> int:
    """Make customers ``a`` and ``b`` one: the older keeps its id and takes the other's
    identities and tickets. Returns the customer id that remains. ``how``: what proved them
    one person, ``phone`` or ``email`` (bot/customers/email_link.py)."""
    proof = "e-mail address" if how == "email" else "phone number"
    keep, gone = (a, b) if a < b else (b, a)
    kept = await desk.s.get_one(Customer, keep)
    merged = await desk.s.get_one(Customer, gone)
    moving = list(
        (await desk.s.scalars(select(Identity).where(Identity.customer_id == gone))).all()
    )
    desk.made.forget()  # identities and tickets change customer behind the session's back
    await desk.s.execute(
        update(Identity).where(Identity.customer_id == gone).values(customer_id=keep)
    )
    await desk.s.execute(update(Ticket).where(Ticket.customer_id == gone).values(customer_id=keep))
    await desk.s.execute(
        update(StatusLookup).where(StatusLookup.customer_id == gone).values(customer_id=keep)
    )
    if not kept.language and merged.language:
        kept.language = merged.language
    await desk.s.flush()
    await desk.s.delete(merged)
    everyone = await _tickets_of(desk, keep)
    identities = list(
        (await desk.s.scalars(select(Identity).where(Identity.customer_id == keep))).all()
    )
    for ticket in everyone:
        desk.history(
            ticket, "customer", actor, f"c{gone}", f"c{keep}", f"linked: same verified {how}"
        )
        if ticket.status in ACTIVE and ticket.slack_ts:
            desk.thread(
                ticket,
                f"🔗 This customer is one person on {_channels(identities)} now (linked by a"
                f" verified {proof}): {len(everyone)}"
                f" {'ticket' if len(everyone) == 1 else 'tickets'} in their history."
                f" `/desk unlink c{keep} {moving[0].channel if moving else 'whatsapp'}` undoes it.",
            )
    return keep


class UnlinkError(ValueError):
    """What cannot be unlinked, said for the agent."""


async def unlink(desk: Desk, customer_id: int, channel: str, *, actor: str) -> int:
    """Split the customer's ``channel`` identities (and the tickets on that channel) off into a
    new customer. Returns the new customer's id."""
    customer = await desk.s.get(Customer, customer_id)
    if customer is None:
        raise UnlinkError(f"there is no customer c{customer_id}")
    identities = list(
        (await desk.s.scalars(select(Identity).where(Identity.customer_id == customer_id))).all()
    )
    leaving = [i for i in identities if i.channel == channel]
    if not leaving:
        raise UnlinkError(f"customer c{customer_id} has no {channel} identity")
    if len(leaving) == len(identities):
        raise UnlinkError(f"customer c{customer_id} is only on {channel}: nothing to unlink")
    split = Customer(name=customer.name, language=customer.language, created_at=desk.now)
    desk.s.add(split)
    await desk.s.flush()
    for ident in leaving:
        ident.customer_id = split.id
    tickets = await _tickets_of(desk, customer_id)
    for ticket in tickets:
        if ticket.channel == channel:
            ticket.customer_id = split.id
            desk.history(ticket, "customer", actor, f"c{customer_id}", f"c{split.id}", "unlinked")
        else:
            desk.history(
                ticket,
                "customer",
                actor,
                f"c{customer_id}",
                f"c{customer_id}",
                f"unlinked {channel}",
            )
        if ticket.status in ACTIVE and ticket.slack_ts:
            desk.thread(
                ticket,
                f"✂️ <@{actor}> unlinked this customer's {channel} identity: it is customer"
                f" c{split.id} now.",
            )
    return split.id
