"""Slack: the agents' console. slack-bolt AsyncApp in HTTP mode, slack_sdk for Web API calls.

Inbound, one URL (``POST /slack/events``) takes the Events API, interactivity (block actions)
and slash commands. Bolt runs with ``process_before_response=True``, so its HTTP answer is only
sent after our listener returned, and our listener only returns after the inbox committed: an
event Slack saw acknowledged is an event the desk stored. Anything we fail to store gets a 5xx
and Slack delivers it again (deduped on ``event_id``).

Signatures are checked here before Bolt sees the request (Bolt checks again): a bad or stale
signature gets 401 and nothing is parsed or written. Bolt needs ``auth.test`` to recognise the
bot's own messages; we call it ourselves (cached) through a custom ``authorize`` so that a Slack
outage at that moment becomes a 503 (retried) instead of Bolt's 200-with-an-apology (lost).

Outbound, :meth:`SlackAdapter.send` maps each :class:`~bot.outbound.Outbound` kind to one Web
API call and maps ``SlackApiError`` and transport errors to the desk's typed errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
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
from bot.events import AgentAction, AgentMessage, Channel, Event, Ignored, SlashCommand
from bot.inbox import Inbox, storable
from bot.incident_cards import (
    CLOSE,
    CONFIRM_VIEW,
    REPLY_ALL,
    REPLY_VIEW,
    RESOLVE,
    preview_modal,
    reply_modal,
    submitted_texts,
)
from bot.outbound import (
    BadRequest,
    Delivery,
    DeliveryError,
    Outbound,
    RetryAfter,
    Unavailable,
)
from bot.reports.charts import draw_async
from bot.roles import GroupLookupError
from bot.settings import SlackSettings
from bot.supervisor import FORGET_ACTION

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
ACTIONS = {"ticket_claim": "claim", "ticket_resolve": "resolve", "ticket_transfer": "transfer"}
# The card's controls (bot/controls.py): static selects carry "<ticket>:<choice>" in each option;
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
    )


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
    if action_id in (RESOLVE, CLOSE, REPLY_ALL):
        number = as_str(action.get("value"))
        if not number.isdigit() or not user_id or not channel:
            return _ignored(external_id, conversation, f"action {action_id} with bad value")
        if action_id == REPLY_ALL:  # the adapter opens the modal; its submission is the event
            return _ignored(external_id, conversation, f"action {action_id}: modal opened")
        return AgentAction(
            external_id=external_id,
            conversation=f"slack:incident:{number}",
            action="incident_resolve" if action_id == RESOLVE else "incident_close",
            ticket_id=0,
            incident_id=int(number),
            user_id=user_id,
            user_name=as_str(user.get("name")) or as_str(user.get("username")),
            slack_channel=channel,
            message_ts=message_ts,
            response_url=as_str(body.get("response_url")) or None,
        )
    kind = ACTIONS.get(action_id)
    if kind is None:
        return _ignored(external_id, conversation, f"action {action_id or 'unknown'}")
    # A button carries the ticket number; the transfer menu's option carries "<ticket>:<team>".
    value = as_str(action.get("value")) or as_str(
        as_mapping(action.get("selected_option")).get("value")
    )
    number, _, team = value.partition(":")
    if not number.isdigit() or (kind == "transfer") != bool(team):
        return _ignored(external_id, conversation, f"action {action_id} with bad value")
    if not channel or not message_ts or not user_id:
        return _ignored(external_id, conversation, f"action {action_id} outside a message")
    return AgentAction(
        external_id=external_id,
        conversation=conversation,
        action="claim" if kind == "claim" else "resolve" if kind == "resolve" else "transfer",
        team=team or None,
        ticket_id=int(number),
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
        self._verifier = SignatureVerifier(settings.signing_secret)
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
            signing_secret=settings.signing_secret,
            process_before_response=True,
            authorize=authorize,
        )
        # Set by the app: how many of an incident's customers speak each language (the
        # Reply to all affected modal asks for a text per language), and the default one.
        self.incident_languages: Callable[[int], Awaitable[dict[str, int] | None]] | None = None
        self.default_language = "en"
        self._register(self.app)

    # -- lifecycle ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
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
        self._started = True
        log.info("slack.started api_base=%s", self._settings.api_base)

    async def stop(self) -> None:
        self._started = False
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
            # the database refuses, and refused when nested too deeply (see bot.inbox.storable).
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

    def _signature_ok(self, body: bytes, timestamp: str | None, signature: str | None) -> bool:
        if not timestamp or not signature:
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
        log.warning(
            "slack.rejected reason=unprocessable error=%s at=%s",
            type(error).__name__,
            _where(error),
        )
        no_retry: dict[str, str | Sequence[str]] = {**NO_RETRY}
        return BoltResponse(status=400, body={"error": "unprocessable payload"}, headers=no_retry)

    def _register(self, app: AsyncApp) -> None:
        app.error(self._on_error)
        anything = re.compile(r".*")
        app.event(anything)(self._on_event)
        app.block_action(anything)(self._on_block_action)
        app.command(anything)(self._on_command)
        app.shortcut(anything)(self._on_other)
        app.view(anything)(self._on_view)

    async def _named(self, event: Event) -> Event:
        """An agent's event with their display name (users.info, cached): the desk shows
        people names, not Slack ids."""
        if isinstance(event, AgentMessage | AgentAction):
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
        await self._accept(parse_event_callback(body), body)
        await ack()

    async def _on_block_action(self, body: dict[str, Any], ack: AsyncAck) -> None:
        await self._accept(parse_block_actions(body), body)
        actions = body.get("actions")
        first = as_mapping(actions[0]) if isinstance(actions, list) and actions else {}
        if as_str(first.get("action_id")) == REPLY_ALL:
            # views.open must come within 3 s of the click (the trigger_id expires): here, in
            # the request, not through the outbox.
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

    async def _on_view(self, body: dict[str, Any], ack: AsyncAck) -> None:
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
            case "slack_card":
                resp = await self.client.chat_postMessage(
                    channel=message.destination,
                    text=message.text,
                    blocks=blocks,
                    metadata=outbox_metadata(message),
                )
                return Delivery(platform_message_id=as_str(resp.get("ts")) or None)
            case "slack_post":
                resp = await self.client.chat_postMessage(
                    channel=message.destination,
                    text=message.text,
                    blocks=blocks,
                    metadata=outbox_metadata(message),
                )
                return Delivery(platform_message_id=as_str(resp.get("ts")) or None)
            case "slack_thread":
                thread_ts = _need_reply_to(message)
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
            case "slack_charts":
                return await self._upload_charts(message)
            case "slack_file":
                return await self._upload_file(message)
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


def _first_file_id(resp: AsyncSlackResponse) -> str | None:
    files = resp.get("files")
    if isinstance(files, list) and files and isinstance(files[0], dict):
        return as_str(files[0].get("id")) or None
    return None


def _need_reply_to(message: Outbound) -> str:
    if not message.reply_to:
        raise BadRequest(f"{message.kind} needs reply_to (the card's ts)")
    return message.reply_to
