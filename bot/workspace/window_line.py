"""The line a WhatsApp ticket's card, App Home and Reply modal show about its 24-hour window."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.rules import Rules
from bot.domain.window import window_note
from storage import last_inbound
from storage.models import Identity, OutboxRow, Ticket


async def whatsapp_window(
    session: AsyncSession, rules: Rules, now: datetime, ticket: Ticket
) -> str | None:
    """A WhatsApp ticket's window as the card, App Home and Reply modal say it (free-form
    until when, or a template and how many replies wait); None on other channels."""
    if ticket.channel != "whatsapp":
        return None
    last = await session.scalar(
        select(Identity.last_inbound_at).where(
            Identity.channel == "whatsapp", Identity.chat_id == ticket.chat_id
        )
    )
    held = await session.scalar(
        select(func.count())
        .select_from(OutboxRow)
        .where(
            OutboxRow.destination_key == f"whatsapp:{ticket.chat_id}",
            OutboxRow.status == "held",
        )
    )
    # What this transaction's customers wrote is written at its commit (storage/last_inbound.py).
    noted = last_inbound.kept(session, "whatsapp", ticket.chat_id)
    if noted is not None and (last is None or noted > last):
        last = noted
    return window_note(last, rules.whatsapp, now, int(held or 0))
