"""The ticket card in Slack, as Block Kit dictionaries (:mod:`bot.workspace.blockkit`, which
checks Slack's limits as slack_sdk's models did, at a fraction of their cost).

What a customer wrote is shown verbatim: it goes into ``rich_text`` blocks as plain text
elements, which Slack never reads as mrkdwn, so a customer's ``*star*`` stays a star and text
that looks like ``<@U0ALICE>`` cannot mention anyone. Fallback ``text`` fields are mrkdwn, so
customer text in them is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.mrkdwn import (
    CUSTOMER_TEXT_LIMIT,
    PRIORITY_ICON,
    TARGET_NAME,
    _clip,
    escape,
    person,
    slack_date,
)
from bot.domain.tickets import ACTIVE, CHANNEL_NAME
from bot.workspace.blockkit import (
    Json,
    actions,
    button,
    checked,
    context,
    multi_static_select,
    option,
    section,
    static_select,
    users_select,
)
from storage.models import Ticket


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
    resolved_by: str | None = None
    rating: int | None = None
    blocked: bool = False
    no_phone: bool = False  # a WhatsApp customer known only by their user id
    model: Mapping[str, Any] | None = None  # what the local model read, when it ran
    team: str = ""  # shown when the desk has several teams
    assigned_by: str | None = None  # "desk" when automatic assignment chose the assignee
    waiting_reason: str | None = None  # why nobody has it yet
    transfer_to: tuple[str, ...] = ()  # the other teams, for the Transfer menu
    sla: Mapping[str, Any] | None = None  # the SLA clocks as last computed (tickets.sla)
    assignee_name: str | None = None  # their Slack display name, when the desk knows it
    tags: tuple[str, ...] = ()  # the ticket's tags (bot/workspace/controls.py)
    intent_label: str | None = None  # the intent an agent corrected the model's to
    tag_choices: tuple[str, ...] = ()  # rules.yaml's tags, for the Tags menu
    intent_choices: tuple[str, ...] = ()  # the known intents, for the Correct intent menu
    revision: str = ""  # makes the menus' block_ids new on each update (see controls_block)
    suggested: str | None = None  # the article the customer was sent before the ticket
    kb: bool = False  # the knowledge base is on: a "Suggest articles" button
    # The Reply modal's button, when the card has one: "Reply to customer" (slack.relay:
    # composer, the way to the customer) or "Reply with a macro" (thread mode with macros).
    reply_label: str | None = None
    story: str | None = None  # "3rd ticket in 30 days · last rating 2/5 · also on WhatsApp"
    # A card the ticket has left (transferred): where it went, instead of its state, clocks
    # and buttons; it stays as a record and no longer looks like a live ticket.
    moved: str | None = None
    # WhatsApp's 24-hour window (bot/domain/window.py): free-form until when, or a template.
    window: str | None = None
    mail: str | None = None  # email: the address and the subject of the conversation


def model_line(model: Mapping[str, Any] | None) -> str | None:
    """ "Model: intent get_refund 0.93 · sentiment negative 0.96 · anger 0.12", or None.

    "Model: not applied (zh)" when the model's heads were not trained for the language, or
    what that language's own heads read: "Model (ru): anger 0.71 · English heads not applied"."""
    if model and model.get("applied") is False:
        language = model.get("language") or "?"
        read = []
        if model.get("sentiment"):
            score = float((model.get("sentiment_scores") or {}).get(model["sentiment"], 0))
            read.append(f"sentiment {model['sentiment']} {score:.2f}")
        if model.get("anger") is not None:
            derived = str(model.get("anger_source") or "").startswith("derived")
            # Derived from the negative sentiment (no anger label in that language's data).
            read.append(f"anger {float(model['anger']):.2f}" + (" (derived)" if derived else ""))
        if not read:
            return f"Model: not applied ({language})"
        judged_by = f", {model['judged_by']}" if model.get("judged_by") else ""
        return f"Model ({language}{judged_by}): {' · '.join(read)} · English heads not applied"
    if not model or "intent" not in model:
        return None
    scores = model.get("sentiment_scores") or {}
    sentiment = str(model.get("sentiment", "?"))
    return (
        f"Model: intent {model['intent']} {float(model.get('intent_confidence', 0)):.2f}"
        f" · sentiment {sentiment} {float(scores.get(sentiment, 0)):.2f}"
        f" · anger {float(model.get('anger', 0)):.2f}"
    )


