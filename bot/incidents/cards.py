"""The incident card in Slack: how many customers, since when, about what, and the buttons that
act on all of them. Customer text goes into rich_text (never read as mrkdwn), as on ticket cards."""

from __future__ import annotations

import json
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

from bot.domain.mrkdwn import escape
from bot.domain.tickets import CHANNEL_NAME

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
    # "Incident 3", never "#3": a bare number on a card in a ticket channel reads as a ticket.
    return (
        f"Incident {v.incident_id} · {people} since {v.since:%H:%M} UTC · '{_clip(v.summary, 80)}'"
    )


def incident_text(v: IncidentView) -> str:
    return f"🚨 {escape(headline(v))}"


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
            text=MarkdownTextObject(text=f"🚨 *{escape(headline(v))}*"),
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


# -- Reply to all affected: the modal (text per language), then its preview ------------------

REPLY_VIEW = "incident_reply"  # callback_id of the first view: the texts
CONFIRM_VIEW = "incident_reply_confirm"  # of the second: the preview, whose submit sends
TEXT_LIMIT = 600  # characters per language: all of them travel in private_metadata (3000)
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "es": "Spanish", "ru": "Russian"}


def _language(tag: str) -> str:
    return LANGUAGE_NAMES.get(tag, tag)


def _people(n: int) -> str:
    return f"{n} customer{'s' if n != 1 else ''}"


def reply_modal(incident_id: int, counts: dict[str, int], default: str) -> dict[str, Any]:
    """The texts: one box per language among the incident's customers (the default language
    always, and required); a customer whose language is left empty gets the default text."""
    languages = sorted(counts, key=lambda tag: (tag != default, tag))
    if default not in languages:
        languages.insert(0, default)
    total = sum(counts.values())
    listed = " · ".join(f"{_language(t)} {counts.get(t, 0)}" for t in languages)
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "block_id": "who",
            "text": {
                "type": "mrkdwn",
                "text": f"Incident #{incident_id}: {_people(total)} ({listed}). Each gets the"
                " text of their language on their own channel, as a reply from you.",
            },
        }
    ]
    for tag in languages:
        blocks.append(
            {
                "type": "input",
                "block_id": f"text.{tag}",
                "optional": tag != default,
                "label": {
                    "type": "plain_text",
                    "text": f"{_language(tag)} ({_people(counts.get(tag, 0))})"[:2000],
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": True,
                    "max_length": TEXT_LIMIT,
                },
                **(
                    {}
                    if tag == default
                    else {
                        "hint": {
                            "type": "plain_text",
                            "text": f"Left empty: they get the {_language(default)} text.",
                        }
                    }
                ),
            }
        )
    return {
        "type": "modal",
        "callback_id": REPLY_VIEW,
        "private_metadata": json.dumps({"incident": incident_id, "counts": counts}),
        "title": {"type": "plain_text", "text": "Reply to all affected"},
        "submit": {"type": "plain_text", "text": "Preview"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def preview_modal(
    incident_id: int, counts: dict[str, int], texts: dict[str, str], default: str
) -> dict[str, Any]:
    """What each language's customers will read, and how many: Send sends it."""
    shown: dict[str, int] = {}
    for tag, n in counts.items():
        goes = tag if texts.get(tag) else default
        shown[goes] = shown.get(goes, 0) + n
    blocks: list[dict[str, Any]] = []
    for tag in sorted(shown, key=lambda t: (t != default, t)):
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{_language(tag)}* · {_people(shown[tag])} will read:",
                },
            }
        )
        blocks.append(
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_quote",
                        "elements": [{"type": "text", "text": texts.get(tag) or texts[default]}],
                    }
                ],
            }
        )
    total = sum(counts.values())
    return {
        "type": "modal",
        "callback_id": CONFIRM_VIEW,
        "private_metadata": json.dumps(
            {"incident": incident_id, "texts": texts}, ensure_ascii=False
        ),
        "title": {"type": "plain_text", "text": "Reply to all affected"},
        "submit": {"type": "plain_text", "text": f"Send to {total}"[:24]},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def submitted_texts(state: dict[str, Any]) -> dict[str, str]:
    """The texts typed in :func:`reply_modal` (``view.state.values``), by language."""
    texts: dict[str, str] = {}
    for block_id, actions in state.items():
        if not block_id.startswith("text.") or not isinstance(actions, dict):
            continue
        value = (actions.get("text") or {}).get("value")
        if isinstance(value, str) and value.strip():
            texts[block_id.removeprefix("text.")] = value.strip()[:TEXT_LIMIT]
    return texts
