"""The customer's whole story: the card's one-line summary and the History modal.

The card says, in one line, what an agent should know before answering ("3rd ticket in 30
days · last rating 2/5 · also on WhatsApp"). The History button opens a modal (opened empty by
the adapter with the trigger_id, filled here through the outbox with ``views.update``) with the
customer's identities and language, every ticket of theirs across channels (status, priority,
rating, a link to its card), and a note about the customer that agents edit and save with the
modal's submit button (``customers.note``; each save is in the audit trail). Each opening of the
modal is in the audit trail too, with who opened it.

On an email ticket the modal also shows the customer's latest mails in full: the card and the
thread show only the new text (quoted history and signature stripped, adapters/email/parse.py),
and the unstripped body kept with the event in the inbox is read here, never posted in the
thread.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.step import Step
from bot.domain.events import CustomerNote, HistoryModal
from bot.domain.mrkdwn import PRIORITY_ICON, escape, slack_date
from bot.domain.outbound import Outbound
from bot.domain.tickets import CHANNEL_NAME
from bot.domain.words import counted
from bot.workspace.cards import card_link
from bot.workspace.composer import card_conversation
from bot.workspace.controls import may_act
from storage.models import AuditEntry, Customer, Identity, InboxRow, Message, Ticket

HISTORY_CALLBACK = "history_modal"
NOTE_ACTION = "customer_note"
MAX_NOTE = 3000  # a plain_text_input's max_length
MAX_LISTED = 40  # tickets listed in the modal, newest first; the rest counted under "…"
REPEAT_DAYS = 30
FULL_MAILS = 3  # an email ticket's latest customer mails shown in full, newest first
FULL_CHARS = 9000  # of all of them together: the modal's blocks stay few


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


async def story_line(s: AsyncSession, ticket: Ticket) -> str | None:
    """The card's summary of the customer, or None for a first-time, one-channel customer."""
    parts: list[str] = []
    since = ticket.created_at - timedelta(days=REPEAT_DAYS)
    recent = int(
        await s.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(
                Ticket.customer_id == ticket.customer_id,
                Ticket.created_at >= since,
                Ticket.id <= ticket.id,
            )
        )
        or 0
    )
    if recent >= 2:
        parts.append(f"{ordinal(recent)} ticket in {REPEAT_DAYS} days")
    rating = await s.scalar(
        select(Ticket.rating)
        .where(
            Ticket.customer_id == ticket.customer_id,
            Ticket.id != ticket.id,
            Ticket.rating.is_not(None),
        )
        .order_by(Ticket.id.desc())
        .limit(1)
    )
    if rating is not None:
        parts.append(f"last rating {rating}/5")
    others = sorted(
        set(
            (
                await s.scalars(
                    select(Identity.channel).where(
                        Identity.customer_id == ticket.customer_id,
                        Identity.channel != ticket.channel,
                    )
                )
            ).all()
        )
    )
    if others:
        parts.append("also on " + ", ".join(CHANNEL_NAME.get(c, c) for c in others))
    return " · ".join(parts) or None


def loading_view(ticket_id: int, conversation: str | None = None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": HISTORY_CALLBACK,
        "private_metadata": json.dumps({"ticket": ticket_id, "conv": conversation}),
        "title": {"type": "plain_text", "text": "Customer history"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "Loading the customer…"}}
        ],
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