def card_text(v: CardView) -> str:
    """The fallback text (notifications, screen readers). It is mrkdwn: customer text escaped."""
    return (
        f"#{v.ticket_id} {v.priority.upper()} · {escape(_clip(v.customer_name, 200))} "
        f"({CHANNEL_NAME.get(v.channel, v.channel)}): {escape(_clip(v.first_message, 200))}"
    )


def _resolved_state(v: CardView) -> str:
    """Who resolved it, and who had it when that was someone else."""
    assignee = person(v.assignee_id, v.assignee_name) if v.assignee_id else ""
    if v.resolved_by is None:  # resolved before the desk recorded who did it
        return "Resolved" + (f" · assigned to {assignee}" if assignee else "")
    if v.resolved_by == v.assignee_id:
        return f"Resolved by {assignee}"
    return f"Resolved by {person(v.resolved_by)}" + (
        f" · assigned to {assignee}" if assignee else ""
    )


def card_blocks(v: CardView) -> list[dict[str, Any]]:
    # "Claimed" when they took it themselves; the desk's choice or a colleague's reassignment
    # is "Assigned".
    given = "Assigned to" if v.assigned_by not in (None, v.assignee_id) else "Claimed by"
    who = person(v.assignee_id, v.assignee_name) if v.assignee_id else ""
    state = {
        "new": "New, unclaimed" + (f" · {v.waiting_reason}" if v.waiting_reason else ""),
        "open": f"{given} {who}" if who else "Open",
        "pending": f"Waiting on the customer · {who}" if who else "Pending",
        "resolved": _resolved_state(v),
        "closed": "Closed",
    }.get(v.status, v.status)
    if v.rating is not None:
        state += f" · rated {v.rating}/5"
    if v.blocked:
        state += (
            " · ⚠️ customer unreachable (mail to them bounced)"
            if v.channel == "email"
            else " · ⚠️ customer unreachable (blocked the bot)"
        )
    if v.no_phone:
        state += " · 📵 no phone number known (a WhatsApp username; answered by their user id)"
    if v.team:
        state = f"Team *{v.team}* · {state}"
    name = escape(_clip(v.customer_name, 200))  # a name is whatever the platform sent
    if v.tags:
        state += " · 🏷️ " + ", ".join(escape(t) for t in v.tags)
    if v.intent_label:
        state += f" · intent corrected to *{escape(v.intent_label)}*"
    header = (
        f"{PRIORITY_ICON.get(v.priority, '')} *#{v.ticket_id}* · *{name}* "
        f"via {CHANNEL_NAME.get(v.channel, v.channel)} · priority *{v.priority}*"
    )
    reasons = "; ".join(v.reasons) or "no reasons recorded"
    model = model_line(v.model)
    blocks: list[Json] = [
        section("header", header),
        context(
            "reasons",
            [_clip("Why: " + escape(reasons), 2000), *([escape(model)] if model else [])],
        ),
        *([context("story", ["🧾 " + v.story])] if v.story else []),
        {
            "type": "rich_text",
            "block_id": "message",
            "elements": [{"type": "rich_text_quote", "elements": [verbatim(v.first_message)]}],
        },
    ]
    if v.moved:
        blocks.append(context("state", [v.moved]))
        return checked(blocks)
    clocks = clocks_line(v.sla)
    blocks.append(
        context(
            "state",
            [
                state,
                *([v.mail] if v.mail else []),
                *([clocks] if clocks else []),
                *([v.window] if v.window and v.status in ACTIVE else []),
                *([f"📚 suggested: *{escape(_clip(v.suggested, 200))}*"] if v.suggested else []),
            ],
        )
    )
    tid = str(v.ticket_id)
    buttons: list[Json] = []
    # Claim stays while the desk's own choice stands: a person may take the ticket over.
    if v.status == "new" or (v.status in ("open", "pending") and v.assigned_by == "desk"):
        buttons.append(button("Claim", "ticket_claim", tid, style="primary"))
    if v.status in ACTIVE and v.reply_label:
        buttons.append(button(v.reply_label, "ticket_reply", tid))
    if v.status in ACTIVE:
        buttons.append(button("Resolve", "ticket_resolve", tid))
        buttons.append(button("History", "ticket_history", tid))
    if v.status in ACTIVE and v.transfer_to:
        buttons.append(
            static_select(
                "Transfer to…",
                "ticket_transfer",
                [option(f"Team {team}", f"{tid}:{team}") for team in v.transfer_to[:100]],
            )
        )
    if v.status in ACTIVE and v.kb:
        buttons.append(button("Suggest articles", "ticket_kb_suggest", tid))
    if buttons:
        blocks.append(actions(f"actions.{v.revision}" if v.revision else "actions", buttons))
    if v.status in ACTIVE:
        blocks.append(controls_block(v))
    return checked(blocks)


