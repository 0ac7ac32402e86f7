"""The ticket's card as the desk posts it: the :class:`bot.core.step.Cards` port.

The core asks for "the card as the ticket is now" (a new card, or an update of the card) and
for a transfer's "freeze the old card"; this module reads what the card shows and draws it with
:mod:`bot.workspace.cards`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.step import CardKind, Made, Step
from bot.domain.mrkdwn import escape
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from bot.workspace.cards import CardView, card_blocks, card_text
from bot.workspace.controls import known_intents, ticket_labels
from bot.workspace.history import story_line
from bot.workspace.window_line import whatsapp_window
from storage.models import Customer, EmailThread, Identity, KbSuggestion, Ticket


async def card_view(
    session: AsyncSession, rules: Rules, now: datetime, ticket: Ticket, made: Made | None = None
) -> CardView:
    """What the card shows. ``made``: what the drawing step created itself; for a ticket it
    opened (and a customer it met) the answers are known without asking the database."""
    customer = await session.get_one(Customer, ticket.customer_id)
    opened = made is not None and made.tickets.get(ticket.id) is ticket
    own = made.customers.get(ticket.customer_id) if made is not None and opened else None
    if own is not None and (own.channel, own.chat_id) == (ticket.channel, ticket.chat_id):
        identity: Any = own  # met in this step: its only identity
    else:
        own = None
        identity = (
            await session.execute(
                select(Identity.blocked, Identity.phone).where(
                    Identity.customer_id == ticket.customer_id,
                    Identity.channel == ticket.channel,
                    Identity.chat_id == ticket.chat_id,
                )
            )
        ).first()
    blocked = bool(identity and identity.blocked)
    # WhatsApp users with a username may be known only by a business-scoped user id.
    no_phone = ticket.channel == "whatsapp" and identity is not None and not identity.phone
    if opened and made is not None and ticket.id not in made.labelled:
        tags: tuple[str, ...] = ()  # opened in this step, which gave it no labels
        intent_label: str | None = None
    else:
        tags, intent_label = await ticket_labels(session, ticket.id)
    model_intent = (ticket.classification or {}).get("intent")
    return CardView(
        ticket_id=ticket.id,
        customer_name=customer.name,
        channel=ticket.channel,
        status=ticket.status,
        priority=ticket.priority,
        reasons=tuple(ticket.priority_reasons),
        first_message=ticket.subject,
        assignee_id=ticket.assignee_id,
        resolved_by=ticket.resolved_by,
        rating=ticket.rating,
        blocked=blocked,
        no_phone=no_phone,
        model=ticket.classification or None,
        team=ticket.team if rules.teams else "",
        assigned_by=ticket.assigned_by,
        waiting_reason=ticket.waiting_reason,
        transfer_to=tuple(t for t in rules.teams if t != ticket.team),
        sla=ticket.sla,
        assignee_name=ticket.assignee_name,
        tags=tags,
        intent_label=intent_label,
        tag_choices=rules.tags,
        intent_choices=known_intents(
            rules, model_intent if isinstance(model_intent, str) else None
        ),
        # New menus' block_ids on every update (bot/workspace/controls.py says why).
        revision=f"{int(now.timestamp() * 1000):x}",
        suggested=await _suggested(session, ticket, opened),
        kb=rules.kb.enabled,
        reply_label=reply_label(rules),
        story=None
        if own is not None and _first_time(made, ticket)
        else await story_line(session, ticket),
        window=await whatsapp_window(session, rules, now, ticket),
        mail=await _mail_line(session, ticket),
    )


async def _suggested(session: AsyncSession, ticket: Ticket, opened: bool) -> str | None:
    """The knowledge-base article suggested before the ticket was opened, if any. A ticket
    opened in this step can only have one the step gave it (the session has it)."""
    if opened:
        mine = [
            o
            for o in (*session.identity_map.values(), *session.new)
            if isinstance(o, KbSuggestion) and o.ticket_id == ticket.id
        ]
        return max(mine, key=lambda o: o.id or 0).title if mine else None
    return await session.scalar(
        select(KbSuggestion.title)
        .where(KbSuggestion.ticket_id == ticket.id)
        .order_by(KbSuggestion.id.desc())
        .limit(1)
    )


def _first_time(made: Made | None, ticket: Ticket) -> bool:
    """A customer met in this step, on one channel, whose only ticket is this one and unrated:
    the story line says nothing (story_line returns None for them)."""
    if made is None:
        return False
    theirs = [t for t in made.tickets.values() if t.customer_id == ticket.customer_id]
    return theirs == [ticket] and ticket.rating is None


def reply_label(rules: Rules) -> str | None:
    """In composer mode the Reply modal (with the message shortcut) is the one way to the
    customer; in thread mode a thread reply is, and the modal is how to reply with a macro."""
    if rules.slack.relay == "composer":
        return "Reply to customer"
    return "Reply with a macro" if rules.macros else None


class SlackCards:
    """Implements :class:`bot.core.step.Cards`."""

    async def post(self, step: Step, ticket: Ticket, kind: CardKind) -> None:
        if ticket.incident_only:
            return  # shown on its incident's card only
        view = await card_view(step.s, step.rules, step.now, ticket, step.made)
        step.fx.say(
            Outbound(
                channel="slack",
                kind=kind,
                destination=ticket.slack_channel,
                ticket_id=ticket.id,
                text=card_text(view),
                blocks=tuple(card_blocks(view)),
            )
        )

    async def freeze(self, step: Step, ticket: Ticket, note: str) -> None:
        # Addressed to the card explicitly (reply_to): it stays that card, wherever the ticket
        # goes next.
        view = dataclasses.replace(
            await card_view(step.s, step.rules, step.now, ticket, step.made), moved=note
        )
        step.fx.say(
            Outbound(
                channel="slack",
                kind="slack_card_update",
                destination=ticket.slack_channel,
                ticket_id=ticket.id,
                reply_to=ticket.slack_ts,
                text=card_text(view),
                blocks=tuple(card_blocks(view)),
            )
        )


async def _mail_line(session: AsyncSession, ticket: Ticket) -> str | None:
    """An email ticket's address and subject (bot/mail keeps them per conversation)."""
    if ticket.channel != "email":
        return None
    thread = await session.scalar(select(EmailThread).where(EmailThread.chat_id == ticket.chat_id))
    if thread is None:
        return None
    subject = f" · “{escape(thread.subject[:150])}”" if thread.subject else ""
    return f"📧 {escape(thread.address)}{subject}"
