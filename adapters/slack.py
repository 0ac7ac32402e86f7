"""Slack: the agents' console. slack-bolt AsyncApp, slack_sdk for Web API calls.

Inbound comes either over Socket Mode (``SLACK_APP_TOKEN``: adapters/slack_socket.py, the same
listeners, no HTTP endpoint at all) or over HTTP: one URL (``POST /slack/events``) takes the
Events API, interactivity (block actions) and slash commands. Bolt runs with
``process_before_response=True``, so its HTTP answer is only sent after our listener returned,
and our listener only returns after the inbox committed: an event Slack saw acknowledged is an
event the desk stored. Anything we fail to store gets a 5xx and Slack delivers it again
(deduped on ``event_id``).

Signatures are checked here before Bolt sees the request (Bolt checks again): a bad or stale
signature gets 401 and nothing is parsed or written. Bolt needs ``auth.test`` to recognise the
bot's own messages; we call it ourselves (cached) through a custom ``authorize`` so that a Slack
outage at that moment becomes a 503 (retried) instead of Bolt's 200-with-an-apology (lost).

Outbound, :meth:`SlackAdapter.send` maps each :class:`~bot.domain.outbound.Outbound` kind to one Web
API call and maps ``SlackApiError`` and transport errors to the desk's typed errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters._common import (
    BodyRefused,
    BodyTooLarge,
    as_mapping,
    as_str,
    bad_request,
    digest_id,
    read_body,
    too_large,
    unavailable,
)
from adapters.slack_people import DisplayNames
from adapters.slack_socket import SlackSocket
from bot.base.settings import SlackSettings
from bot.console.customer_data import FORGET_ACTION
from bot.core.roles import GroupLookupError
from bot.delivery.inbox import Inbox, storable
from bot.domain.events import (
    AgentAction,
    AgentMessage,
    AgentReply,
    Channel,
    CustomerNote,
    Event,
    HistoryModal,
    HomeEvent,
    Ignored,
    ReplyModal,
    SlackFile,
    SlashCommand,
)
from bot.domain.outbound import (
    BadRequest,
    Delivery,
    DeliveryError,
    FileContent,
    FileRef,
    Outbound,
    RetryAfter,
    Unavailable,
)
from bot.incidents.cards import (
    CLOSE,
    CONFIRM_VIEW,
    REPLY_ALL,
    REPLY_VIEW,
    RESOLVE,
    preview_modal,
    reply_modal,
    submitted_texts,
)
from bot.reports.charts import draw_async
from bot.workspace.composer import (
    REPLY_CALLBACK,
    REPLY_MACRO,
    REPLY_TEXT,
    SHORTCUT_CALLBACK,
    loading_view,
)
from bot.workspace.history import HISTORY_CALLBACK, NOTE_ACTION
from bot.workspace.history import loading_view as history_loading
from bot.workspace.home import ACTION_AVAILABILITY, ACTION_CLAIM

log = logging.getLogger("deskbot.adapters.slack")

ROUTE = "/slack/events"
# A refusal Slack should not retry (it retries 4xx too, unless told so).
NO_RETRY = {"X-Slack-No-Retry": "1"}
# Every post the outbox makes carries its row id in message metadata (see find_posted).
METADATA_EVENT = "deskbot_outbox"
POSTS_WITH_METADATA = ("slack_card", "slack_post", "slack_thread")
LOOKUP_LIMIT = 200


def outbox_metadata(message: Outbound) -> dict[str, Any] | None:
    if message.outbox_id is None:
        return None
    return {"event_type": METADATA_EVENT, "event_payload": {"outbox_id": message.outbox_id}}


DESK_COMMAND = "/desk"
ButtonAction = Literal[
    "claim", "resolve", "transfer", "kb_suggest", "kb_send", "incident_resolve", "incident_close"
]
# A button's value is the number it acts on: a ticket's, or for the incident card's buttons
# (bot/incidents/cards.py) an incident's; transfer and kb_send add ":<choice>".
ACTIONS: dict[str, ButtonAction] = {
    "ticket_claim": "claim",
    "ticket_resolve": "resolve",
    "ticket_transfer": "transfer",
    "ticket_kb_suggest": "kb_suggest",
    # "Send to customer" under each suggested article: kb_send.1, kb_send.2, … (one message
    # holds several; the value "<ticket>:<article>" says which).
    "kb_send": "kb_send",
    RESOLVE: "incident_resolve",
    CLOSE: "incident_close",
}
INCIDENT_ACTIONS = ("incident_resolve", "incident_close")
# The card's controls (bot/workspace/controls.py): static selects carry "<ticket>:<choice>" in each
# option;
# the users and multi-select menus take the ticket from their block_id ("controls.<ticket>.<rev>").
CONTROLS: dict[str, Literal["priority", "status", "intent", "reassign", "tags"]] = {
    "ticket_priority": "priority",
    "ticket_status": "status",
    "ticket_intent": "intent",
    "ticket_reassign": "reassign",
    "ticket_tags": "tags",
}
# Message subtypes that are a person saying something; every other subtype is bookkeeping.
AGENT_SUBTYPES = (None, "thread_broadcast", "file_share")
# ok:false errors that mean "Slack had a bad moment", not "your request is wrong".
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)


# --------------------------------------------------------------------------------------------
# Pure parsing: request body (as Bolt parsed it) → one event


def _ignored(external_id: str, conversation: str, reason: str) -> Ignored:
    return Ignored(
        channel="slack", external_id=external_id, conversation=conversation, reason=reason
    )


def parse_event_callback(body: Mapping[str, Any]) -> Event:
    """An Events API ``event_callback`` → AgentMessage, or Ignored for anything else."""
    event = as_mapping(body.get("event"))
    event_id = as_str(body.get("event_id")) or digest_id("event", body)
    etype = as_str(event.get("type")) or "unknown"
    channel = as_str(event.get("channel"))
    ts = as_str(event.get("ts"))
    thread_ts = as_str(event.get("thread_ts")) or None
    conversation = f"slack:{channel}:{thread_ts or ts}" if channel and ts else "slack:ignored"
    if body.get("type") != "event_callback":
        return _ignored(event_id, conversation, f"payload type {body.get('type')!r}")
    if etype != "message":
        return _ignored(event_id, conversation, f"event {etype}")
    subtype = event.get("subtype")
    if subtype not in AGENT_SUBTYPES:
        return _ignored(event_id, conversation, f"message subtype {subtype}")
    user = as_str(event.get("user"))
    if event.get("bot_id") or not user:
        return _ignored(event_id, conversation, "message from a bot")
    if not channel or not ts:
        return _ignored(event_id, conversation, "message without channel or ts")
    return AgentMessage(
        external_id=event_id,
        conversation=conversation,
        slack_channel=channel,
        user_id=user,
        ts=ts,
        thread_ts=thread_ts,
        text=as_str(event.get("text")),
        files=shared_files(event),
        broadcast=subtype == "thread_broadcast",
    )


def shared_files(event: Mapping[str, Any]) -> tuple[SlackFile, ...]:
    """The files of a ``file_share`` message (files:read lets the desk download them)."""
    found = []
    for item in event.get("files") or []:
        f = as_mapping(item)
        file_id = as_str(f.get("id"))
        if not file_id:
            continue
        size = f.get("size")
        found.append(
            SlackFile(
                id=file_id,
                name=as_str(f.get("name")) or as_str(f.get("title")),
                mimetype=as_str(f.get("mimetype")) or None,
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                url_private=as_str(f.get("url_private_download")) or as_str(f.get("url_private")),
            )
        )
    return tuple(found)


def parse_block_actions(body: Mapping[str, Any]) -> Event:
    """A ``block_actions`` payload → AgentAction for Claim/Resolve, else Ignored."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    actions = body.get("actions")
    action = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
    action_ts = as_str(action.get("action_ts"))
    external_id = f"action:{action_ts}:{user_id}" if action_ts else digest_id("action", body)
    container = as_mapping(body.get("container"))
    channel = as_str(as_mapping(body.get("channel")).get("id")) or as_str(
        container.get("channel_id")
    )
    message_ts = as_str(container.get("message_ts")) or as_str(
        as_mapping(body.get("message")).get("ts")
    )
    conversation = f"slack:{channel}:{message_ts}" if channel and message_ts else "slack:ignored"
    action_id = as_str(action.get("action_id"))
    if action_id == FORGET_ACTION:
        # The confirmed "Forget customer" button: the same /desk command with "confirm", so the
        # role check, the audit and the answer are the command's own.
        return _forget_confirmed(body, external_id, user_id, channel, as_str(action.get("value")))
    if action_id in CONTROLS:
        return _parse_control(body, action, external_id, conversation, channel, message_ts)
    if action_id == REPLY_ALL:  # the adapter opens the modal; its submission is the event
        return _ignored(external_id, conversation, f"action {action_id}: modal opened")
    kind = ACTIONS.get(action_id.split(".")[0])
    if kind is None:
        return _ignored(external_id, conversation, f"action {action_id or 'unknown'}")
    # A button carries the ticket number; the transfer menu's option carries "<ticket>:<team>".
    value = as_str(action.get("value")) or as_str(
        as_mapping(action.get("selected_option")).get("value")
    )
    number, _, rest = value.partition(":")
    if not number.isdigit() or (kind in ("transfer", "kb_send")) != bool(rest):
        return _ignored(external_id, conversation, f"action {action_id} with bad value")
    if not channel or not message_ts or not user_id:
        return _ignored(external_id, conversation, f"action {action_id} outside a message")
    incident = kind in INCIDENT_ACTIONS  # acts on every ticket of the incident, not on one
    return AgentAction(
        external_id=external_id,
        conversation=f"slack:incident:{number}" if incident else conversation,
        action=kind,
        team=rest if kind == "transfer" else None,
        value=rest if kind == "kb_send" else None,
        ticket_id=0 if incident else int(number),
        incident_id=int(number) if incident else None,
        user_id=user_id,
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        slack_channel=channel,
        message_ts=message_ts,
        response_url=as_str(body.get("response_url")) or None,
    )


