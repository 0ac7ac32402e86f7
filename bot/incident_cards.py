"""The incident card in Slack: how many customers, since when, about what, and the buttons that
act on all of them. Customer text goes into rich_text (never read as mrkdwn), as on ticket cards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    RichTextBlock,
    RichTextElementParts,
    RichTextQuoteElement,
    RichTextSectionElement,
    SectionBlock,
)

from bot.cards import CHANNEL_NAME, escape

REPLY_ALL = "incident_reply_all"
RESOLVE = "incident_resolve"
CLOSE = "incident_close"
EXAMPLE_LIMIT = 300


@dataclass(frozen=True, slots=True)
class IncidentView:
    incident_id: int
    status: str  # open | resolved | closed | merged
    customers: int
    open_tickets: int
    since: datetime
    summary: str
    why: str
    team: str = ""
    examples: tuple[tuple[str, str, str], ...] = ()  # (customer name, channel, first message)
    progress: dict[str, int] | None = None  # the latest Reply to all affected
    closed_by: str | None = None
    merged_into: int | None = None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split()) or "(no text)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(v: IncidentView) -> str:
    people = f"{v.customers} customer{'s' if v.customers != 1 else ''}"
    return f"Incident · {people} since {v.since:%H:%M} UTC · '{_clip(v.summary, 80)}'"


def incident_text(v: IncidentView) -> str:
    return f"🚨 #{v.incident_id} {escape(headline(v))}"


def state_line(v: IncidentView) -> str:
    match v.status:
        case "open":
            state = f"Open · {v.open_tickets} of {v.customers} tickets still open"
        case "resolved":
            state = "Resolved" + (f" by <@{v.closed_by}>" if v.closed_by else "")
        case "merged":
            state = f"Merged into incident #{v.merged_into}"
        case _:
            state = "Closed without resolving its tickets" + (
                f" by <@{v.closed_by}>" if v.closed_by else ""
            )
    if v.team:
        state = f"Team *{escape(v.team)}* · {state}"
    return state


def progress_line(p: dict[str, int]) -> str:
    return (
        f"📣 Reply to all affected: {p['sent']} sent · {p['failed']} failed ·"
        f" {p['blocked']} blocked"
        + (f" · {p['pending']} on the way" if p["pending"] else "")
        + f" (of {p['total']})"
    )


def incident_blocks(v: IncidentView) -> list[dict[str, Any]]:
    bold = RichTextElementParts.TextStyle(bold=True)
    blocks: list[Block] = [
        SectionBlock(
            block_id="incident",
            text=MarkdownTextObject(text=f"🚨 *#{v.incident_id}* · *{escape(headline(v))}*"),
        ),
        ContextBlock(
            block_id="why",
            elements=[MarkdownTextObject(text=_clip("Why together: " + escape(v.why), 2000))],
        ),
    ]
    if v.examples:
        blocks.append(
            RichTextBlock(
                block_id="examples",
                elements=[
                    RichTextQuoteElement(
                        elements=[
                            RichTextElementParts.Text(
                                text=f"{_clip(name, 80)} via {CHANNEL_NAME.get(ch, ch)}: ",
                                style=bold,
                            ),
                            RichTextElementParts.Text(
                                text=_clip(text, EXAMPLE_LIMIT)
                                + ("\n" if n < len(v.examples) - 1 else "")
                            ),
                        ]
                    )
                    for n, (name, ch, text) in enumerate(v.examples)
                ]
                or [RichTextSectionElement(elements=[])],
            )
        )
    state = [MarkdownTextObject(text=state_line(v))]
    if v.progress:
        state.append(MarkdownTextObject(text=progress_line(v.progress)))
    blocks.append(ContextBlock(block_id="state", elements=state))
    if v.status == "open":
        value = str(v.incident_id)
        blocks.append(
            ActionsBlock(
                block_id="incident_actions",
                elements=[
                    ButtonElement(
                        text="Reply to all affected",
                        action_id=REPLY_ALL,
                        value=value,
                        style="primary",
                    ),
                    ButtonElement(text="Resolve incident", action_id=RESOLVE, value=value),
                    ButtonElement(text="Close without resolving", action_id=CLOSE, value=value),
                ],
            )
        )
    return [b.to_dict() for b in blocks]