async def history_view(s: AsyncSession, ticket: Ticket, team_domain: str) -> dict[str, Any]:
    customer = await s.get_one(Customer, ticket.customer_id)
    identities = (
        await s.scalars(
            select(Identity).where(Identity.customer_id == customer.id).order_by(Identity.id)
        )
    ).all()
    tickets = (
        await s.scalars(
            select(Ticket).where(Ticket.customer_id == customer.id).order_by(Ticket.id.desc())
        )
    ).all()
    who = []
    for ident in identities:
        handle = f"@{ident.username}" if ident.username else ""
        phone = ident.phone or ""
        extra = " ".join(x for x in (handle, phone) if x)
        blocked = " · ⚠️ blocked the bot" if ident.blocked else ""
        who.append(
            f"• {CHANNEL_NAME.get(ident.channel, ident.channel)}"
            + (f" {escape(extra)}" if extra else "")
            + blocked
        )
    blocks: list[dict[str, Any]] = [
        _section(
            f"*{escape(customer.name[:200])}* · customer c{customer.id} · language "
            f"*{escape(customer.language or 'unknown')}* · since {slack_date(customer.created_at)}"
        ),
        _section("*Identities*\n" + ("\n".join(who) or "none")),
        {"type": "divider"},
        _section(f"*Tickets* ({len(tickets)}, newest first)"),
    ]
    lines: list[str] = []
    for t in tickets[:MAX_LISTED]:
        link = card_link(t, team_domain)
        ref = f"<{link}|#{t.id}>" if link else f"#{t.id}"
        here = " ← this one" if t.id == ticket.id else ""
        rating = f" · rated {t.rating}/5" if t.rating is not None else ""
        subject = " ".join(t.subject.split())[:80]
        lines.append(
            f"{ref} {PRIORITY_ICON.get(t.priority, '')} {t.priority} · {t.status} · "
            f"{CHANNEL_NAME.get(t.channel, t.channel)} · {slack_date(t.created_at)}{rating}{here}"
            + (f"\n      _{escape(subject)}_" if subject else "")
        )
    # Several tickets per section (3,000 characters each), so long histories stay well
    # inside the modal's 100 blocks.
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 2900:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    if len(tickets) > MAX_LISTED:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"… and {len(tickets) - MAX_LISTED} older tickets: a supervisor's "
                        f"`/desk customer-export c{customer.id}` gives all of them",
                    }
                ],
            }
        )
    if ticket.channel == "email":
        blocks += await full_mails(s, ticket)
    blocks.append({"type": "divider"})
    blocks.append(
        {
            "type": "input",
            "block_id": "note",
            "optional": True,
            "label": {"type": "plain_text", "text": "Note about this customer (for agents)"},
            "element": {
                "type": "plain_text_input",
                "action_id": NOTE_ACTION,
                "multiline": True,
                "max_length": MAX_NOTE,
                "initial_value": customer.note or "",
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": HISTORY_CALLBACK,
        "private_metadata": json.dumps(
            {"ticket": ticket.id, "customer": customer.id, "conv": card_conversation(ticket)}
        ),
        "title": {"type": "plain_text", "text": "Customer history"},
        "submit": {"type": "plain_text", "text": "Save note"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": blocks,
    }


def _code_chunks(text: str, limit: int = 2900) -> list[str]:
    """``text`` escaped for mrkdwn, in pieces that fit a section (escaping lengthens it)."""
    chunks: list[str] = []
    current = ""
    for char in text:
        piece = escape(char)
        if len(current) + len(piece) > limit:
            chunks.append(current)
            current = ""
        current += piece
    if current:
        chunks.append(current)
    return chunks


async def full_mails(s: AsyncSession, ticket: Ticket) -> list[dict[str, Any]]:
    """The ticket's latest customer mails as they came, quotes and signature included (from
    the inbox's events), for agents who need what the thread leaves out."""
    rows = (
        await s.execute(
            select(Message.created_at, InboxRow.payload)
            .join(
                InboxRow,
                (InboxRow.channel == "email")
                & (InboxRow.external_id == Message.platform_message_id),
            )
            .where(
                Message.ticket_id == ticket.id,
                Message.direction == "in",
                Message.channel == "email",
            )
            .order_by(Message.id.desc())
            .limit(FULL_MAILS)
        )
    ).all()
    blocks: list[dict[str, Any]] = []
    left = FULL_CHARS
    for at, payload in rows:
        mail = payload.get("mail") if isinstance(payload, dict) else None
        full = str(mail.get("full_text") or "") if isinstance(mail, dict) else ""
        if not full.strip() or left <= 0:
            continue
        subject = " ".join(str(mail.get("subject") or "").split())[:150] if mail else ""
        shown = full.strip()
        if len(shown) > left:
            shown = shown[: left - 1] + "…"
        left -= len(shown)
        blocks.append(
            _section(
                f"*Mail of {slack_date(at)}*"
                + (f" · _{escape(subject)}_" if subject else "")
                + " · in full, as it came (the thread shows its new text only)"
            )
        )
        # A code block keeps the quote's ">" lines and line breaks as they were; ``` inside
        # the mail would end it early.
        for chunk in _code_chunks(shown.replace("```", "ʼʼʼ")):
            blocks.append(_section(f"```{chunk}```"))
    if blocks:
        blocks.insert(0, {"type": "divider"})
        blocks.insert(
            1,
            _section(f"*The customer's latest mails in full* ({counted(len(rows), 'mail')})"),
        )
    return blocks


async def history_modal(desk: Step, ev: HistoryModal) -> None:
    ticket = await desk.s.get(Ticket, ev.ticket_id)
    if ticket is None:
        return
    view = await history_view(desk.s, ticket, ev.team_domain)
    # The modal shows a customer's tickets across channels: who read it is in the audit trail
    # (/desk audit), as a customer-export is.
    desk.s.add(
        AuditEntry(
            at=desk.now,
            actor=ev.user_id,
            action="history",
            target=f"customer c{ticket.customer_id}",
            detail={"ticket": ticket.id, "team": ticket.team},
        )
    )
    desk.fx.say(
        Outbound(
            channel="slack",
            kind="slack_view_update",
            destination=ev.view_id,
            view=view,
            ticket_id=ticket.id,  # what a forgotten customer's erasure finds it by
        )
    )


async def customer_note(desk: Step, ev: CustomerNote) -> None:
    """Save the note (agents of the ticket's team, leads and supervisors); audited."""
    ticket = await desk.s.get(Ticket, ev.ticket_id)
    customer = await desk.s.get(Customer, ev.customer_id)
    if ticket is None or customer is None or ticket.customer_id != customer.id:
        return
    if not await may_act(desk.s, desk.rules, ticket.team, ev.user_id):
        # A view submission has no response_url: the refusal is said in the thread.
        desk.thread(
            ticket,
            f"⚠️ <@{ev.user_id}>: you are not an agent of team *{ticket.team}*, so the note"
            " about this customer was not saved.",
        )
        desk.decided("history.note_refused user=%s customer=%d", ev.user_id, customer.id)
        return
    text = ev.text.strip()[:MAX_NOTE] or None
    if text == customer.note:
        return
    desk.s.add(
        AuditEntry(
            at=desk.now,
            actor=ev.user_id,
            action="customer-note",
            target=f"customer c{customer.id}",
            detail={"ticket": ticket.id, "chars": len(text or "")},
        )
    )
    customer.note = text
    desk.thread(ticket, f"🗒️ <@{ev.user_id}> updated the note about this customer.")
    desk.decided("history.note_saved user=%s customer=%d", ev.user_id, customer.id)