def verbatim(text: str) -> Json:
    """The customer's text as one plain rich-text element: no escaping, Slack applies no
    mrkdwn here (``bot.domain.mrkdwn._verbatim`` as a dictionary)."""
    if not text:
        return {"type": "text", "text": "(no text)", "style": {"italic": True}}
    return {"type": "text", "text": _clip(text, CUSTOMER_TEXT_LIMIT)}


PRIORITIES = ("urgent", "high", "normal", "low")
STATUSES = {"open": "Open", "pending": "Waiting on customer", "resolved": "Resolved"}
MENU_LIMIT = 100  # options in one Slack menu


def controls_block(v: CardView) -> Json:
    """Priority, status, reassign, tags and Correct intent. Slack keeps what a person picked
    in a menu for as long as the block_id stays the same, so each update of the card gives
    the block a new one (``revision``): the menus then show what the desk did, including after
    a refused change."""
    tid = v.ticket_id

    def opt(value: str, text: str) -> Json:
        return option(text, f"{tid}:{value}")

    def chosen(options: list[Json], value: str | None) -> Json | None:
        return next((o for o in options if o["value"] == f"{tid}:{value}"), None)

    priorities = [opt(p, f"{PRIORITY_ICON[p]} {p.title()}") for p in PRIORITIES]
    statuses = [opt(k, text) for k, text in STATUSES.items()]
    current = v.status if v.status in STATUSES else None
    elements: list[Json] = [
        static_select("Priority", "ticket_priority", priorities, chosen(priorities, v.priority)),
        static_select("Status", "ticket_status", statuses, chosen(statuses, current)),
        users_select("Reassign…", "ticket_reassign", v.assignee_id),
    ]
    if v.tag_choices:
        tags = [opt(t, t) for t in v.tag_choices[:MENU_LIMIT]]
        picked = [o for o in tags if o["value"].partition(":")[2] in v.tags]
        elements.append(multi_static_select("Tags", "ticket_tags", tags, picked))
    if v.intent_choices:
        intents = [opt(i, i) for i in v.intent_choices[:MENU_LIMIT]]
        elements.append(
            static_select(
                "Correct intent", "ticket_intent", intents, chosen(intents, v.intent_label)
            )
        )
    return actions(f"controls.{tid}.{v.revision or '0'}", elements)


# -- SLA clocks ----------------------------------------------------------------------------


def clocks_line(sla: Mapping[str, Any] | None) -> str | None:
    """The card's line: each running clock with its due time and state."""
    if not sla:
        return None
    parts = []
    for target in ("first_response", "next_response", "resolution"):
        clock = sla.get(target) or {}
        state = clock.get("state")
        if state in (None, "none", "stopped"):
            continue
        due = clock.get("due")
        when = slack_date(datetime.fromisoformat(due)) if due else ""
        met_at = clock.get("met_at")
        if state in ("met", "met_late") and met_at:
            # When it was met, and what it was measured against.
            met = "met late" if state == "met_late" else "met"
            was_due = f" (due {when})" if when else ""
            parts.append(
                f"{TARGET_NAME[target]} {met} {slack_date(datetime.fromisoformat(met_at))}{was_due}"
            )
            continue
        shown = {"running": "on track", "breached": "🚨 breached", "paused": "⏸ paused"}.get(
            state, state.replace("_", " ")
        )
        parts.append(f"{TARGET_NAME[target]} {('due ' + when + ' · ') if when else ''}{shown}")
    return "SLA: " + " · ".join(parts) if parts else None


# -- links --------------------------------------------------------------------------------

DOMAIN_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def card_link(ticket: Ticket, team_domain: str) -> str | None:
    """A link that opens the ticket's card, or None before the card is posted.

    The permalink form ``https://<workspace>.slack.com/archives/<channel>/p<ts without dot>``
    is what chat.getPermalink returns, and Slack opens it at the message itself. The
    workspace comes from the slash command (``team_domain``). Without it, ``app_redirect``
    (documented with ``channel`` and ``team`` only) at least opens the channel.
    """
    if not ticket.slack_ts or not ticket.slack_channel:
        return None
    if DOMAIN_RE.match(team_domain):
        stamp = ticket.slack_ts.replace(".", "")
        return f"https://{team_domain}.slack.com/archives/{ticket.slack_channel}/p{stamp}"
    return f"https://slack.com/app_redirect?channel={ticket.slack_channel}"
