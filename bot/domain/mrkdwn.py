"""Slack mrkdwn and the rich-text pieces every feature writes with: pure, no I/O.

What a customer wrote is shown verbatim: it goes into ``rich_text`` blocks as plain text
elements, which Slack never reads as mrkdwn, so a customer's ``*star*`` stays a star and text
that looks like ``<@U0ALICE>`` cannot mention anyone. Fallback ``text`` fields are mrkdwn, so
customer text in them is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    RichTextBlock,
    RichTextElementParts,
    RichTextQuoteElement,
    RichTextSectionElement,
)

from storage.models import Message

PRIORITY_ICON = {"urgent": "🔴", "high": "🟠", "normal": "🟢", "low": "⚪"}
# Slack documents no limit for one rich_text element, but refuses a message whose blocks are
# too long (msg_blocks_too_long, seen at about 13,000 characters): a customer's text is clipped
# as the card always clipped it, well inside that with the card's other blocks.
CUSTOMER_TEXT_LIMIT = 2900


def escape(text: str) -> str:
    # Slack mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def person(user_id: str, name: str | None = None) -> str:
    """An agent as people see them: their display name (bold, escaped), or a mention when the
    desk has not learnt the name (Slack renders a mention as the name too)."""
    return f"*{escape(name)}*" if name else f"<@{user_id}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verbatim(text: str) -> RichTextElementParts.Text:
    """The customer's text as one plain element: no escaping, Slack applies no mrkdwn here."""
    if not text:
        return RichTextElementParts.Text(
            text="(no text)", style=RichTextElementParts.TextStyle(italic=True)
        )
    return RichTextElementParts.Text(text=_clip(text, CUSTOMER_TEXT_LIMIT))


def said_blocks(name: str, text: str) -> list[dict[str, Any]]:
    """A customer message in the thread: their name in bold, then exactly what they wrote."""
    bold = RichTextElementParts.TextStyle(bold=True)
    section = RichTextSectionElement(
        elements=[RichTextElementParts.Text(text=f"{name}: ", style=bold), _verbatim(text)]
    )
    return [RichTextBlock(elements=[section]).to_dict()]


def quoted_blocks(lead: str, text: str) -> list[dict[str, Any]]:
    """A line of the desk's own (``lead``), then the customer's text quoted verbatim."""
    return [
        RichTextBlock(
            elements=[
                RichTextSectionElement(elements=[RichTextElementParts.Text(text=lead)]),
                RichTextQuoteElement(elements=[_verbatim(text)]),
            ]
        ).to_dict()
    ]


# -- the conversation so far, for a card posted anew (re-posted or transferred) -------------

LINE_LIMIT = 300  # characters of one message in the summary
SUMMARY_LIMIT = 3500  # characters of the whole summary: readable, far below Slack's 40,000


def _line(text: str) -> str:
    text = " ".join(text.split()) or "(no text)"
    return text if len(text) <= LINE_LIMIT else text[: LINE_LIMIT - 1] + "…"


def summary_line(message: Message, customer: str) -> str:
    when = message.created_at.strftime("%d %b %H:%M")
    match message.direction:
        case "in":
            who, text = f"*{escape(customer)}:*", escape(message.text)
        case "note":
            who, text = f"📝 *<@{message.author}> (internal note):*", message.text
        case "out" if message.author == "desk" or message.purpose:
            who, text = "*desk → customer:*", escape(message.text)
        case "out":
            who, text = f"*<@{message.author}> → customer:*", message.text
        case _:
            who, text = "*desk:*", escape(message.text)
    failed = " _(not delivered)_" if message.delivery == "failed" else ""
    return f"• {when} {who} {_line(text)}{failed}"


def conversation_summary(customer: str, messages: Sequence[Message], *, head: str) -> str:
    """A new card's first thread message: ``head`` (why the card is new), then what was said
    so far, latest kept when it must be clipped."""
    if not messages:
        return head + " Nothing was said yet beyond the card above."
    lines = [summary_line(m, customer) for m in messages]
    kept: list[str] = []
    size = len(head) + 100
    for line in reversed(lines):  # the latest messages matter most
        if size + len(line) + 1 > SUMMARY_LIMIT:
            break
        kept.insert(0, line)
        size += len(line) + 1
    left_out = len(lines) - len(kept)
    intro = " The conversation so far (times in UTC):"
    if left_out:
        intro = f" The conversation so far (times in UTC; {left_out} earlier not shown):"
    return head + intro + "\n" + "\n".join(kept)


# -- SLA clocks

TARGET_NAME = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}


def slack_date(at: datetime) -> str:
    """Slack shows this in each reader's own time zone; the fallback is UTC."""
    stamp = int(at.timestamp())
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{at:%Y-%m-%d %H:%M} UTC>"


def age(delta: timedelta) -> str:
    """How long, as the desk shows it: "7m", "3h 05m", "2d 4h"."""
    minutes = max(0, int(delta.total_seconds()) // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
