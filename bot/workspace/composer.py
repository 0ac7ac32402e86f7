"""Replies sent on purpose: the card's Reply modal and the "Send to customer" shortcut.

With ``slack.relay: composer`` nothing written in a card's thread reaches the customer; these
two are the only ways out (with ``thread``, the default, they work beside thread replies).

The modal: Slack's ``trigger_id`` lives 3 seconds and works once, so the adapter opens an empty
modal at once (``views.open``, inside the request) and the desk fills it after, through the
outbox (``views.update``): the text box, the macro picker, and a preview of exactly what the
customer will get, in their language, with the placeholders filled. Picking a macro puts its
text in the box (a new block_id, or Slack keeps what was typed); typing updates the preview.
Send is a ``view_submission``: the text the agent saw in the box is what is sent, and the macro
used is recorded (a ``macro`` ticket event) with its actions done.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from bot.core.tickets import Desk
from bot.domain.events import AgentAction, AgentReply, ReplyModal
from bot.domain.macros import Macro, fill, find
from bot.domain.outbound import Outbound
from bot.domain.tickets import ACTIVE, CHANNEL_NAME
from bot.workspace.controls import may_act, ticket_labels
from bot.workspace.window_line import whatsapp_window
from storage.models import Customer, Message, Ticket

REPLY_CALLBACK = "reply_modal"
SHORTCUT_CALLBACK = "send_to_customer"
REPLY_TEXT = "reply_text"  # the input's action_id; its block_id is "reply_text.<revision>"
REPLY_MACRO = "reply_macro"
MAX_REPLY = 3000  # a plain_text_input's max_length; also a section's text limit


def card_conversation(ticket: Ticket) -> str | None:
    """The inbox conversation of the ticket's card (what its buttons' events are keyed by)."""
    return f"slack:{ticket.slack_channel}:{ticket.slack_ts}" if ticket.slack_ts else None


def loading_view(ticket_id: int, conversation: str | None = None) -> dict[str, Any]:
    """What the adapter opens with the trigger_id: no database needed, so it is quick. The
    modal carries the card's conversation, so that everything done in it is stored (and, when
    the customer is forgotten, erased) with the card's other events."""
    return {
        "type": "modal",
        "callback_id": REPLY_CALLBACK,
        "private_metadata": json.dumps({"ticket": ticket_id, "conv": conversation}),
        "title": {"type": "plain_text", "text": f"Reply to #{ticket_id}"[:24]},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "Loading the ticket and the macros…"},
            }
        ],
    }


def placeholders(ticket: Ticket, customer: Customer, agent_name: str) -> dict[str, str]:
    return {
        "customer_name": customer.name,
        "ticket": str(ticket.id),
        "agent_name": agent_name,
    }


def macro_text(desk: Desk, macro: Macro, ticket: Ticket, customer: Customer, agent: str) -> str:
    language = ticket.language or customer.language
    text = macro.text_for(language, desk.rules.texts.default_language)
    return fill(text, placeholders(ticket, customer, agent))


