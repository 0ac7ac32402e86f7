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

from datetime import timedelta

from sqlalchemy import func, select

from bot.core.tickets import Desk
from bot.domain.customer_requests import StatusRequest
from bot.domain.events import CustomerButton, CustomerMessage
from bot.domain.language import primary
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules, Texts
from storage.models import Customer, StatusLookup, Ticket


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