def _forget_confirmed(
    body: Mapping[str, Any], external_id: str, user_id: str, channel: str, value: str
) -> Event:
    conversation = f"slack:{channel}:commands"
    if not re.fullmatch(r"c\d{1,18}", value) or not user_id or not channel:
        return _ignored(external_id, conversation, f"action {FORGET_ACTION} with bad value")
    return SlashCommand(
        external_id=external_id,
        conversation=conversation,
        command=DESK_COMMAND,
        text=f"forget {value} confirm",
        user_id=user_id,
        slack_channel=channel,
        response_url=as_str(body.get("response_url")) or None,
        team_domain=as_str(as_mapping(body.get("team")).get("domain")),
    )


def _parse_control(
    body: Mapping[str, Any],
    action: Mapping[str, Any],
    external_id: str,
    conversation: str,
    channel: str,
    message_ts: str,
) -> Event:
    """One of the card's menus → AgentAction; anything malformed or forged → Ignored."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    action_id = as_str(action.get("action_id"))
    kind = CONTROLS[action_id]
    block = as_str(action.get("block_id")).split(".")
    from_block = block[1] if len(block) == 3 and block[0] == "controls" else ""
    value: str | None = None
    values: tuple[str, ...] = ()
    number = from_block
    if kind == "reassign":
        value = as_str(action.get("selected_user")) or None
    elif kind == "tags":
        chosen = action.get("selected_options")
        pairs = [
            as_str(as_mapping(o).get("value")).partition(":")
            for o in (chosen if isinstance(chosen, list) else [])
        ]
        if any(n != number or not tag for n, _, tag in pairs):
            return _ignored(external_id, conversation, f"action {action_id} with bad value")
        values = tuple(tag for _, _, tag in pairs)
    else:
        number, _, picked = as_str(
            as_mapping(action.get("selected_option")).get("value")
        ).partition(":")
        value = picked or None
    if not number.isdigit() or (kind != "tags" and not value):
        return _ignored(external_id, conversation, f"action {action_id} with bad value")
    if not channel or not message_ts or not user_id:
        return _ignored(external_id, conversation, f"action {action_id} outside a message")
    return AgentAction(
        external_id=external_id,
        conversation=conversation,
        action=kind,
        ticket_id=int(number),
        user_id=user_id,
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        slack_channel=channel,
        message_ts=message_ts,
        value=value,
        values=values,
        response_url=as_str(body.get("response_url")) or None,
    )


# --------------------------------------------------------------------------------------------
# App Home (bot/workspace/home.py): the tab being opened, and its buttons


def parse_home_opened(body: Mapping[str, Any]) -> Event:
    """``app_home_opened`` → HomeEvent("opened") for the Home tab; the Messages and About
    tabs fire the same event and are ignored."""
    event = as_mapping(body.get("event"))
    event_id = as_str(body.get("event_id")) or digest_id("event", body)
    user = as_str(event.get("user"))
    conversation = f"slack:home:{user}" if user else "slack:ignored"
    if as_str(event.get("tab")) != "home":
        return _ignored(event_id, conversation, f"app_home_opened tab {event.get('tab')!r}")
    if not user:
        return _ignored(event_id, conversation, "app_home_opened without a user")
    return HomeEvent(external_id=event_id, conversation=conversation, action="opened", user_id=user)


def parse_home_action(body: Mapping[str, Any]) -> Event:
    """A button on the Home tab (container type ``view``) → HomeEvent, else Ignored."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    actions = body.get("actions")
    action = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
    action_ts = as_str(action.get("action_ts"))
    external_id = f"action:{action_ts}:{user_id}" if action_ts else digest_id("action", body)
    # One conversation per person: their Home's events are handled in the order they came.
    conversation = f"slack:home:{user_id}" if user_id else "slack:ignored"
    action_id = as_str(action.get("action_id"))
    value = as_str(action.get("value"))
    name = as_str(user.get("name")) or as_str(user.get("username"))
    if not user_id:
        return _ignored(external_id, conversation, f"home action {action_id} without a user")
    if action_id == ACTION_AVAILABILITY and value in ("available", "away"):
        return HomeEvent(
            external_id=external_id,
            conversation=conversation,
            action="available" if value == "available" else "away",
            user_id=user_id,
            user_name=name,
        )
    if action_id == ACTION_CLAIM and value.isascii() and value.isdigit() and len(value) <= 18:
        return HomeEvent(
            external_id=external_id,
            conversation=conversation,
            action="claim",
            user_id=user_id,
            user_name=name,
            ticket_id=int(value),
        )
    return _ignored(external_id, conversation, f"home action {action_id or 'unknown'}")


