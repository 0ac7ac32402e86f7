"""Self-service: what the desk works out or answers for customers before (or without) a ticket.

- The customer's language: the platform's hint (Telegram's app language; WhatsApp gives none)
  checked against the text itself with :func:`nlp.language.detect_language`.
- Status by ticket number: Telegram ``/status`` and ``/status 123``; on either channel a message
  that is only ``status 123``, ``#123`` or the localized word (``状态 123``, ``estado 123``,
  ``статус 123``); and the "My tickets" button under the acknowledgement. A lookup never opens
  or reopens a ticket; it is recorded in ``status_lookups``, which is also what the per-customer
  rate limit counts, so numbers cannot be walked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.domain.events import CustomerButton, CustomerMessage
from bot.domain.outbound import Button, Outbound
from bot.domain.rules import Rules, Texts
from storage.models import Customer, StatusLookup, Ticket

if TYPE_CHECKING:  # the desk calls in here; only its type is needed
    from bot.core.tickets import Desk

# The "My tickets" button's data (Telegram callback_data / WhatsApp reply id).
STATUS_BUTTON = "status:mine"
# Ticket numbers are ids; twelve digits is far beyond any desk and keeps within BIGINT.
_NUMBER = r"#?\s*(\d{1,12})"
_COMMAND = re.compile(rf"/status(?:@\w+)?(?:\s+{_NUMBER})?", re.IGNORECASE)
_HASH = re.compile(r"#\s*(\d{1,12})")
_WORD = re.compile(rf"([^\W\d_]+)\s*[:：]?\s*(?:{_NUMBER})?\s*[.!?？。]?")


def primary(tag: str | None) -> str | None:
    """ "zh-hans" → "zh"; None stays None."""
    return tag.lower().split("-")[0] if tag else None


def choose_language(hint: str | None, detected: str | None) -> str | None:
    """The language to answer a message in, or None when neither source says anything.

    The platform's hint wins while the text agrees with it (it may be more precise, "zh-hans");
    a confident detection wins when there is no hint (WhatsApp) or when it disagrees: Telegram's
    hint is the language of the customer's app, not of what they write. ``detect_language``
    already declines short or ambiguous text, so "ok" or "thanks" never overrides anything.
    """
    if detected is None:
        return hint
    if hint is not None and primary(hint) == detected:
        return hint
    return detected


# -- status by ticket number ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRequest:
    ticket: int | None  # None: list the customer's tickets
    language: str | None = None  # the language whose status word they used, if not English


def status_words(rules: Rules) -> dict[str, str | None]:
    """Each status word customers may write (casefolded) → the language it tells of. English
    "status" is always understood; it and the default language's word tell nothing (many
    languages write "status"), so those answers follow the customer's known language."""
    words: dict[str, str | None] = {"status": None}
    for language, texts in rules.texts.languages.items():
        told = None if language == rules.texts.default_language else language
        words.setdefault(texts.status_word.casefold(), told)
    return words


def parse_status_request(text: str, words: dict[str, str | None]) -> StatusRequest | None:
    """The lookup a message asks for, when the message is nothing but a lookup."""
    text = text.strip()
    if m := _COMMAND.fullmatch(text):
        return StatusRequest(int(m[1]) if m[1] else None)
    if m := _HASH.fullmatch(text):
        return StatusRequest(int(m[1]))
    if (m := _WORD.fullmatch(text)) is not None and m[1].casefold() in words:
        return StatusRequest(int(m[2]) if m[2] else None, words[m[1].casefold()])
    return None


def status_request_of(event: CustomerMessage, rules: Rules) -> StatusRequest | None:
    if not rules.status_lookup.enabled or event.attachments:
        return None
    return parse_status_request(event.text, status_words(rules))


def my_tickets_button(rules: Rules, texts: Texts) -> tuple[Button, ...]:
    """The button under the acknowledgement, when status lookups and the button are on."""
    if rules.status_lookup.enabled and rules.status_lookup.button:
        return (Button(text=texts.my_tickets, data=STATUS_BUTTON),)
    return ()


def telegram_commands(rules: Rules) -> dict[str, list[tuple[str, str]]]:
    """The bot's command menu (setMyCommands) per language: ``/status`` described with the
    "My tickets" text, in each configured language Telegram accepts (two-letter codes); ""
    is everyone else, in the default language. Empty when lookups are off."""
    if not rules.status_lookup.enabled:
        return {}
    menus = {"": [("status", rules.texts.for_language(None).my_tickets)]}
    for tag, texts in rules.texts.languages.items():
        code = primary(tag)
        if code and len(code) == 2 and code.isalpha() and code not in menus:
            menus[code] = [("status", texts.my_tickets)]
    return menus


def _state(texts: Texts, status: str) -> str:
    return str(getattr(texts, f"state_{status}", status))


def _when(ticket: Ticket) -> str:
    # The customer's time zone is unknown: UTC, said so.
    return ticket.updated_at.strftime("%Y-%m-%d %H:%M UTC")


async def answer_status(
    desk: Desk,
    ev: CustomerMessage | CustomerButton,
    request: StatusRequest,
) -> None:
    """Answer a lookup in the customer's chat and record it; no ticket changes.

    Someone else's ticket is answered exactly like a number that does not exist, and every
    answer, refusals included, counts against the same per-customer limit.
    """
    via = "button" if isinstance(ev, CustomerButton) else "message"
    if isinstance(ev, CustomerButton) and ev.callback_query_id:
        desk.fx.say(
            Outbound(
                channel=ev.channel,
                kind="answer_callback",
                destination=ev.chat_id,
                callback_query_id=ev.callback_query_id,
            )
        )
    ident = await desk.identity(ev.channel, ev.sender, ev.chat_id)
    customer = await desk.s.get_one(Customer, ident.customer_id)
    texts = desk.rules.texts.for_language(request.language or customer.language)
    limits = desk.rules.status_lookup
    since = desk.now - timedelta(minutes=limits.window_minutes)
    used = await desk.s.scalar(
        select(func.count())
        .select_from(StatusLookup)
        .where(
            StatusLookup.customer_id == customer.id,
            StatusLookup.at >= since,
            StatusLookup.answer != "limited",
        )
    )
    if (used or 0) >= limits.max_lookups:
        answer, text = "limited", texts.status_limited
    elif request.ticket is None:
        tickets = (
            await desk.s.scalars(
                select(Ticket)
                .where(Ticket.customer_id == customer.id)
                .order_by(Ticket.id.desc())
                .limit(limits.list_limit)
            )
        ).all()
        answer = "list"
        lines = [
            texts.status_line.format(ticket=t.id, state=_state(texts, t.status), updated=_when(t))
            for t in tickets
        ]
        text = texts.status_list.format(tickets="\n".join(lines)) if lines else texts.status_none
    else:
        ticket = await desk.s.get(Ticket, request.ticket)
        if ticket is None or ticket.customer_id != customer.id:
            answer = "unknown" if ticket is None else "not_theirs"
            text = texts.status_unknown.format(ticket=request.ticket)
        else:
            answer = "found"
            text = texts.status_one.format(
                ticket=ticket.id, state=_state(texts, ticket.status), updated=_when(ticket)
            )
    desk.s.add(
        StatusLookup(
            customer_id=customer.id,
            channel=ev.channel,
            via=via,
            asked=request.ticket,
            answer=answer,
            at=desk.now,
        )
    )
    desk.fx.say(Outbound(channel=ev.channel, kind="text", destination=ev.chat_id, text=text))
    desk.decided("selfservice.status_lookup customer=%d via=%s answer=%s", customer.id, via, answer)