def reply_view(
    desk: Desk,
    ticket: Ticket,
    customer: Customer,
    *,
    text: str,
    macro: str | None,
    revision: str,
    agent_name: str = "",
    window: str | None = None,
) -> dict[str, Any]:
    """The filled Reply modal; ``agent_name`` is who the customer will see it from, ``window``
    what WhatsApp's 24-hour window means for this reply."""
    macros = desk.rules.macros
    language = ticket.language or customer.language or desk.rules.texts.default_language
    channel = CHANNEL_NAME.get(ticket.channel, ticket.channel)
    preview = desk.customer_copy(ticket, text.strip(), agent_name) if text.strip() else ""
    shown = preview if len(preview) <= 2900 else preview[:2900] + "…"
    warning = (
        [{"type": "context", "elements": [{"type": "mrkdwn", "text": window}]}] if window else []
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"To *{_plain(customer.name)}* on {channel} · language *{language}*"
                    f" · ticket #{ticket.id} ({ticket.status})",
                }
            ],
        },
        # WhatsApp outside its 24-hour window: what will happen, before anything is sent.
        *warning,
        {
            "type": "input",
            # A new block_id when a macro is picked: Slack then shows the initial_value
            # instead of keeping what was typed before.
            "block_id": f"{REPLY_TEXT}.{revision}",
            "dispatch_action": True,
            "label": {"type": "plain_text", "text": "Message to the customer"},
            "element": {
                "type": "plain_text_input",
                "action_id": REPLY_TEXT,
                "multiline": True,
                "max_length": MAX_REPLY,
                "initial_value": text,
                "dispatch_action_config": {"trigger_actions_on": ["on_character_entered"]},
            },
        },
    ]
    if macros:
        options = [
            {"text": {"type": "plain_text", "text": m.name[:75]}, "value": m.name}
            for m in macros[:100]
        ]
        picker: dict[str, Any] = {
            "type": "static_select",
            "action_id": REPLY_MACRO,
            "placeholder": {"type": "plain_text", "text": "Insert a macro…"},
            "options": options,
        }
        chosen = find(macros, macro)
        if chosen is not None:
            picker["initial_option"] = next(o for o in options if o["value"] == chosen.name)
        blocks.append({"type": "actions", "block_id": "macro", "elements": [picker]})
        if chosen is not None and _has_actions(chosen):
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": "On send: " + _actions(chosen)}],
                }
            )
    blocks.append(
        {
            "type": "section",
            "block_id": "preview",
            "text": {
                "type": "mrkdwn",
                "text": "*The customer will get exactly:*\n```" + _code(shown) + "```"
                if shown
                else "_The preview of what the customer gets shows here as you type._",
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": REPLY_CALLBACK,
        "private_metadata": json.dumps(
            {"ticket": ticket.id, "macro": macro, "conv": card_conversation(ticket)}
        ),
        "title": {"type": "plain_text", "text": f"Reply to #{ticket.id}"[:24]},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def _plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:200]


def _code(text: str) -> str:
    # Inside ``` Slack still reads entities; a ``` in the text would end the block early.
    return _plain(text).replace("```", "ʼʼʼ")


def _has_actions(macro: Macro) -> bool:
    a = macro.actions
    return bool(a.status or a.add_tags or a.priority)


def _actions(macro: Macro) -> str:
    a = macro.actions
    said = []
    if a.status:
        said.append(f"status {a.status}")
    if a.priority:
        said.append(f"priority {a.priority}")
    if a.add_tags:
        said.append("tags " + ", ".join(a.add_tags))
    return " · ".join(said)


async def reply_modal(desk: Desk, ev: ReplyModal) -> None:
    """Fill or redraw the Reply modal (views.update through the outbox)."""
    ticket = await desk.s.get(Ticket, ev.ticket_id)
    if ticket is None:
        return
    customer = await desk.s.get_one(Customer, ticket.customer_id)
    text = ev.text or ""
    macro = find(desk.rules.macros, ev.macro)
    # Whoever sends becomes the assignee of an unassigned ticket: the name the customer sees.
    agent = ticket.assignee_name if ticket.assignee_id not in (None, ev.user_id) else None
    agent = agent or ev.user_name or ticket.assignee_name or ""
    # Typing keeps the text box's block_id (Slack then keeps the box as typed); a picked macro
    # gets a new one, so Slack shows the macro's text.
    revision = ev.revision or "0"
    if ev.picked and macro is not None:
        text = macro_text(desk, macro, ticket, customer, agent)
        revision = f"{int(desk.now.timestamp() * 1000):x}"
    view = reply_view(
        desk,
        ticket,
        customer,
        text=text,
        macro=macro.name if macro else None,
        revision=revision,
        agent_name=agent,
        window=await whatsapp_window(desk.s, desk.rules, desk.now, ticket),
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


async def agent_reply(desk: Desk, ev: AgentReply) -> None:
    """Send, deliberately, to the customer: from the modal or the message shortcut."""
    if ev.ticket_id is not None:
        ticket = await desk.s.get(Ticket, ev.ticket_id, with_for_update=True)
    elif ev.thread_ts:
        ticket = await desk.ticket_by_card(ev.slack_channel, ev.thread_ts)
    else:
        ticket = None
    if ticket is None:
        _tell(desk, ev, "This message is not in a ticket's thread, so nothing was sent.")
        return
    text = ev.text.strip()
    why = None
    sent_before = ev.ts is not None and await desk.s.scalar(
        select(Message.id).where(
            Message.ticket_id == ticket.id, Message.slack_ts == ev.ts, Message.direction == "out"
        )
    )
    if ev.from_bot:
        why = "only a person's message can be sent to the customer, not the desk's own"
    elif sent_before:
        why = "this message was sent to the customer already"
    elif not await may_act(desk.s, desk.rules, ticket.team, ev.user_id):
        why = f"you are not an agent of team *{ticket.team}*"
    elif ticket.status not in ACTIVE:
        why = f"ticket #{ticket.id} is {ticket.status}"
    elif not text:
        why = "the message is empty"
    if why is None and ticket.assignee_id not in (None, ev.user_id):
        probe = AgentAction(
            external_id=ev.external_id,
            conversation=ev.conversation,
            action="claim",
            ticket_id=ticket.id,
            user_id=ev.user_id,
            slack_channel=ticket.slack_channel,
            message_ts=ticket.slack_ts or "",
            response_url=ev.response_url,
        )
        if not await desk.may_override(ticket, probe, "replied to the customer"):
            return  # refused, audited and told (when there is a response_url)
    if why is not None:
        _tell(desk, ev, f"Not sent: {why}.", ticket)
        return
    who = f"*{_plain(ev.user_name)}*" if ev.user_name else f"<@{ev.user_id}>"
    if ticket.assignee_id is None:
        desk.history(ticket, "assignee", ev.user_id, None, ev.user_id, "replied to the customer")
        ticket.assignee_id, ticket.assignee_name = ev.user_id, ev.user_name or None
        ticket.assigned_by, ticket.waiting_reason = ev.user_id, None
        desk.set_status(ticket, "open", ev.user_id, "agent replied")
        desk.thread(ticket, f"🙋 {who} claimed this ticket.")
    macro = find(desk.rules.macros, ev.macro)
    await desk.relay(ticket, ev.user_id, text, slack_ts=ev.ts)
    how = "with the shortcut" if ev.source == "shortcut" else "with Reply"
    used = f" (macro *{_plain(macro.name)}*)" if macro else ""
    desk.thread(
        ticket,
        f"📤 {who} sent to the customer {how}{used}:\n>" + _plain(text[:2500]).replace("\n", "\n>"),
    )
    if macro is not None:
        await _apply_macro(desk, ticket, macro, ev)


async def _apply_macro(desk: Desk, ticket: Ticket, macro: Macro, ev: AgentReply) -> None:
    desk.history(ticket, "macro", ev.user_id, None, macro.name, "used in a reply")
    actions = macro.actions
    if actions.add_tags:
        old, _ = await ticket_labels(desk.s, ticket.id)
        new = tuple(t for t in desk.rules.tags if t in old or t in actions.add_tags)
        if new != old:
            desk.history(
                ticket,
                "tags",
                ev.user_id,
                json.dumps(list(old), ensure_ascii=False),
                json.dumps(list(new), ensure_ascii=False),
                f"macro {macro.name}",
            )
    if actions.priority and actions.priority != ticket.priority:
        desk.history(
            ticket, "priority", ev.user_id, ticket.priority, actions.priority, f"macro {macro.name}"
        )
        ticket.priority = actions.priority
    if actions.status == "resolved":
        await desk.agent_action(
            AgentAction(
                external_id=ev.external_id,
                conversation=ev.conversation,
                action="resolve",
                ticket_id=ticket.id,
                user_id=ev.user_id,
                user_name=ev.user_name,
                slack_channel=ticket.slack_channel,
                message_ts=ticket.slack_ts or "",
            )
        )
        return
    if actions.status and actions.status != ticket.status:
        desk.set_status(ticket, actions.status, ev.user_id, f"macro {macro.name}")
    await desk.refresh_card(ticket)


def _tell(desk: Desk, ev: AgentReply, text: str, ticket: Ticket | None = None) -> None:
    """A refusal: privately where Slack gave a response_url (the shortcut), else in the
    ticket's thread (a modal's submission has none)."""
    if ev.response_url:
        desk.fx.say(
            Outbound(channel="slack", kind="slack_response", destination=ev.response_url, text=text)
        )
    elif ticket is not None:
        desk.thread(ticket, f"⚠️ <@{ev.user_id}>: {text}")
    desk.decided("composer.refused user=%s reason=%s", ev.user_id, text[:60])