def is_home_action(body: Mapping[str, Any]) -> bool:
    return as_str(as_mapping(body.get("container")).get("type")) == "view" and as_str(
        as_mapping(body.get("view")).get("type")
    ) in ("home", "")


# --------------------------------------------------------------------------------------------
# The Reply modal and the "Send to customer" shortcut (bot/workspace/composer.py)

REPLY_ACTION = "ticket_reply"
HISTORY_ACTION = "ticket_history"


def _modal_state(view: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(typed text, the text box's block_id revision, the macro picked) from a view's state."""
    values = as_mapping(as_mapping(view.get("state")).get("values"))
    text: str | None = None
    revision: str | None = None
    macro: str | None = None
    for block_id, actions in values.items():
        for action_id, state in as_mapping(actions).items():
            state = as_mapping(state)
            if action_id == REPLY_TEXT:
                text = as_str(state.get("value"))
                revision = str(block_id).partition(".")[2] or None
            elif action_id == REPLY_MACRO:
                macro = as_str(as_mapping(state.get("selected_option")).get("value")) or None
    return text, revision, macro


def _modal_ticket(view: Mapping[str, Any]) -> int | None:
    try:
        meta = json.loads(as_str(view.get("private_metadata")) or "{}")
    except ValueError:
        return None
    number = meta.get("ticket") if isinstance(meta, dict) else None
    return number if isinstance(number, int) and 0 < number < 2**62 else None


CARD_CONVERSATION = re.compile(r"slack:[A-Z0-9]{1,20}:\d{1,12}\.\d{1,8}")


def _modal_conversation(view: Mapping[str, Any]) -> str:
    """The card's conversation the modal carries (bot.workspace.composer.loading_view), so its
    events
    are stored, ordered and erased with the card's; else one of the modal's own."""
    try:
        meta = json.loads(as_str(view.get("private_metadata")) or "{}")
    except ValueError:
        meta = {}
    conv = as_str(meta.get("conv")) if isinstance(meta, dict) else ""
    if CARD_CONVERSATION.fullmatch(conv):
        return conv
    view_id = as_str(view.get("id"))
    return f"slack:view:{view_id}" if view_id else "slack:ignored"


def is_reply_modal(body: Mapping[str, Any]) -> bool:
    return as_str(as_mapping(body.get("view")).get("callback_id")) == REPLY_CALLBACK


def parse_reply_modal_action(body: Mapping[str, Any]) -> Event:
    """A macro picked, or text typed, in the Reply modal → ReplyModal (the desk redraws it)."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    view = as_mapping(body.get("view"))
    actions = body.get("actions")
    action = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
    external_id = f"action:{as_str(action.get('action_ts'))}:{user_id}"
    view_id = as_str(view.get("id"))
    conversation = _modal_conversation(view)
    ticket = _modal_ticket(view)
    if ticket is None or not user_id or not view_id or not action.get("action_ts"):
        return _ignored(digest_id("action", body), conversation, "reply modal action malformed")
    text, revision, macro = _modal_state(view)
    action_id = as_str(action.get("action_id"))
    if action_id == REPLY_MACRO:
        macro = as_str(as_mapping(action.get("selected_option")).get("value")) or None
    elif action_id == REPLY_TEXT:
        text = as_str(action.get("value"))
    else:
        return _ignored(external_id, conversation, f"reply modal action {action_id}")
    return ReplyModal(
        external_id=external_id,
        conversation=conversation,
        ticket_id=ticket,
        user_id=user_id,
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        view_id=view_id,
        macro=macro,
        text=text,
        picked=action_id == REPLY_MACRO,
        revision=revision,
    )


def parse_reply_submission(body: Mapping[str, Any]) -> Event:
    """The Reply modal's Send → AgentReply with the text as the agent saw it."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    view = as_mapping(body.get("view"))
    view_id = as_str(view.get("id"))
    external_id = f"view:{view_id}:{as_str(view.get('hash'))}" if view_id else ""
    conversation = _modal_conversation(view)
    ticket = _modal_ticket(view)
    text, _, macro = _modal_state(view)
    if ticket is None or not user_id or not view_id or text is None:
        return _ignored(digest_id("view", body), conversation, "reply submission malformed")
    return AgentReply(
        external_id=external_id,
        conversation=conversation,
        source="modal",
        ticket_id=ticket,
        user_id=user_id,
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        text=text,
        macro=macro,
    )


def parse_note_submission(body: Mapping[str, Any]) -> Event:
    """The History modal's "Save note" → CustomerNote."""
    user_id = as_str(as_mapping(body.get("user")).get("id"))
    view = as_mapping(body.get("view"))
    view_id = as_str(view.get("id"))
    conversation = _modal_conversation(view)
    try:
        meta = json.loads(as_str(view.get("private_metadata")) or "{}")
    except ValueError:
        meta = {}
    ticket = meta.get("ticket") if isinstance(meta, dict) else None
    customer = meta.get("customer") if isinstance(meta, dict) else None
    values = as_mapping(as_mapping(view.get("state")).get("values"))
    note = as_mapping(as_mapping(values.get("note")).get(NOTE_ACTION))
    if (
        not isinstance(ticket, int)
        or not isinstance(customer, int)
        or not 0 < ticket < 2**62
        or not 0 < customer < 2**62
        or not user_id
        or not view_id
    ):
        return _ignored(digest_id("view", body), conversation, "note submission malformed")
    return CustomerNote(
        external_id=f"view:{view_id}:{as_str(view.get('hash'))}",
        conversation=conversation,
        ticket_id=ticket,
        customer_id=customer,
        user_id=user_id,
        text=as_str(note.get("value")),
    )


def parse_send_shortcut(body: Mapping[str, Any]) -> Event:
    """The message shortcut "Send to customer" on a thread message → AgentReply."""
    user = as_mapping(body.get("user"))
    user_id = as_str(user.get("id"))
    message = as_mapping(body.get("message"))
    channel = as_str(as_mapping(body.get("channel")).get("id"))
    ts = as_str(message.get("ts"))
    thread_ts = as_str(message.get("thread_ts")) or None
    external_id = f"shortcut:{as_str(body.get('action_ts'))}:{user_id}"
    conversation = f"slack:{channel}:{thread_ts or ts}" if channel and ts else "slack:ignored"
    if as_str(body.get("callback_id")) != SHORTCUT_CALLBACK:
        return _ignored(digest_id("shortcut", body), conversation, "shortcut not ours")
    if not user_id or not channel or not ts or not body.get("action_ts"):
        return _ignored(digest_id("shortcut", body), conversation, "shortcut malformed")
    return AgentReply(
        external_id=external_id,
        conversation=conversation,
        source="shortcut",
        user_id=user_id,
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        text=as_str(message.get("text")),
        slack_channel=channel,
        thread_ts=thread_ts,
        ts=ts,
        from_bot=bool(message.get("bot_id")) or not as_str(message.get("user")),
        response_url=as_str(body.get("response_url")) or None,
    )


def _action_id(body: Mapping[str, Any]) -> str:
    actions = body.get("actions")
    return (
        as_str(as_mapping(actions[0]).get("action_id"))
        if isinstance(actions, list) and actions
        else ""
    )


def parse_slash_command(body: Mapping[str, Any]) -> Event:
    """A slash command (form fields) → SlashCommand for ``/desk``, else Ignored."""
    trigger_id = as_str(body.get("trigger_id"))
    external_id = f"command:{trigger_id}" if trigger_id else digest_id("command", body)
    channel = as_str(body.get("channel_id"))
    command = as_str(body.get("command"))
    conversation = f"slack:{channel}:commands"
    if command != DESK_COMMAND:
        return _ignored(external_id, conversation, f"command {command or 'unknown'}")
    return SlashCommand(
        external_id=external_id,
        conversation=conversation,
        command=command,
        text=as_str(body.get("text")).strip(),
        user_id=as_str(body.get("user_id")),
        slack_channel=channel,
        response_url=as_str(body.get("response_url")) or None,
        team_domain=as_str(body.get("team_domain")),
    )


def incident_of(view: Mapping[str, Any]) -> dict[str, Any]:
    """The incident modal's private_metadata (JSON the desk wrote), or {}."""
    try:
        meta = json.loads(as_str(view.get("private_metadata")) or "{}")
    except ValueError:
        return {}
    if not isinstance(meta, dict) or not isinstance(meta.get("incident"), int):
        return {}
    return meta


def parse_reply_confirmed(body: Mapping[str, Any]) -> Event:
    """The preview of a Reply to all affected, submitted: the texts go to every customer."""
    view = as_mapping(body.get("view"))
    meta = incident_of(view)
    user = as_mapping(body.get("user"))
    # One submission per view: Slack retrying the same one is the same event.
    external_id = f"view:{as_str(view.get('id'))}" if view.get("id") else digest_id("view", body)
    texts = meta.get("texts")
    if not meta or not isinstance(texts, dict) or not as_str(user.get("id")):
        return _ignored(external_id, "slack:ignored", "incident reply without its texts")
    return AgentAction(
        external_id=external_id,
        conversation=f"slack:incident:{meta['incident']}",
        action="incident_reply",
        ticket_id=0,
        incident_id=meta["incident"],
        user_id=as_str(user.get("id")),
        user_name=as_str(user.get("name")) or as_str(user.get("username")),
        slack_channel="",
        message_ts="",
        texts={str(k): as_str(v) for k, v in texts.items() if as_str(v)},
    )


def parse_other(body: Mapping[str, Any]) -> Event:
    """Shortcuts, view submissions and other interactivity the desk does not use."""
    kind = as_str(body.get("type")) or "unknown"
    return _ignored(digest_id(kind, body), "slack:ignored", f"interactivity {kind}")


# --------------------------------------------------------------------------------------------
# Error mapping


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        items = headers.items()
    except AttributeError:
        return None
    for key, value in items:
        if str(key).lower() == name.lower():
            return str(value[0] if isinstance(value, list | tuple) else value)
    return None


def _retry_after(headers: Any, default: float = 1.0) -> float:
    raw = _header(headers, "Retry-After")
    try:
        return max(float(raw), 0.0) if raw is not None else default
    except ValueError:
        return default


def map_slack_error(exc: SlackApiError) -> DeliveryError:
    """SlackApiError → RetryAfter (429), Unavailable (5xx, transient), BadRequest (ok:false)."""
    response = exc.response
    status = getattr(response, "status_code", None)
    if status is None:  # a non-JSON body: Bolt hands us the raw aiohttp response
        status = getattr(response, "status", 0)
    headers = getattr(response, "headers", None)
    error = ""
    if isinstance(response, AsyncSlackResponse) and isinstance(response.data, dict):
        error = as_str(response.data.get("error"))
    if status == 429:
        return RetryAfter(_retry_after(headers), error or "ratelimited")
    if isinstance(status, int) and status >= 500:
        return Unavailable(f"slack http {status}" + (f": {error}" if error else ""))
    if error in TRANSIENT_ERRORS:
        return Unavailable(error)
    return BadRequest(error or f"slack http {status}")


# --------------------------------------------------------------------------------------------
# The adapter


def _no_retry(response: web.Response) -> web.Response:
    response.headers.update(NO_RETRY)
    return response


class _NotStored(Exception):
    """The inbox could not store an event: Slack's retry is what we want (503)."""


def _where(error: BaseException) -> str:
    """The innermost frame of ``error``: enough to find a bug, without a traceback in the log
    for every hostile request."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 2)[-1]}:{tb.tb_lineno}"


class _IdentityUnavailable(Exception):
    """auth.test failed; not a SlackApiError, so Bolt turns it into a 5xx instead of a 200."""


class SlackAdapter:
    channel: Channel = "slack"

    def __init__(
        self,
        settings: SlackSettings,
        inbox: Inbox,
        *,
        max_body_bytes: int,
        request_timeout: int = 30,
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._max_body = max_body_bytes
        self._timeout = request_timeout
        self._verifier = (
            SignatureVerifier(settings.signing_secret) if settings.signing_secret else None
        )
        # No SDK-level retries: its default retries a timed-out chat.postMessage that Slack may
        # well have posted. The outbox owns retries (one policy, backoff, visible in metrics).
        self.client = AsyncWebClient(
            token=settings.bot_token,
            base_url=settings.api_base,
            timeout=request_timeout,
            retry_handlers=[],
        )
        self.names = DisplayNames(self.client)
        self._auth: AsyncSlackResponse | None = None
        self._auth_lock = asyncio.Lock()
        self._started = False

        async def authorize(
            enterprise_id: str | None, team_id: str | None, user_id: str | None
        ) -> AuthorizeResult:
            # Bolt inspects parameter names, so this is a plain function, not a method.
            return AuthorizeResult.from_auth_test_response(
                bot_token=settings.bot_token, auth_test_response=await self.identity()
            )

        self.app = AsyncApp(
            # Bolt's own client gets no token (the authorize result supplies it per request):
            # with both, Bolt warns at start-up that the token is ignored.
            client=AsyncWebClient(base_url=settings.api_base, timeout=request_timeout),
            # Socket Mode needs no signing secret (nothing comes over HTTP); "" keeps Bolt from
            # reading SLACK_SIGNING_SECRET from the environment behind our back.
            signing_secret=settings.signing_secret or "",
            request_verification_enabled=not settings.socket_mode,
            process_before_response=True,
            authorize=authorize,
            # A payload no listener takes goes to _on_error (recorded, acknowledged), not to
            # Bolt's 404 with a page of suggested code in the log.
            raise_error_for_unhandled_request=True,
        )
        # Set by the app: how many of an incident's customers speak each language (the
        # Reply to all affected modal asks for a text per language), and the default one.
        self.incident_languages: Callable[[int], Awaitable[dict[str, int] | None]] | None = None
        self.default_language = "en"
        self._register(self.app)
        # Socket Mode: one outbound WebSocket of this process (made at start, in the loop).
        self.socket: SlackSocket | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        if not self._settings.socket_mode:  # Socket Mode serves no Slack endpoint at all
            app.router.add_post(ROUTE, self.handle)

    async def start(self) -> None:
        try:
            await self.identity()
        except _IdentityUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, SlackApiError) and not isinstance(
                map_slack_error(cause), Unavailable | RetryAfter
            ):
                # invalid_auth, token_revoked...: a configuration error, say so at start-up.
                raise RuntimeError(
                    f"Slack rejected SLACK_BOT_TOKEN at auth.test: {map_slack_error(cause).detail}"
                ) from cause
            # Slack is down: take requests anyway; auth.test is retried on the next one.
            log.warning("slack.auth_test_deferred error=%s", type(cause).__name__)
        if self._settings.app_token is not None:
            self.socket = SlackSocket(
                self._settings.app_token,
                AsyncWebClient(base_url=self._settings.api_base, timeout=self._timeout),
                self.dispatch_socket,
                watchdog_seconds=self._settings.socket_watchdog_seconds,
            )
            await self.socket.start()
        self._started = True
        log.info(
            "slack.started api_base=%s inbound=%s",
            self._settings.api_base,
            "socket_mode" if self.socket is not None else "events_api",
        )

    async def stop(self) -> None:
        self._started = False
        if self.socket is not None:
            await self.socket.stop()
        session = self.client.session
        if session is not None and not session.closed:
            await session.close()
        log.info("slack.stopped")

    @property
    def started(self) -> bool:
        return self._started

    async def identity(self) -> AsyncSlackResponse:
        """auth.test, once per process (Bolt uses it to drop the bot's own events)."""
        if self._auth is not None:
            return self._auth
        self._ensure_session()
        async with self._auth_lock:
            if self._auth is None:
                try:
                    self._auth = await self.client.auth_test()
                except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                    raise _IdentityUnavailable(type(exc).__name__) from exc
                log.info(
                    "slack.identity bot_id=%s user_id=%s",
                    self._auth.get("bot_id"),
                    self._auth.get("user_id"),
                )
            return self._auth

    # -- inbound -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, self._max_body)
        except BodyTooLarge:
            log.warning("slack.rejected reason=too_large")
            return too_large(self._max_body)
        except BodyRefused as exc:
            log.warning("slack.rejected reason=%s", exc.reason)
            return exc.response()
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not self._signature_ok(body, timestamp, signature):
            log.warning("slack.rejected reason=bad_signature")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            text = body.decode("utf-8")
            headers: dict[str, list[str]] = {}
            for key, value in request.headers.items():
                headers.setdefault(key.lower(), []).append(value)
            bolt_request = AsyncBoltRequest(
                body=text,
                query=request.query_string,
                headers=headers,  # type: ignore[arg-type]
            )
            # Bolt verifies the raw body; what it and the listeners read is cleaned of what
            # the database refuses, and refused when nested too deeply (see
            # bot.delivery.inbox.storable).
            bolt_request.body = storable(bolt_request.body)
        except (ValueError, LookupError, AttributeError, TypeError, RecursionError):
            log.warning("slack.rejected reason=malformed_body")
            return _no_retry(bad_request("malformed body"))
        if not isinstance(bolt_request.body, dict):
            return _no_retry(bad_request("malformed body"))
        if bolt_request.body.get("type") not in ("url_verification", "ssl_check"):
            try:
                await self.identity()
            except _IdentityUnavailable:
                log.warning("slack.deferred reason=auth_test_failed")
                return unavailable()
        try:
            response = await self.app.async_dispatch(bolt_request)
        except Exception as exc:  # Bolt's own error path trips on some bodies too
            if isinstance(exc, _NotStored):
                log.error("slack.inbox_failed error=%s", exc, exc_info=exc.__cause__)
                return unavailable()
            log.warning(
                "slack.rejected reason=unprocessable error=%s at=%s",
                type(exc).__name__,
                _where(exc),
            )
            return _no_retry(bad_request("unprocessable payload"))
        if response.status >= 500:
            # A listener could not store the event (or auth.test failed inside Bolt): nothing
            # was acknowledged, so Slack's retry is what we want.
            return unavailable()
        return await to_aiohttp_response(response)

    async def dispatch_socket(
        self, payload: dict[str, Any], headers: dict[str, Any] | None
    ) -> BoltResponse:
        """One Socket Mode envelope's payload through the same listeners as the HTTP path.

        200 → acknowledged (the inbox committed, or the payload is one no retry could fix:
        acknowledged so Slack stops sending it); 5xx → not acknowledged, Slack sends it again.
        """
        try:
            body = storable(payload)
            request = AsyncBoltRequest(mode="socket_mode", body=body, headers=headers)
            request.body = body
        except (ValueError, LookupError, AttributeError, TypeError, RecursionError):
            log.warning("slack.rejected reason=malformed_body")
            return BoltResponse(status=200, body="")
        if not isinstance(request.body, dict):
            return BoltResponse(status=200, body="")
        try:
            await self.identity()
        except _IdentityUnavailable:
            log.warning("slack.deferred reason=auth_test_failed")
            return BoltResponse(status=503, body="")
        try:
            response = await self.app.async_dispatch(request)
        except _NotStored as exc:
            log.error("slack.inbox_failed error=%s", exc, exc_info=exc.__cause__)
            return BoltResponse(status=503, body="")
        except Exception as exc:
            log.warning(
                "slack.rejected reason=unprocessable error=%s at=%s",
                type(exc).__name__,
                _where(exc),
            )
            return BoltResponse(status=200, body="")
        if response.status >= 500:
            return response
        if response.status != 200:  # 400 unprocessable, 404 no listener: never better
            return BoltResponse(status=200, body="")
        return response

    def _signature_ok(self, body: bytes, timestamp: str | None, signature: str | None) -> bool:
        if not timestamp or not signature or self._verifier is None:
            return False
        try:
            return self._verifier.is_valid(body, timestamp, signature)
        except (ValueError, UnicodeDecodeError):  # a non-numeric timestamp, a non-UTF-8 body
            return False

    async def _on_error(self, error: Exception) -> BoltResponse:
        """Bolt's error handler: a body Bolt or a parser trips on is the sender's problem.

        Without it Bolt answers 500 (the desk's 503): Slack retries a payload that can never
        succeed, and every try logs a traceback. Only an event the inbox could not store is
        worth a retry.
        """
        if isinstance(error, _NotStored):
            log.error("slack.inbox_failed error=%s", error, exc_info=error.__cause__)
            return BoltResponse(status=500, body="")
        if isinstance(error, BoltUnhandledRequestError) and isinstance(error.body, dict):
            return await self._unhandled(error.body)
        log.warning(
            "slack.rejected reason=unprocessable error=%s at=%s",
            type(error).__name__,
            _where(error),
        )
        no_retry: dict[str, str | Sequence[str]] = {**NO_RETRY}
        return BoltResponse(status=400, body={"error": "unprocessable payload"}, headers=no_retry)

    async def _unhandled(self, body: dict[str, Any]) -> BoltResponse:
        """A payload no listener takes: kinds the desk never asks Slack for (a legacy dialog
        or attachment button, an external select's options, a closed modal, a workflow step).
        Recorded in the inbox as ignored, with its kind, and acknowledged: a 404 would make
        Slack show the person an error, and retry an event. 500 when it could not be stored."""
        try:
            await self._accept(parse_other(body), body)
        except _NotStored as exc:
            log.error("slack.inbox_failed error=%s", exc, exc_info=exc.__cause__)
            return BoltResponse(status=500, body="")
        if as_str(body.get("type")) in ("block_suggestion", "dialog_suggestion"):
            return BoltResponse(status=200, body={"options": []})
        return BoltResponse(status=200, body="")

    def _register(self, app: AsyncApp) -> None:
        app.error(self._on_error)
        anything = re.compile(r".*")
        app.event(anything)(self._on_event)
        app.block_action(anything)(self._on_block_action)
        app.command(anything)(self._on_command)
        app.shortcut(anything)(self._on_shortcut)
        app.view(anything)(self._on_view)

    async def _named(self, event: Event) -> Event:
        """An agent's event with their display name (users.info, cached): the desk shows
        people names, not Slack ids."""
        if isinstance(event, AgentMessage | AgentAction | HomeEvent | ReplyModal | AgentReply):
            self._ensure_session()
            update = {"user_name": await self.names.get(event.user_id, event.user_name)}
            if isinstance(event, AgentAction) and event.action == "reassign" and event.value:
                update["target_name"] = await self.names.get(event.value)
            return event.model_copy(update=update)
        return event

    async def _accept(self, event: Event, raw: Mapping[str, Any]) -> None:
        try:
            event = await self._named(event)
        except Exception as exc:  # a name is a nicety: the event is stored without it
            log.warning("slack.naming_failed kind=%s error=%s", event.kind, type(exc).__name__)
        try:
            await self._inbox.accept([event], raw)
        except Exception as exc:
            raise _NotStored(type(exc).__name__) from exc
        log.info("slack.event_accepted kind=%s external_id=%s", event.kind, event.external_id)

    async def _on_event(self, body: dict[str, Any], ack: AsyncAck) -> None:
        if as_mapping(body.get("event")).get("type") == "app_home_opened":
            await self._accept(parse_home_opened(body), body)
        else:
            await self._accept(parse_event_callback(body), body)
        await ack()

    async def _on_block_action(self, body: dict[str, Any], ack: AsyncAck) -> None:
        if is_reply_modal(body):
            await self._accept(parse_reply_modal_action(body), body)
        elif is_home_action(body):
            await self._accept(parse_home_action(body), body)
        elif _action_id(body) in (REPLY_ACTION, HISTORY_ACTION):
            await self._accept(await self._open_modal(body), body)
        else:
            await self._accept(parse_block_actions(body), body)
            actions = body.get("actions")
            first = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
            if as_str(first.get("action_id")) == REPLY_ALL:
                # views.open must come within 3 s of the click (the trigger_id expires): here,
                # in the request, not through the outbox.
                await self._open_reply_modal(body, as_str(first.get("value")))
        await ack()

    async def _open_reply_modal(self, body: Mapping[str, Any], value: str) -> None:
        trigger = as_str(body.get("trigger_id"))
        if not value.isdigit() or not trigger or self.incident_languages is None:
            return
        counts = await self.incident_languages(int(value))
        if counts is None:
            return  # the incident is no longer open; its card says so (updated)
        self._ensure_session()
        try:
            await self.client.views_open(
                trigger_id=trigger,
                view=reply_modal(int(value), counts, self.default_language),
            )
        except SlackApiError as exc:
            log.warning("slack.views_open_failed error=%s", exc.response.get("error"))

    async def _on_incident_view(self, body: dict[str, Any], ack: AsyncAck) -> None:
        """Reply to all affected: the modal's text per language, its preview, the send."""
        view = as_mapping(body.get("view"))
        callback = as_str(view.get("callback_id"))
        if as_str(body.get("type")) != "view_submission" or callback not in (
            REPLY_VIEW,
            CONFIRM_VIEW,
        ):
            await self._on_other(body, ack)
            return
        if callback == CONFIRM_VIEW:
            await self._accept(parse_reply_confirmed(body), body)
            await ack()  # closes the modal
            return
        meta = incident_of(view)
        values = as_mapping(as_mapping(view.get("state")).get("values"))
        texts = submitted_texts(dict(values))
        default = self.default_language
        if not meta:
            await ack()
            return
        if default not in texts:
            await ack(
                response_action="errors",
                errors={f"text.{default}": "Write the text most customers will read."},
            )
            return
        counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
        await ack(
            response_action="update",
            view=preview_modal(meta["incident"], dict(counts or {}), texts, default),
        )

    async def _on_command(self, body: dict[str, Any], ack: AsyncAck) -> None:
        event = parse_slash_command(body)
        await self._accept(event, body)
        if isinstance(event, Ignored):
            await ack(text=f"deskbot does not handle {as_str(body.get('command'))}.")
        else:
            # The answer comes through the outbox via response_url; an empty ack shows nothing.
            await ack()

    async def _open_modal(self, body: dict[str, Any]) -> Event:
        """The card's Reply or History: open the modal now, while the trigger_id lives (3 s,
        once); the desk fills it through the outbox. This is the one Web API call made inside
        a request, because Slack allows no other way."""
        history = _action_id(body) == HISTORY_ACTION
        user_id = as_str(as_mapping(body.get("user")).get("id"))
        actions = body.get("actions")
        action = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
        value = as_str(action.get("value"))
        external_id = f"action:{as_str(action.get('action_ts'))}:{user_id}"
        trigger = as_str(body.get("trigger_id"))
        if not (value.isascii() and value.isdigit() and len(value) <= 18) or not trigger:
            return _ignored(digest_id("action", body), "slack:ignored", "reply with bad value")
        container = as_mapping(body.get("container"))
        card = f"slack:{as_str(container.get('channel_id'))}:{as_str(container.get('message_ts'))}"
        conv = card if CARD_CONVERSATION.fullmatch(card) else None
        self._ensure_session()
        try:
            view = history_loading(int(value), conv) if history else loading_view(int(value), conv)
            resp = await asyncio.wait_for(
                self.client.views_open(trigger_id=trigger, view=view), 2.0
            )
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack.views_open_failed error=%s", type(exc).__name__)
            return _ignored(external_id, "slack:ignored", "views.open failed")
        view_id = as_str(as_mapping(resp.get("view")).get("id"))
        if not view_id:
            return _ignored(external_id, "slack:ignored", "views.open gave no view id")
        conversation = conv or f"slack:view:{view_id}"
        if history:
            return HistoryModal(
                external_id=external_id,
                conversation=conversation,
                ticket_id=int(value),
                user_id=user_id,
                view_id=view_id,
                team_domain=as_str(as_mapping(body.get("team")).get("domain")),
            )
        return ReplyModal(
            external_id=external_id,
            conversation=conversation,
            ticket_id=int(value),
            user_id=user_id,
            user_name=as_str(as_mapping(body.get("user")).get("name")),
            view_id=view_id,
        )

    async def _on_view(self, body: dict[str, Any], ack: AsyncAck) -> None:
        if as_str(body.get("type")) == "view_submission" and is_reply_modal(body):
            event = parse_reply_submission(body)
            if isinstance(event, AgentReply) and not event.text.strip():
                # Said in the modal, which stays open: nothing is stored.
                block = next(
                    (
                        b
                        for b, a in as_mapping(
                            as_mapping(as_mapping(body.get("view")).get("state")).get("values")
                        ).items()
                        if REPLY_TEXT in as_mapping(a)
                    ),
                    REPLY_TEXT,
                )
                await ack(response_action="errors", errors={block: "Write something to send."})
                return
            await self._accept(event, body)
            await ack()  # closes the modal
            return
        if (
            as_str(body.get("type")) == "view_submission"
            and as_str(as_mapping(body.get("view")).get("callback_id")) == HISTORY_CALLBACK
        ):
            await self._accept(parse_note_submission(body), body)
            await ack()
            return
        await self._on_incident_view(body, ack)

    async def _on_shortcut(self, body: dict[str, Any], ack: AsyncAck) -> None:
        if as_str(body.get("type")) == "message_action":
            await self._accept(parse_send_shortcut(body), body)
            await ack()
            return
        await self._on_other(body, ack)

    async def _on_other(self, body: dict[str, Any], ack: AsyncAck) -> None:
        await self._accept(parse_other(body), body)
        await ack()

    # -- outbound ----------------------------------------------------------------------------

    def _ensure_session(self) -> None:
        # One pooled session for all Web API calls (slack_sdk would open one per call). Made
        # lazily: the outbox may call send() before start(), and it must be made in the loop.
        if self.client.session is None or self.client.session.closed:
            self.client.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )

    async def presence(self, user: str) -> str | None:
        """Slack's presence of ``user`` ("active" or "away"); None when Slack can't say now."""
        self._ensure_session()
        try:
            resp = await self.client.users_getPresence(user=user)
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack.presence_failed user=%s error=%s", user, type(exc).__name__)
            return None
        presence = as_str(resp.get("presence"))
        return presence if presence in ("active", "away") else None

    async def workspace_domain(self) -> str:
        """The workspace's subdomain (``acme`` of https://acme.slack.com/), from auth.test."""
        url = as_str((await self.identity()).get("url"))
        match = re.fullmatch(r"https://([a-z0-9][a-z0-9-]{0,62})\.slack\.com/?", url)
        return match.group(1) if match else ""

    async def usergroup_members(self, group: str) -> list[str]:
        """The members of a user group (``usergroups.users.list``, scope usergroups:read)."""
        self._ensure_session()
        try:
            resp = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            raise GroupLookupError(str(exc.response.get("error") or "error")) from None
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise GroupLookupError(type(exc).__name__) from None
        users = resp.get("users")
        return [u for u in users if isinstance(u, str)] if isinstance(users, list) else []

    async def send(self, message: Outbound) -> Delivery:
        self._ensure_session()
        try:
            return await self._send(message)
        except SlackApiError as exc:
            error = map_slack_error(exc)
            if message.kind == "slack_reaction" and error.detail == "already_reacted":
                return Delivery(platform_message_id=message.reply_to)
            raise error from exc
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc

    async def find_posted(self, message: Outbound) -> Delivery | None:
        """The post of outbox row ``message.outbox_id`` if Slack has it, found by its metadata.

        Asked before a post whose outcome is unknown is made again (the desk died or timed out
        while Slack held its answer): a thread message is looked for in its thread, a card or
        channel post among the channel's latest messages. Needs ``channels:history`` (and
        ``groups:history`` for private channels); Slack's refusal raises like :meth:`send`.
        """
        if message.outbox_id is None or message.kind not in POSTS_WITH_METADATA:
            return None
        self._ensure_session()
        try:
            if message.kind == "slack_thread":
                resp = await self.client.conversations_replies(
                    channel=message.destination,
                    ts=_need_reply_to(message),
                    include_all_metadata=True,
                    limit=LOOKUP_LIMIT,
                )
            else:
                resp = await self.client.conversations_history(
                    channel=message.destination, include_all_metadata=True, limit=LOOKUP_LIMIT
                )
        except SlackApiError as exc:
            raise map_slack_error(exc) from exc
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        for found in resp.get("messages") or []:
            metadata = as_mapping(as_mapping(found).get("metadata"))
            payload = as_mapping(metadata.get("event_payload"))
            if (
                metadata.get("event_type") == METADATA_EVENT
                and payload.get("outbox_id") == message.outbox_id
            ):
                return Delivery(platform_message_id=as_str(found.get("ts")) or None)
        return None

    async def _send(self, message: Outbound) -> Delivery:
        blocks: Sequence[dict[str, Any]] | None = list(message.blocks) or None
        match message.kind:
            case "slack_card" | "slack_post" | "slack_thread":
                # slack_sdk leaves out the arguments that are None (blocks, metadata, thread_ts).
                thread_ts = _need_reply_to(message) if message.kind == "slack_thread" else None
                resp = await self.client.chat_postMessage(
                    channel=message.destination,
                    text=message.text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    metadata=outbox_metadata(message),
                )
                return Delivery(platform_message_id=as_str(resp.get("ts")) or None)
            case "slack_card_update":
                ts = _need_reply_to(message)
                resp = await self.client.chat_update(
                    channel=message.destination, ts=ts, text=message.text, blocks=blocks
                )
                return Delivery(platform_message_id=as_str(resp.get("ts")) or ts)
            case "slack_reaction":
                ts = _need_reply_to(message)
                if not message.emoji:
                    raise BadRequest("slack_reaction needs an emoji")
                await self.client.reactions_add(
                    channel=message.destination, name=message.emoji.strip(":"), timestamp=ts
                )
                return Delivery(platform_message_id=ts)
            case "slack_response":
                return await self._respond(message, blocks)
            case "slack_ephemeral":
                if not message.user:
                    raise BadRequest("slack_ephemeral needs a user")
                resp = await self.client.chat_postEphemeral(
                    channel=message.destination,
                    user=message.user,
                    text=message.text,
                    thread_ts=message.reply_to,
                )
                return Delivery(platform_message_id=as_str(resp.get("message_ts")) or None)
            case "slack_charts":
                return await self._upload_charts(message)
            case "slack_file":
                return await self._upload_file(message)
            case "slack_thread_file":
                return await self._upload_to_thread(message)
            case "slack_file_delete":
                return await self._delete_file(message)
            case "slack_home":
                return await self._publish_home(message)
            case "slack_view_update":
                if not message.view:
                    raise BadRequest("slack_view_update needs the view")
                await self.client.views_update(view_id=message.destination, view=dict(message.view))
                return Delivery(platform_message_id=message.destination)
            case _:
                raise BadRequest(f"slack cannot send {message.kind}")

    async def _respond(
        self, message: Outbound, blocks: Sequence[dict[str, Any]] | None
    ) -> Delivery:
        webhook = AsyncWebhookClient(
            url=message.destination, timeout=self._timeout, retry_handlers=[]
        )
        # Ephemeral: only the person who typed the command or used the control sees it; from a
        # message's button, replace_original=False keeps the card itself as it is.
        resp = await webhook.send(
            text=message.text, blocks=blocks, response_type="ephemeral", replace_original=False
        )
        if resp.status_code == 200:
            return Delivery()
        if resp.status_code == 429:
            raise RetryAfter(_retry_after(resp.headers), resp.body or "ratelimited")
        if resp.status_code >= 500:
            raise Unavailable(f"response_url http {resp.status_code}")
        # 404 expired_url / used_url and the like: the 30-minute, 5-use window is gone.
        raise BadRequest(f"response_url http {resp.status_code}: {resp.body[:200]}")

    async def _upload_charts(self, message: Outbound) -> Delivery:
        """Draw the charts (a worker thread: the loop keeps serving) and share them in one
        message with files_upload_v2 (files.getUploadURLExternal, the bytes,
        files.completeUploadExternal)."""
        if not message.chart:
            raise BadRequest("slack_charts needs the chart data")
        try:
            charts = await draw_async(message.chart)
        except (KeyError, TypeError, ValueError) as exc:  # a row no chart can be drawn from
            raise BadRequest(f"chart data: {type(exc).__name__}: {exc}") from exc
        resp = await self.client.files_upload_v2(
            channel=message.destination,
            initial_comment=message.text or None,
            file_uploads=[{"content": c.png, "filename": c.name, "title": c.title} for c in charts],
        )
        return Delivery(platform_message_id=_first_file_id(resp))

    async def _upload_file(self, message: Outbound) -> Delivery:
        """A file for one person: into the app's DM with them, which conversations.open gives
        (files.completeUploadExternal wants a conversation id, not a user id)."""
        if not message.file_name:
            raise BadRequest("slack_file needs a file_name")
        opened = await self.client.conversations_open(users=message.destination)
        dm = as_str(as_mapping(opened.get("channel")).get("id"))
        if not dm:
            raise BadRequest("conversations.open gave no channel")
        resp = await self.client.files_upload_v2(
            channel=dm,
            content=message.text.encode("utf-8"),
            filename=message.file_name,
            title=message.file_title or message.file_name,
        )
        return Delivery(platform_message_id=_first_file_id(resp))

    # -- files both ways (customer files into threads, agent files out) ------------------------

    async def fetch_file(self, ref: FileRef) -> FileContent:
        """An agent's file: ``url_private`` with the bot token in the Authorization header
        (scope files:read). Without a token that works Slack answers 200 with its HTML sign-in
        page rather than an error, so an HTML answer for a file that is not HTML is refused."""
        if not ref.url or not self._slack_file_url(ref.url):
            # The bot token goes with the request: only ever to Slack's own file host.
            raise BadRequest("the file's url_private is not on Slack's file host")
        self._ensure_session()
        session = self.client.session
        assert session is not None
        try:
            async with session.get(
                ref.url, headers={"Authorization": f"Bearer {self._settings.bot_token}"}
            ) as resp:
                if resp.status == 429:
                    raise RetryAfter(_retry_after(resp.headers), "ratelimited")
                if resp.status >= 500:
                    raise Unavailable(f"file download http {resp.status}")
                if resp.status >= 400:
                    raise BadRequest(f"file download http {resp.status}")
                html = resp.content_type == "text/html"
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if html and not (ref.mime_type or "").startswith("text/html"):
            raise BadRequest("Slack answered with its sign-in page: is files:read granted?")
        name = ref.name or ref.file_id
        return FileContent(
            data=data, name=name, mime_type=ref.mime_type or "application/octet-stream"
        )

    def _slack_file_url(self, url: str) -> bool:
        """Is ``url`` on Slack's file host (``files.`` + the Web API's domain: files.slack.com,
        files.slack-gov.com), or on the Web API's own host and port (a stand-in)?"""
        try:
            target, api = urlsplit(url), urlsplit(self._settings.api_base)
            same = (target.scheme, target.hostname, target.port) == (
                api.scheme,
                api.hostname,
                api.port,
            )
        except ValueError:  # a port that is not a number
            return False
        domain = ".".join((api.hostname or "").split(".")[-2:])
        return same or (target.scheme == "https" and target.hostname == f"files.{domain}")

    async def _upload_to_thread(self, message: Outbound) -> Delivery:
        """A customer's file into the card's thread with ``text`` as its message:
        files_upload_v2 = files.getUploadURLExternal, the bytes to the upload URL,
        files.completeUploadExternal with channel_id and thread_ts (scope files:write)."""
        if message.content is None:
            raise BadRequest("slack_thread_file needs the file's content")
        content = message.content
        resp = await self.client.files_upload_v2(
            channel=message.destination,
            thread_ts=_need_reply_to(message),
            initial_comment=message.text or None,
            content=content.data,
            filename=content.name,
            title=content.name,
        )
        return Delivery(platform_message_id=_first_file_id(resp))

    async def _delete_file(self, message: Outbound) -> Delivery:
        """A forgotten customer's file the desk uploaded: the messages that shared it (their
        text is the customer's caption) are overwritten with ``text`` first, found with
        files.info, then the file is deleted (files.delete; deleting a file leaves the text of
        the message that carried it)."""
        file_id = _need_reply_to(message)
        try:
            info = await self.client.files_info(file=file_id)
        except SlackApiError as exc:
            if exc.response.get("error") in ("file_deleted", "file_not_found"):
                return Delivery(platform_message_id=file_id)
            raise
        shares = as_mapping(as_mapping(info.get("file")).get("shares"))
        for scope in ("public", "private"):
            for channel, posts in as_mapping(shares.get(scope)).items():
                for post in posts if isinstance(posts, list) else []:
                    ts = as_str(as_mapping(post).get("ts"))
                    if ts:
                        await self.client.chat_update(
                            channel=channel, ts=ts, text=message.text or "erased"
                        )
        try:
            await self.client.files_delete(file=file_id)
        except SlackApiError as exc:
            if exc.response.get("error") not in ("file_deleted", "file_not_found"):
                raise
        return Delivery(platform_message_id=file_id)

    async def _publish_home(self, message: Outbound) -> Delivery:
        """views.publish of one person's Home tab (scope: none beyond the bot token; the app
        needs the Home tab enabled and the ``app_home_opened`` event)."""
        resp = await self.client.views_publish(
            user_id=message.destination, view={"type": "home", "blocks": list(message.blocks)}
        )
        return Delivery(platform_message_id=as_str(as_mapping(resp.get("view")).get("id")) or None)


def _first_file_id(resp: AsyncSlackResponse) -> str | None:
    files = resp.get("files")
    if isinstance(files, list) and files and isinstance(files[0], dict):
        return as_str(files[0].get("id")) or None
    return None


def _need_reply_to(message: Outbound) -> str:
    if not message.reply_to:
        raise BadRequest(f"{message.kind} needs reply_to (the card's ts)")
    return message.reply_to
