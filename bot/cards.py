"""The ticket card in Slack, built with slack_sdk's Block Kit models (which enforce the limits)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

PRIORITY_ICON = {"urgent": "🔴", "high": "🟠", "normal": "🟢", "low": "⚪"}
CHANNEL_NAME = {"telegram": "Telegram", "whatsapp": "WhatsApp"}
SECTION_LIMIT = 3000  # slack_sdk refuses longer section text


@dataclass(frozen=True, slots=True)
class CardView:
    ticket_id: int
    customer_name: str
    channel: str
    status: str
    priority: str
    reasons: tuple[str, ...]
    first_message: str
    assignee_id: str | None = None
    rating: int | None = None
    blocked: bool = False
    model: Mapping[str, Any] | None = None  # what the local model read, when it ran


def model_line(model: Mapping[str, Any] | None) -> str | None:
    """ "Model: intent get_refund 0.93 · sentiment negative 0.96 · anger 0.12", or None."""
    if not model or "intent" not in model:
        return None
    scores = model.get("sentiment_scores") or {}
    sentiment = str(model.get("sentiment", "?"))
    return (
        f"Model: intent {model['intent']} {float(model.get('intent_confidence', 0)):.2f}"
        f" · sentiment {sentiment} {float(scores.get(sentiment, 0)):.2f}"
        f" · anger {float(model.get('anger', 0)):.2f}"
    )


def _escape(text: str) -> str:
    # Slack mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def card_text(v: CardView) -> str:
    """The plain-text fallback (notifications, screen readers)."""
    return (
        f"#{v.ticket_id} {v.priority.upper()} · {v.customer_name} "
        f"({CHANNEL_NAME.get(v.channel, v.channel)}): {_clip(v.first_message, 200)}"
    )


def card_blocks(v: CardView) -> list[dict[str, Any]]:
    state = {
        "new": "New, unclaimed",
        "open": f"Claimed by <@{v.assignee_id}>" if v.assignee_id else "Open",
        "pending": f"Waiting on the customer · <@{v.assignee_id}>" if v.assignee_id else "Pending",
        "resolved": "Resolved" + (f" by <@{v.assignee_id}>" if v.assignee_id else ""),
        "closed": "Closed",
    }.get(v.status, v.status)
    if v.rating is not None:
        state += f" · rated {v.rating}/5"
    if v.blocked:
        state += " · ⚠️ customer unreachable (blocked the bot)"
    header = (
        f"{PRIORITY_ICON.get(v.priority, '')} *#{v.ticket_id}* · *{_escape(v.customer_name)}* "
        f"via {CHANNEL_NAME.get(v.channel, v.channel)} · priority *{v.priority}*"
    )
    reasons = "; ".join(v.reasons) or "no reasons recorded"
    quoted = "\n".join("> " + line for line in _escape(v.first_message or "(no text)").split("\n"))
    blocks: list[Block] = [
        SectionBlock(block_id="header", text=MarkdownTextObject(text=header)),
        ContextBlock(
            block_id="reasons",
            elements=[
                MarkdownTextObject(text=_clip("Why: " + _escape(reasons), 2000)),
                *(
                    [MarkdownTextObject(text=_escape(line))]
                    if (line := model_line(v.model))
                    else []
                ),
            ],
        ),
        SectionBlock(block_id="message", text=MarkdownTextObject(text=_clip(quoted, 2900))),
        ContextBlock(block_id="state", elements=[MarkdownTextObject(text=state)]),
    ]
    buttons: list[ButtonElement] = []
    if v.status in ("new",):
        buttons.append(
            ButtonElement(
                text="Claim", action_id="ticket_claim", value=str(v.ticket_id), style="primary"
            )
        )
    if v.status in ("new", "open", "pending"):
        buttons.append(
            ButtonElement(text="Resolve", action_id="ticket_resolve", value=str(v.ticket_id))
        )
    if buttons:
        blocks.append(ActionsBlock(block_id="actions", elements=buttons))
    return [b.to_dict() for b in blocks]
