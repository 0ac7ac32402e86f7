"""A loopback Slack: the Web API the desk calls, and the signed requests Slack sends the desk.

Web API like Slack's: HTTP 200 with ``{"ok": false, "error": ...}`` for logical errors
(``invalid_auth``, ``channel_not_found``, ``message_not_found``, ``already_reacted``,
``no_text``, ``invalid_blocks``; ``is_archived`` from chat.postMessage and ``is_inactive`` from
chat.update in an archived channel; ``thread_not_found`` for a reply under a deleted message),
429 with ``Retry-After`` past about one message a second per channel. Towards the desk: events,
block actions and slash commands signed with the v0 scheme; an event the desk does not
acknowledge with 2xx is delivered again with ``X-Slack-Retry-Num``; slash commands and actions
carry a ``response_url`` the stand-in hosts (5 uses, 30 minutes). With an ``app_token`` the
same deliveries go over Socket Mode instead (sandbox/slack_socket.py): envelopes on the
WebSocket the desk opened with ``apps.connections.open``, acknowledged by ``envelope_id``.

Message ``metadata`` as Slack keeps it: chat.postMessage takes ``{"event_type",
"event_payload"}`` (``invalid_metadata_format`` otherwise), and conversations.history and
conversations.replies return it only when asked with ``include_all_metadata``.

Files: uploads (files.getUploadURLExternal, the upload URL, files.completeUploadExternal with
``thread_ts``), files.info with where a file was shared, files.delete (only the bot's own), and
agents' ``file_share`` messages whose ``url_private`` serves the bytes only to the bot token
(anyone else gets Slack's sign-in page, HTTP 200).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from ._common import Buckets, Deliverer, Failures, Ids, Waiter, json_field, request_params
from .slack_socket import SocketMode

TEAM = "T0SANDBOX"
BOT_USER = "U0DESKBOT"
BOT_ID = "B0DESKBOT"
APP_ID = "A0DESKBOT"
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100  # a Home tab or a modal
MAX_TEXT = 40_000
MAX_UPLOAD_BYTES = 1024**3  # files.getUploadURLExternal refuses more than 1 GB
SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
CHANNELS = {"C0SUPPORT": "support", "C0VIP": "vip", "C0BILLING": "billing", "C0ZH": "support-zh"}
EVENT_ID = re.compile(r"^Ev(\d+)$")
MESSAGE_TS = re.compile(r"^\d{9,}\.(\d{6,})$")  # "<unix seconds>.<counter>"
TRIGGER_ID = re.compile(r"^(?:command:)?(\d+)\.[0-9a-f]{12}$")
AGENTS = {
    "U0ALICE": "alice",
    "U0BOB": "bob",
    "U0CAROL": "carol",
    "U0DAN": "dan",
}


MAX_OPTIONS = 100  # options in one menu


def _check_menu(element: Mapping[str, Any]) -> None:
    """Slack refuses a menu with more than 100 options, or whose initial choice is not one."""
    kind = element.get("type")
    if kind not in ("static_select", "multi_static_select"):
        return
    options = element.get("options") or []
    if not options or len(options) > MAX_OPTIONS:
        raise SlackError("invalid_blocks")
    values = [o.get("value") for o in options]
    initial = [element["initial_option"]] if element.get("initial_option") else []
    initial += element.get("initial_options") or []
    if any(o.get("value") not in values for o in initial):
        raise SlackError("invalid_blocks")


def _user_obj(user: str) -> dict[str, str]:
    return {"id": user, "username": AGENTS.get(user, user), "team_id": TEAM}


def _element(
    message: Mapping[str, Any], action_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The first element of a message's blocks with ``action_id`` and its block, or ({}, None)."""
    nothing: tuple[dict[str, Any], dict[str, Any] | None] = ({}, None)
    return next(
        (
            (b, e)
            for b in message.get("blocks") or []
            for e in b.get("elements") or []
            if e.get("action_id") == action_id
        ),
        nothing,
    )


def _ratelimited(retry_after: int) -> web.Response:
    """Slack's 429: ``ratelimited``, with how many seconds to wait."""
    return web.json_response(
        {"ok": False, "error": "ratelimited"},
        status=429,
        headers={"Retry-After": str(retry_after)},
    )


def _button_action(block: Mapping[str, Any], button: Mapping[str, Any]) -> dict[str, Any]:
    """The ``actions`` entry of a click on ``button`` in ``block``."""
    return {
        "type": "button",
        "action_id": button["action_id"],
        "block_id": block.get("block_id", "b"),
        "value": button.get("value", ""),
        "action_ts": f"{time.time():.6f}",
    }


class SlackError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _check_view(view: Mapping[str, Any]) -> None:
    """Slack's limits on a modal: a title of at most 24 characters, at most 100 blocks,
    private_metadata of at most 3000 characters."""
    title = (view.get("title") or {}).get("text", "")
    if not title or len(title) > 24:
        raise SlackError("invalid_arguments")
    if len(view.get("blocks") or []) > 100:
        raise SlackError("invalid_arguments")
    if len(view.get("private_metadata") or "") > 3000:
        raise SlackError("invalid_arguments")
    for key in ("submit", "close"):
        if len((view.get(key) or {}).get("text", "")) > 24:
            raise SlackError("invalid_arguments")


class _SocketDeliverer(Deliverer):
    """Deliveries over Socket Mode when the app uses it, else the Events API's HTTP POST."""

    def __init__(self, socket: SocketMode, timeout: float) -> None:
        super().__init__(timeout)
        self.socket = socket

    async def attempt(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        if not self.socket.enabled:
            return await super().attempt(url, body, headers)
        status, text = await self.socket.deliver(body, headers)
        self.attempts.append(("socket", status))
        return status, text


class SlackStandIn:
    def __init__(
        self,
        *,
        bot_token: str,
        signing_secret: str,
        desk_url: str,
        base_url: str = "",
        rate_limits: bool = True,
        retry_base_delay: float = 1.0,
        app_token: str | None = None,
    ) -> None:
        # Set → Socket Mode: apps.connections.open takes it, and deliveries go as envelopes.
        self.socket = SocketMode(app_token)
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.events_url = desk_url.rstrip("/") + "/slack/events"
        self.base_url = base_url  # where the stand-in is served, for response_url
        self.failures = Failures()
        self.channels: dict[str, list[dict[str, Any]]] = {c: [] for c in CHANNELS}
        self.responses: dict[str, list[dict[str, Any]]] = {}  # response_url id → posts
        self.response_users: dict[str, str] = {}  # response_url id → who clicked
        # chat.postEphemeral: what one person was shown in a channel or thread, oldest first
        self.ephemeral_posts: list[dict[str, Any]] = []
        # response_url id → who typed the slash command (its answer's buttons are theirs)
        self.command_users: dict[str, str] = {}
        self.calls: list[str] = []
        self.presences: dict[str, str] = {}  # user → "away"; everyone else is "active"
        # User groups (S…) and their members, for usergroups.users.list; None plays a free
        # workspace, which has no user groups at all.
        self.usergroups: dict[str, list[str]] | None = {}
        self._response_urls: dict[str, tuple[float, int]] = {}  # id → (created, uses)
        self.archived: set[str] = set()
        self.files: dict[str, dict[str, Any]] = {}  # file id → its metadata and "content" bytes
        self._clock = Ids(1)  # the counter part of every ts
        self._ids = Ids(1)  # event ids and trigger ids
        self._bucket = Buckets(1.0, 10) if rate_limits else None
        # chat.update is Tier 3: 50+ a minute per workspace, with bursts.
        self._update_bucket = Buckets(50 / 60, 50) if rate_limits else None
        # Posts refused with 429 because the caller went faster than the channel's limit (not
        # the failures a test asks for): a desk that keeps its own pace causes none.
        self.paced_refusals: dict[str, int] = {}
        self._changed = Waiter()
        self._retry_base = retry_base_delay
        # Slack gives an app 3 s to acknowledge, over HTTP or over the socket.
        self._deliverer = _SocketDeliverer(self.socket, timeout=3)
        self._holds: dict[str, int] = {}  # method → how many answers to hold back
        self._release = asyncio.Event()
        self._release.set()
        # App Home: each person's published view, and how many publishes each got.
        self.homes: dict[str, dict[str, Any]] = {}
        # Modals: the open ones by view id (with "user" and "state"), and every trigger_id
        # handed out (created, who, used): Slack's live 3 seconds and work once.
        self.modals: dict[str, dict[str, Any]] = {}
        self._triggers: dict[str, tuple[float, str, bool]] = {}
        self.trigger_seconds = 3.0
        self.home_publishes: dict[str, int] = {}
        # views.publish is Tier 4 (100+ a minute): about 2 a second with a burst of 20.
        self._views_bucket = Buckets(2.0, 20) if rate_limits else None

    def paced_refusals_total(self) -> int:
        """Calls refused with 429 because the caller outpaced the platform's limit."""
        updates = self._update_bucket.refused if self._update_bucket is not None else 0
        return sum(self.paced_refusals.values()) + updates

    def install(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + "/api/{method}", self.handle)
        app.router.add_get(prefix + "/api/{method}", self.handle)
        app.router.add_post(prefix + "/response/{rid}", self.respond)
        app.router.add_post(prefix + "/upload/{file_id}", self.receive_upload)
        self._install_files(app, prefix)
        self.socket.install(app, prefix)

    async def close(self) -> None:
        await self._deliverer.close()
        await self.socket.close()

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._clock):06d}"

    # -- what survives a restart (see sandbox.StandIns) -----------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "archived": sorted(self.archived),
            # Uploaded files, so the restarted page still shows the charts in their messages.
            "files": {
                fid: {**meta, "content": base64.b64encode(meta["content"]).decode("ascii")}
                for fid, meta in self.files.items()
                if meta["content"] is not None
            },
            "next_ts": self._clock.next_value,
            "next_id": self._ids.next_value,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        for channel, messages in state.get("channels", {}).items():
            self.channels[channel] = list(messages)
        self.archived = set(state.get("archived", []))
        for fid, meta in state.get("files", {}).items():
            self.files[fid] = {**meta, "content": base64.b64decode(meta["content"])}
        self._clock.past(int(state.get("next_ts", 1)) - 1)
        self._ids.past(int(state.get("next_id", 1)) - 1)

    def continue_after(self, ids: Iterable[str]) -> None:
        """Carry on after the event ids, trigger ids and message ts the desk already holds.

        Slack never reuses an ``event_id`` (the desk drops a repeated one as a retry) nor a
        message ``ts``; a restarted stand-in must not start again from its first ones.
        """
        for value in ids:
            if m := EVENT_ID.match(value):
                self._ids.past(int(m[1]))
            elif m := MESSAGE_TS.match(value):
                self._clock.past(int(m[1]))
            elif m := TRIGGER_ID.match(value):
                self._ids.past(int(m[1]))

    # -- what is in Slack ------------------------------------------------------------------------

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages of a channel, oldest first, as they look now."""
        return [m for m in self.channels.get(channel, []) if m.get("thread_ts") in (None, m["ts"])]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Replies in the thread under ``ts``, oldest first."""
        return [
            m for m in self.channels.get(channel, []) if m.get("thread_ts") == ts and m["ts"] != ts
        ]

    def reactions(self, channel: str, ts: str) -> list[str]:
        message = self._find(channel, ts)
        return list(message.get("reactions", [])) if message else []

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate`` holds, checked whenever something changes in Slack."""
        return await self._changed.wait_for(predicate, timeout)

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.channels.get(channel, []) if m["ts"] == ts), None)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        retry_after: float | None = None,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail: an HTTP status, or 200 with ``error``."""
        self.failures.add(method, status=status, retry_after=retry_after, error=error, times=times)

    def hold_after_accept(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are carried out (a message is posted) but
        their HTTP answers are held back until :meth:`release_held`: the moment in which a
        client that dies cannot know that Slack accepted its message."""
        self._holds[method] = times
        self._release.clear()

    def release_held(self) -> None:
        self._release.set()

    async def delete_message(self, channel: str, ts: str) -> None:
        """Someone deletes a message, as with chat.delete; a card goes with its whole thread.

        Afterwards chat.update of it is ``message_not_found`` and a reply under it is
        ``thread_not_found``, as the desk sees in Slack. The desk gets the ``message_deleted``
        event Slack sends to subscribed apps.
        """
        message = self._find(channel, ts)
        if message is None:
            raise ValueError(f"no message {ts} in {channel}")
        self.channels[channel] = [
            m for m in self.channels[channel] if m["ts"] != ts and m.get("thread_ts") != ts
        ]
        await self._changed.notify()
        now = self._ts()
        await self._event(
            {
                "type": "message",
                "subtype": "message_deleted",
                "hidden": True,
                "channel": channel,
                "ts": now,
                "event_ts": now,
                "deleted_ts": ts,
                "previous_message": {k: v for k, v in message.items() if k != "reactions"},
                "channel_type": "channel",
            }
        )

    async def archive_channel(self, channel: str, user: str = "U0ALICE") -> None:
        """Someone archives the channel: posting there is ``is_archived`` from now on."""
        if channel not in self.channels:
            raise ValueError(f"no channel {channel}")
        self.archived.add(channel)
        await self._changed.notify()
        await self._event({"type": "channel_archive", "channel": channel, "user": user})

    # -- the agents' side: signed requests to the desk -------------------------------------------

    def sign(self, body: bytes, timestamp: str, secret: str | None = None) -> str:
        key = (secret if secret is not None else self.signing_secret).encode()
        base = f"v0:{timestamp}:".encode() + body
        return "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()

    def _signed(self, body: bytes, content_type: str) -> dict[str, str]:
        ts = str(int(time.time()))
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": self.sign(body, ts),
        }

    async def deliver_raw(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        return await self._deliverer.attempt(self.events_url, body, headers)

    async def _post_form(self, form: Mapping[str, str]) -> tuple[int, str]:
        """A signed form-encoded POST to the desk, as Slack sends commands and interactions."""
        body = urlencode(form).encode()
        return await self.deliver_raw(body, self._signed(body, "application/x-www-form-urlencoded"))

    async def _interaction(self, user: str, kind: str, **fields: Any) -> tuple[int, str]:
        """``user`` does something interactive (``kind``: block_actions, view_submission,
        message_action): the payload Slack builds, with a fresh trigger_id, delivered once as
        ``payload=`` and signed. Returns the desk's status and body."""
        payload: dict[str, Any] = {
            "type": kind,
            "user": _user_obj(user),
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger(user),
            "team": {"id": TEAM, "domain": "sandbox"},
        }
        if kind != "message_action":  # Slack's message shortcut payload has no api_app_id
            payload["api_app_id"] = APP_ID
        payload.update(fields)
        return await self._post_form({"payload": json.dumps(payload)})

    async def _event(self, event: dict[str, Any], *, duplicate: bool = False) -> int:
        envelope = {
            "token": "sandbox-verification-token",
            "team_id": TEAM,
            "api_app_id": APP_ID,
            "type": "event_callback",
            "event_id": f"Ev{next(self._ids):010d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            "event": event,
        }
        body = json.dumps(envelope).encode()

        def attempt(n: int) -> tuple[bytes, dict[str, str]]:
            headers = self._signed(body, "application/json")
            if n:
                headers["X-Slack-Retry-Num"] = str(n)
                headers["X-Slack-Retry-Reason"] = "http_error"
            return body, headers

        # Slack retries three times: at once, after about a minute, after about five.
        delays = [0.0, 60 * self._retry_base, 300 * self._retry_base]
        status = await self._deliverer.deliver(self.events_url, attempt, delays)
        if duplicate:  # as when the desk's first ack took longer than 3 s
            body2, headers2 = attempt(1)
            headers2["X-Slack-Retry-Reason"] = "http_timeout"
            await self._deliverer.attempt(self.events_url, body2, headers2)
        return status

    async def agent_replies(
        self,
        channel: str,
        thread_ts: str,
        user: str,
        text: str,
        *,
        duplicate_delivery: bool = False,
    ) -> str:
        """An agent writes in a thread; returns the reply's ts once the desk got the event."""
        ts = self._ts()
        message = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": thread_ts}
        self.channels.setdefault(channel, []).append(message)
        await self._changed.notify()
        await self._event(
            {**message, "channel": channel, "event_ts": ts, "channel_type": "channel"},
            duplicate=duplicate_delivery,
        )
        return ts

    async def agent_posts(self, channel: str, user: str, text: str) -> str:
        """An agent writes at the top level of a channel (not in a ticket's thread)."""
        ts = self._ts()
        message = {"type": "message", "user": user, "text": text, "ts": ts}
        self.channels.setdefault(channel, []).append(message)
        await self._changed.notify()
        await self._event(
            {**message, "channel": channel, "event_ts": ts, "channel_type": "channel"}
        )
        return ts

    async def agent_submits(
        self, view_id: str, user: str, values: Mapping[str, Mapping[str, str]] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """An agent presses a modal's submit button, having typed ``values`` (block_id →
        action_id → text in its plain_text_input elements). Returns the desk's status and its
        answer (``response_action``); an ``update`` replaces the view, as Slack does."""
        view = self.modals.get(view_id)
        if view is None or view.get("closed"):
            raise ValueError(f"no open view {view_id}")
        state = {
            block: {a: {"type": "plain_text_input", "value": text} for a, text in acts.items()}
            for block, acts in (values or {}).items()
        }
        status, text = await self._interaction(
            user, "view_submission", view=self._public(view_id) | {"state": {"values": state}}
        )
        answer: dict[str, Any] = json.loads(text) if text.strip() else {}
        if status == 200 and answer.get("response_action") == "update":
            new = answer.get("view") or {}
            _check_view(new)
            self._keep_modal(view_id, new, view["user"])
        elif status == 200 and answer.get("response_action") != "errors":
            view["closed"] = True  # submitted: Slack closes the modal
        await self._changed.notify()
        return status, answer

    def _response_url(self) -> str:
        rid = secrets.token_hex(8)
        self._response_urls[rid] = (time.monotonic(), 0)
        self.responses[rid] = []
        return f"{self.base_url}/slack/response/{rid}"

    async def agent_clicks(
        self,
        channel: str,
        message_ts: str,
        action_id: str,
        user: str,
        value: str | None = None,
        values: list[str] | None = None,
    ) -> int:
        """An agent clicks a button on a message, or picks in one of its menus: ``value`` is
        the option of a static_select or the user of a users_select, ``values`` the options
        of a multi_static_select (empty clears it). Returns the desk's HTTP status."""
        message = self._find(channel, message_ts)
        if message is None:
            raise ValueError(f"no message {message_ts} in {channel}")
        block, button = _element(message, action_id)
        if button is None:
            raise ValueError(f"message {message_ts} has no button {action_id!r}")
        kind = button.get("type", "button")
        action: dict[str, Any] = {
            "type": kind,
            "action_id": action_id,
            "block_id": block.get("block_id", "b"),
            "action_ts": f"{time.time():.6f}",
        }
        options = button.get("options") or []
        state: dict[str, Any] = {"type": kind}
        if kind == "static_select":
            chosen = next((o for o in options if o.get("value") == value), None)
            if chosen is None:
                listed = ", ".join(str(o.get("value")) for o in options)
                raise ValueError(f"menu {action_id!r} has no option {value!r}; it has {listed}")
            action["selected_option"] = state["selected_option"] = chosen
        elif kind == "users_select":
            if value not in AGENTS:  # Slack's menu only lists the workspace's people
                raise ValueError(
                    f"menu {action_id!r} lists people ({', '.join(AGENTS)}), not {value!r}"
                )
            action["selected_user"] = state["selected_user"] = value
            if button.get("initial_user"):
                action["initial_user"] = button["initial_user"]
        elif kind == "multi_static_select":
            picked = []
            for v in values or []:
                found = next((o for o in options if o.get("value") == v), None)
                if found is None:
                    listed = ", ".join(str(o.get("value")) for o in options)
                    raise ValueError(f"menu {action_id!r} has no option {v!r}; it has {listed}")
                picked.append(found)
            action["selected_options"] = state["selected_options"] = picked
        else:
            action["value"] = button.get("value", "")
        response_url = self._response_url()
        self.response_users[response_url.rsplit("/", 1)[1]] = user
        status, _ = await self._interaction(
            user,
            "block_actions",
            channel={"id": channel, "name": CHANNELS.get(channel, channel)},
            container={"type": "message", "message_ts": message_ts, "channel_id": channel},
            message={k: v for k, v in message.items() if k != "reactions"},
            state={"values": {action["block_id"]: {action_id: state}}}
            if kind != "button"
            else {"values": {}},
            response_url=response_url,
            actions=[action],
        )
        return status

    async def clicks_in_answer(
        self,
        channel: str,
        answer: dict[str, Any],
        action_id: str,
        user: str,
        *,
        confirm: bool = True,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """An agent clicks a button in an ephemeral answer (what the desk posted to a
        response_url). A button with a ``confirm`` dialog sends nothing unless the agent presses
        its confirm button, as in Slack. Returns what the desk posted to the new response_url."""
        block, button = _element(answer, action_id)
        if button is None:
            raise ValueError(f"the answer has no button {action_id!r}")
        if button.get("confirm") and not confirm:
            return []  # "Keep" in Slack's dialog: the app hears nothing
        url = self._response_url()
        rid = url.rsplit("/", 1)[1]
        status, _ = await self._interaction(
            user,
            "block_actions",
            channel={"id": channel, "name": CHANNELS.get(channel, channel)},
            # Ephemeral messages are not stored by Slack: the payload has no "message".
            container={
                "type": "message",
                "message_ts": f"{time.time():.6f}",
                "channel_id": channel,
                "is_ephemeral": True,
            },
            response_url=url,
            actions=[_button_action(block, button)],
        )
        if status != 200:
            raise AssertionError(f"the desk answered the click with HTTP {status}")
        await self._changed.wait_for(lambda: bool(self.responses[rid]), timeout)
        return self.responses[rid]

    async def slash_command(
        self, command: str, text: str, user: str, channel: str, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """An agent types a slash command; returns what the desk posted to its response_url."""
        url = self._response_url()
        rid = url.rsplit("/", 1)[1]
        self.command_users[rid] = user
        form = {
            "token": "sandbox-verification-token",
            "team_id": TEAM,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": CHANNELS.get(channel, channel),
            "user_id": user,
            "user_name": AGENTS.get(user, user),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": url,
            "trigger_id": self._trigger(user),
        }
        status, ack = await self._post_form(form)
        if status != 200:
            raise AssertionError(f"the desk answered {command} with HTTP {status}")
        if ack.strip():
            self.responses[rid].append({"ack": ack})
        await self._changed.wait_for(lambda: bool(self.responses[rid]), timeout)
        return self.responses[rid]

    def ephemerals(self, user: str) -> list[str]:
        """What the desk told ``user`` alone (ephemeral answers to their clicks), oldest first."""
        answers = [
            str(post.get("text", ""))
            for rid, posts in self.responses.items()
            if self.response_users.get(rid) == user
            for post in posts
            if post.get("response_type") == "ephemeral"
        ]
        return answers + [str(p["text"]) for p in self.ephemeral_posts if p["user"] == user]

    async def respond(self, request: web.Request) -> web.StreamResponse:
        """A response_url: at most five posts within thirty minutes, as Slack allows."""
        rid = request.match_info["rid"]
        known = self._response_urls.get(rid)
        if known is None:
            return web.Response(status=404, text="no_active_hooks")
        created, uses = known
        if uses >= RESPONSE_URL_USES or time.monotonic() - created > RESPONSE_URL_SECONDS:
            return web.Response(status=404, text="used_url")
        try:
            data = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(data, dict) or not (data.get("text") or data.get("blocks")):
            return web.Response(status=400, text="no_text")
        self._response_urls[rid] = (created, uses + 1)
        self.responses[rid].append(data)
        await self._changed.notify()
        return web.Response(text="ok")

    # -- the Web API ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        self.calls.append(method)
        auth = request.headers.get("Authorization", "")
        try:
            params = await request_params(request)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"ok": False, "error": "invalid_json"})
        token = auth.removeprefix("Bearer ").strip() if auth else str(params.get("token", ""))
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if method == "apps.connections.open":  # the one method that takes the xapp- token
            return self._connections_open(token)
        if not hmac.compare_digest(token.encode(), self.bot_token.encode()):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "reactions.add": self._react,
            "users.info": self._user_info,
            "users.getPresence": self._get_presence,
            "usergroups.users.list": self._usergroup_members,
            "conversations.info": self._conversation_info,
            "conversations.open": self._conversation_open,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.delete": self._delete_file,
            "files.info": self._file_info,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "views.update": self._views_update,
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        failure = self.failures.take(method)
        if failure is not None:
            if failure.status == 429:
                return _ratelimited(max(1, round(failure.retry_after or 1)))
            if failure.status != 200:
                return web.Response(status=failure.status, text="upstream failure")
            return web.json_response({"ok": False, "error": failure.error or "fatal_error"})
        try:
            result = await handler(params)
        except SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error})
        if isinstance(result, web.Response):
            return result
        if self._holds.get(method, 0) > 0:
            self._holds[method] -= 1
            await self._release.wait()
        return web.json_response({"ok": True, **result})

    def _connections_open(self, token: str) -> web.Response:
        app_token = self.socket.app_token
        if app_token is None or not token.startswith("xapp-"):
            # A bot token here, or an app that has Socket Mode off.
            error = "not_allowed_token_type" if token.startswith("xoxb-") else "invalid_auth"
            return web.json_response({"ok": False, "error": error})
        if not hmac.compare_digest(token.encode(), app_token.encode()):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, **self.socket.open_url(self.base_url)})

    async def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.com/",
            "team": "Sandbox",
            "user": "deskbot",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }

    def _channel(self, params: dict[str, Any]) -> str:
        channel = str(params.get("channel", ""))
        if channel not in self.channels:
            raise SlackError("channel_not_found")
        return channel

    @staticmethod
    def _blocks(params: dict[str, Any], limit: int = MAX_BLOCKS) -> list[dict[str, Any]] | None:
        raw = params.get("blocks")
        if raw in (None, "", "null"):
            return None
        try:
            blocks = json_field(raw)
        except ValueError:
            raise SlackError("invalid_blocks") from None
        if not isinstance(blocks, list) or not all(
            isinstance(b, dict) and b.get("type") for b in blocks
        ):
            raise SlackError("invalid_blocks")
        if len(blocks) > limit:
            raise SlackError("invalid_blocks")
        ids = [b["block_id"] for b in blocks if b.get("block_id")]
        if len(ids) != len(set(ids)) or any(len(str(i)) > 255 for i in ids):
            raise SlackError("invalid_blocks")
        for b in blocks:
            if b["type"] == "actions":
                elements = b.get("elements") or []
                if not elements or len(elements) > 25:
                    raise SlackError("invalid_blocks")
                for e in elements:
                    _check_menu(e)
        return blocks

    def dm_channel(self, user: str) -> str:
        """The app's direct-message channel with ``user`` (Slack ids these D…)."""
        return "D" + user[1:]

    async def _post_message(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        # A user id as the channel posts in the app's DM with that user, as Slack does.
        user = str(params.get("channel", ""))
        if user in AGENTS:
            dm = self.dm_channel(user)
            self.channels.setdefault(dm, [])
            params = {**params, "channel": dm}
        channel = self._channel(params)
        if channel in self.archived:
            raise SlackError("is_archived")
        text = str(params.get("text") or "")
        blocks = self._blocks(params)
        if not text and not blocks:
            raise SlackError("no_text")
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and self._find(channel, str(thread_ts)) is None:
            raise SlackError("thread_not_found")
        metadata = self._metadata(params)
        if self._bucket is not None:
            wait = self._bucket.take(channel)
            if wait > 0:
                self.paced_refusals[channel] = self.paced_refusals.get(channel, 0) + 1
                return _ratelimited(max(1, round(wait + 0.5)))
        ts = self._ts()
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": BOT_ID,
            "user": BOT_USER,
            "text": text,
            "ts": ts,
        }
        if blocks:
            message["blocks"] = blocks
        if thread_ts is not None:
            message["thread_ts"] = str(thread_ts)
        shown = dict(message)
        if metadata is not None:
            message["metadata"] = metadata
        self.channels[channel].append(message)
        await self._changed.notify()
        return {"channel": channel, "ts": ts, "message": shown}

    @staticmethod
    def _metadata(params: dict[str, Any]) -> dict[str, Any] | None:
        raw = params.get("metadata")
        if raw in (None, ""):
            return None
        try:
            metadata = json_field(raw)
        except ValueError:
            raise SlackError("invalid_metadata_format") from None
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not metadata["event_type"]
            or not isinstance(metadata.get("event_payload", {}), dict)
        ):
            raise SlackError("invalid_metadata_format")
        return {
            "event_type": metadata["event_type"],
            "event_payload": metadata.get("event_payload", {}),
        }

    @staticmethod
    def _listed(messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        """A page of messages as the history methods return them (metadata only when asked)."""
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        try:
            limit = min(max(int(params.get("limit") or 100), 1), 999)
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or 0) or float("inf")
        except ValueError:
            raise SlackError("invalid_arguments") from None
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
        picked = [
            m
            for m in messages
            if (
                oldest <= float(m["ts"]) <= latest
                if inclusive
                else oldest < float(m["ts"]) < latest
            )
        ]
        page = picked[:limit]
        shown = [
            m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in page
        ]
        return {"messages": shown, "has_more": len(picked) > limit}

    async def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        """Shown to ``user`` alone, not kept in the channel's history (as Slack does)."""
        channel = self._channel(params)
        user = str(params.get("user", ""))
        if user not in AGENTS:
            raise SlackError("user_not_in_channel")
        if not params.get("text") and not params.get("blocks"):
            raise SlackError("no_text")
        ts = self._ts()
        self.ephemeral_posts.append(
            {
                "channel": channel,
                "user": user,
                "text": str(params.get("text", "")),
                "thread_ts": params.get("thread_ts"),
                "ts": ts,
            }
        )
        await self._changed.notify()
        return {"message_ts": ts}

    async def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.history: a channel's top-level messages, newest first."""
        channel = self._channel(params)
        return self._listed(list(reversed(self.messages(channel))), params)

    async def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.replies: the parent, then its replies oldest first."""
        channel = self._channel(params)
        ts = str(params.get("ts") or "")
        parent = self._find(channel, ts)
        if parent is None:
            raise SlackError("thread_not_found")
        return self._listed([parent, *self.thread(channel, ts)], params)

    async def _update(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        channel = self._channel(params)
        if channel in self.archived:
            raise SlackError("is_inactive")  # chat.update's word for an archived channel
        message = self._find(channel, str(params.get("ts", "")))
        if message is None:
            raise SlackError("message_not_found")
        if message.get("bot_id") != BOT_ID:
            raise SlackError("cant_update_message")
        text = str(params.get("text") or "")
        blocks = self._blocks(params)
        if not text and not blocks:
            raise SlackError("no_text")
        if self._update_bucket is not None:
            wait = self._update_bucket.take("chat.update")
            if wait > 0:
                return _ratelimited(max(1, round(wait + 0.5)))
        message["text"] = text
        if blocks is not None:
            message["blocks"] = blocks
        message["edited"] = {"user": BOT_USER, "ts": self._ts()}
        await self._changed.notify()
        return {"channel": channel, "ts": message["ts"], "text": text, "message": message}

    async def _react(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        message = self._find(channel, str(params.get("timestamp", "")))
        if message is None:
            raise SlackError("message_not_found")
        name = str(params.get("name", "")).strip(":")
        if not name:
            raise SlackError("invalid_name")
        reactions: list[str] = message.setdefault("reactions", [])
        if name in reactions:
            raise SlackError("already_reacted")
        reactions.append(name)
        await self._changed.notify()
        return {}

    # -- file uploads: files.getUploadURLExternal, a POST of the bytes, completeUploadExternal ---

    async def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = str(params.get("filename") or "")
        try:
            length = int(str(params.get("length", "")))
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not filename or length < 1:
            raise SlackError("invalid_arguments")
        if length > MAX_UPLOAD_BYTES:
            raise SlackError("file_upload_size_restricted")
        file_id = f"F0{next(self._ids):08d}"
        self.files[file_id] = {
            "id": file_id,
            "name": filename,
            "title": filename,
            "length": length,
            "content": None,  # set by the upload; completeUploadExternal needs it
            "channels": [],
        }
        return {"upload_url": f"{self.base_url}/slack/upload/{file_id}", "file_id": file_id}

    async def receive_upload(self, request: web.Request) -> web.StreamResponse:
        """The upload URL: raw bytes or one multipart part, no token (Slack sends none)."""
        meta = self.files.get(request.match_info["file_id"])
        if meta is None or meta["content"] is not None:
            return web.Response(status=404, text="file not found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            body = part.file.read() if part is not None else b""
        else:
            body = await request.read()
        meta["content"] = bytes(body)
        meta["size"] = len(body)
        await self._changed.notify()
        return web.Response(text=f"OK - {len(body)}")

    async def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            listed = json_field(params.get("files") or "[]")
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not isinstance(listed, list) or not listed:
            raise SlackError("invalid_arguments")
        metas = []
        for item in listed:
            meta = self.files.get(str(item.get("id", ""))) if isinstance(item, dict) else None
            if meta is None or meta["content"] is None:
                raise SlackError("file_not_found")
            metas.append((meta, item))
        channel = str(params.get("channel_id") or "")
        if channel and (channel not in self.channels or channel in self.archived):
            raise SlackError("invalid_channel")
        thread_ts = params.get("thread_ts") or None
        if channel and thread_ts is not None and self._find(channel, str(thread_ts)) is None:
            raise SlackError("invalid_thread_ts")
        shared = []
        for meta, item in metas:
            if item.get("title"):
                meta["title"] = str(item["title"])
            shared.append({"id": meta["id"], "title": meta["title"], "name": meta["name"]})
        if channel:
            ts = self._ts()
            message: dict[str, Any] = {
                "type": "message",
                "user": BOT_USER,
                "bot_id": BOT_ID,
                "text": str(params.get("initial_comment") or ""),
                "ts": ts,
                "files": shared,
            }
            if thread_ts is not None:
                message["thread_ts"] = str(thread_ts)
            self.channels[channel].append(message)
            for meta, _item in metas:
                meta["channels"].append(channel)
                self._record_share(meta, channel, ts, thread_ts)
        await self._changed.notify()
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shared]}

    # -- files agents share: file_share events, url_private (bot token), files.delete ----------

    # An app installed without files:read: its token gets the sign-in page for url_private.
    files_read_granted = True

    def _install_files(self, app: web.Application, prefix: str) -> None:
        app.router.add_get(prefix + "/files-pri/{team_file}/{name}", self.download_private)

    def _private_url(self, file_id: str, name: str) -> str:
        return f"{self.base_url}/slack/files-pri/{TEAM}-{file_id}/{quote(name)}"

    async def agent_shares_file(
        self,
        channel: str,
        thread_ts: str,
        user: str,
        name: str,
        content: bytes,
        *,
        mimetype: str = "application/octet-stream",
        text: str = "",
        size: int | None = None,
    ) -> str:
        """An agent uploads a file into a thread (a ``file_share`` message); returns its ts.
        ``size`` claims a size other than ``content``'s (a file over a limit without making
        one); Slack reports the size in the event, so the desk can check it first."""
        file_id = f"F0{next(self._ids):08d}"
        url = self._private_url(file_id, name)
        shown_size = len(content) if size is None else size
        self.files[file_id] = {
            "id": file_id,
            "name": name,
            "title": name,
            "length": shown_size,
            "size": shown_size,
            "content": content,
            "channels": [channel],
            "user": user,
        }
        file_obj = {
            "id": file_id,
            "created": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "user": user,
            "size": shown_size,
            "mode": "hosted",
            "is_external": False,
            "url_private": url,
            "url_private_download": url + "?download=1",
        }
        ts = self._ts()
        message = {
            "type": "message",
            "subtype": "file_share",
            "user": user,
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
            "files": [file_obj],
            "upload": True,
            "display_as_bot": False,
        }
        self.channels.setdefault(channel, []).append(message)
        await self._changed.notify()
        await self._event(
            {**message, "channel": channel, "event_ts": ts, "channel_type": "channel"}
        )
        return ts

    async def download_private(self, request: web.Request) -> web.StreamResponse:
        """``url_private``: the bytes only with a valid token in the Authorization header;
        otherwise Slack answers 200 with its HTML sign-in page (not an error status)."""
        self.calls.append("url_private")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if (
            not token
            or not hmac.compare_digest(token.encode(), self.bot_token.encode())
            or not self.files_read_granted
        ):
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        team, _, file_id = request.match_info["team_file"].partition("-")
        meta = self.files.get(file_id)
        if team != TEAM or meta is None or meta["content"] is None:
            return web.Response(status=404, text="file not found")
        return web.Response(body=meta["content"], content_type="application/octet-stream")

    @staticmethod
    def _record_share(meta: dict[str, Any], channel: str, ts: str, thread_ts: Any | None) -> None:
        """Where a file was shared, as files.info reports it (``shares.public``)."""
        share: dict[str, Any] = {"ts": ts}
        if thread_ts is not None:
            share["thread_ts"] = str(thread_ts)
        meta.setdefault("shares", {}).setdefault(channel, []).append(share)

    async def _file_info(self, params: dict[str, Any]) -> dict[str, Any]:
        meta = self.files.get(str(params.get("file") or ""))
        if meta is None or meta.get("deleted"):
            raise SlackError("file_not_found" if meta is None else "file_deleted")
        return {
            "file": {
                "id": meta["id"],
                "name": meta["name"],
                "title": meta["title"],
                "size": meta.get("size"),
                "user": meta.get("user", BOT_USER),
                "url_private": self._private_url(meta["id"], meta["name"]),
                "channels": list(meta["channels"]),
                "shares": {"public": meta.get("shares", {})},
            },
            "comments": [],
        }

    async def _delete_file(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params.get("file") or "")
        meta = self.files.get(file_id)
        if meta is None:
            raise SlackError("file_not_found")
        if meta.get("deleted"):
            raise SlackError("file_deleted")
        if meta.get("user", BOT_USER) != BOT_USER:  # a bot token deletes only its own files
            raise SlackError("cant_delete_file")
        meta["deleted"] = True
        meta["content"] = b""
        for messages in self.channels.values():
            for m in messages:
                if any(f.get("id") == file_id for f in m.get("files") or []):
                    m["files"] = [
                        {"id": file_id, "mode": "tombstone"} if f.get("id") == file_id else f
                        for f in m["files"]
                    ]
        await self._changed.notify()
        return {}

    # -- App Home --------------------------------------------------------------------------------

    async def _views_publish(self, params: dict[str, Any]) -> dict[str, Any] | web.Response:
        """views.publish: a user's Home tab; ``invalid_arguments`` for a view that is not a
        Home, ``invalid_blocks`` past 100 blocks, 429 past the Tier 4 pace."""
        user = str(params.get("user_id", ""))
        if user not in AGENTS:
            raise SlackError("user_not_found")
        try:
            view = json_field(params.get("view"))
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments")
        blocks = self._blocks({"blocks": view.get("blocks")}, MAX_VIEW_BLOCKS) or []
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            if block["type"] == "section" and len(str(text)) > 3000:
                raise SlackError("invalid_blocks")
        if self._views_bucket is not None:
            wait = self._views_bucket.take("views.publish")
            if wait > 0:
                return _ratelimited(max(1, round(wait + 0.5)))
        view_id = self.homes.get(user, {}).get("id") or f"V{next(self._ids):010d}"
        published = {
            "id": view_id,
            "team_id": TEAM,
            "type": "home",
            "blocks": blocks,
            "hash": secrets.token_hex(8),
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }
        self.homes[user] = published
        self.home_publishes[user] = self.home_publishes.get(user, 0) + 1
        await self._changed.notify()
        return {"view": published}

    def home_text(self, user: str) -> str:
        """Everything a person's Home tab shows, as text (mrkdwn and button labels)."""
        lines: list[str] = []
        for block in self.homes.get(user, {}).get("blocks", []):
            if block.get("text"):
                lines.append(str(block["text"].get("text", "")))
            for element in block.get("elements") or []:
                lines.append(str(element.get("text", "")))
            accessory = block.get("accessory")
            if accessory and accessory.get("type") == "button":
                lines.append(f"[{accessory['text']['text']}]")
        return "\n".join(lines)

    async def opens_home(self, user: str) -> int:
        """``user`` opens the app's Home tab: the signed ``app_home_opened`` event."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.dm_channel(user),
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        if user in self.homes:  # Slack includes the view last published, if any
            event["view"] = self.homes[user]
        return await self._event(event)

    async def clicks_home(self, user: str, action_id: str, value: str | None = None) -> int:
        """``user`` clicks a button of their Home tab (the one with ``value``, when several
        share ``action_id``): a signed block_actions with a ``view`` container and, as Slack
        sends from a view, no response_url. Returns the desk's HTTP status."""
        view = self.homes.get(user)
        if view is None:
            raise ValueError(f"{user} has no Home published")
        found: tuple[dict[str, Any], dict[str, Any]] | None = None
        for block in view["blocks"]:
            candidates = [block.get("accessory") or {}, *(block.get("elements") or [])]
            for element in candidates:
                if element.get("action_id") == action_id and (
                    value is None or element.get("value") == value
                ):
                    found = (block, element)
                    break
            if found:
                break
        if found is None:
            raise ValueError(f"{user}'s Home has no button {action_id!r} {value or ''}")
        block, button = found
        status, _ = await self._interaction(
            user,
            "block_actions",
            container={"type": "view", "view_id": view["id"]},
            view=view,
            actions=[_button_action(block, button)],
        )
        return status

    # -- Modals and shortcuts ----------------------------------------------------------------------

    def _trigger(self, user: str) -> str:
        trigger = f"{next(self._ids)}.{secrets.token_hex(6)}"
        self._triggers[trigger] = (time.monotonic(), user, False)
        return trigger

    def _modal_view(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            view = json_field(params.get("view"))
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise SlackError("invalid_arguments")
        title = (view.get("title") or {}).get("text", "")
        if not title or len(title) > 24:  # Slack: a modal's title is at most 24 characters
            raise SlackError("invalid_arguments")
        if len(str(view.get("private_metadata") or "")) > 3000:
            raise SlackError("invalid_arguments")
        blocks = self._blocks({"blocks": view.get("blocks")}, MAX_VIEW_BLOCKS) or []
        if any(b["type"] == "input" for b in blocks) and not view.get("submit"):
            raise SlackError("invalid_arguments")  # a modal with inputs needs a submit button
        return {**view, "blocks": blocks}

    async def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id", ""))
        issued = self._triggers.get(trigger)
        if issued is None:
            raise SlackError("invalid_trigger_id")
        created, user, used = issued
        if used:
            raise SlackError("exchanged_trigger_id")  # a trigger_id opens one view only
        if time.monotonic() - created > self.trigger_seconds:
            raise SlackError("expired_trigger_id")
        view = self._modal_view(params)
        self._triggers[trigger] = (created, user, True)
        view_id = f"V{next(self._ids):010d}"
        self._keep_modal(view_id, view, user)
        await self._changed.notify()
        return {"view": self._public(view_id)}

    async def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = str(params.get("view_id", ""))
        if view_id not in self.modals or self.modals[view_id].get("closed"):
            raise SlackError("not_found")  # a closed modal is gone: Slack cannot update it
        old = self.modals[view_id]
        if params.get("hash") and params["hash"] != old["hash"]:
            raise SlackError("hash_conflict")
        view = self._modal_view(params)
        # Slack keeps what a person typed in an input whose block_id stays the same.
        ids = {b.get("block_id") for b in view["blocks"]}
        state = {k: v for k, v in old["state"]["values"].items() if k in ids}
        self._keep_modal(view_id, view, old["user"], state)
        await self._changed.notify()
        return {"view": self._public(view_id)}

    def _keep_modal(
        self,
        view_id: str,
        view: Mapping[str, Any],
        user: str,
        values: dict[str, Any] | None = None,
    ) -> None:
        """The modal ``view_id`` now shows ``view`` (a new hash), with what was typed in it."""
        self.modals[view_id] = {
            **view,
            "id": view_id,
            "hash": secrets.token_hex(8),
            "user": user,
            "state": {"values": values if values is not None else {}},
        }

    def _public(self, view_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.modals[view_id].items() if k not in ("user", "closed")} | {
            "team_id": TEAM,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }

    def modal_of(self, user: str) -> dict[str, Any] | None:
        """The modal ``user`` has open (the latest), or None."""
        mine = [m for m in self.modals.values() if m["user"] == user and not m.get("closed")]
        return mine[-1] if mine else None

    def modal_text(self, view_id: str) -> str:
        """What the modal shows: its texts, the input's value (typed, or its initial value)."""
        modal = self.modals[view_id]
        lines: list[str] = []
        for block in modal["blocks"]:
            if block.get("text"):
                lines.append(str(block["text"].get("text", "")))
            for element in block.get("elements") or []:
                lines.append(str(element.get("text", "")))
            if block["type"] == "input":
                lines.append(str((block.get("label") or {}).get("text", "")))
                lines.append(self.input_value(modal, block))
        return "\n".join(lines)

    @staticmethod
    def input_value(modal: dict[str, Any], block: dict[str, Any]) -> str:
        element = block.get("element") or {}
        typed = (modal["state"]["values"].get(block.get("block_id")) or {}).get(
            element.get("action_id"), {}
        )
        if "value" in typed:
            return str(typed["value"] or "")
        return str(element.get("initial_value") or "")

    async def _view_action(self, view_id: str, action: dict[str, Any]) -> int:
        status, _ = await self._interaction(
            self.modals[view_id]["user"],
            "block_actions",
            container={"type": "view", "view_id": view_id},
            view=self._public(view_id),
            actions=[{**action, "action_ts": f"{time.time():.6f}"}],
        )
        return status

    async def types_in_modal(self, view_id: str, text: str) -> int:
        """The person types ``text`` in the modal's text box (replacing what was there); an
        input with dispatch_action sends a block_actions, as Slack does while one types."""
        modal = self.modals[view_id]
        block = next(b for b in modal["blocks"] if b["type"] == "input")
        element = block["element"]
        modal["state"]["values"][block["block_id"]] = {
            element["action_id"]: {"type": element["type"], "value": text}
        }
        if not block.get("dispatch_action"):
            return 200
        return await self._view_action(
            view_id,
            {
                "type": element["type"],
                "action_id": element["action_id"],
                "block_id": block["block_id"],
                "value": text,
            },
        )

    async def picks_in_modal(self, view_id: str, action_id: str, value: str) -> int:
        modal = self.modals[view_id]
        block, menu = next(
            (b, e)
            for b in modal["blocks"]
            for e in b.get("elements") or []
            if e.get("action_id") == action_id
        )
        chosen = next((o for o in menu.get("options") or [] if o["value"] == value), None)
        if chosen is None:
            raise ValueError(f"menu {action_id!r} has no option {value!r}")
        modal["state"]["values"][block["block_id"]] = {
            action_id: {"type": menu["type"], "selected_option": chosen}
        }
        return await self._view_action(
            view_id,
            {
                "type": menu["type"],
                "action_id": action_id,
                "block_id": block["block_id"],
                "selected_option": chosen,
            },
        )

    async def submits_modal(self, view_id: str) -> tuple[int, str]:
        """The person presses the modal's submit button: a signed ``view_submission`` with the
        state of every input. A 200 with an empty body closes the modal, as in Slack; a
        ``response_action: errors`` keeps it open. Returns (status, body)."""
        modal = self.modals[view_id]
        values = dict(modal["state"]["values"])
        for block in modal["blocks"]:
            if block["type"] == "input" and block["block_id"] not in values:
                element = block["element"]
                values[block["block_id"]] = {
                    element["action_id"]: {
                        "type": element["type"],
                        "value": element.get("initial_value") or None,
                    }
                }
        for block in modal["blocks"]:  # selects keep their initial option as state
            for element in block.get("elements") or []:
                if element.get("initial_option") and block["block_id"] not in values:
                    values[block["block_id"]] = {
                        element["action_id"]: {
                            "type": element["type"],
                            "selected_option": element["initial_option"],
                        }
                    }
        status, text = await self._interaction(
            modal["user"],
            "view_submission",
            view=self._public(view_id) | {"state": {"values": values}},
            response_urls=[],
        )
        # The modal as it is now: a views.update while the desk was answering replaced the
        # dict (the desk may update the view it is being submitted from); closing the old one
        # left the new one open.
        modal = self.modals[view_id]
        if status == 200 and not text.strip():
            modal["closed"] = True
        elif status == 200:
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {"response_action": "errors"}  # not JSON: Slack shows an error
            if answer.get("response_action") == "update":  # the next step of a modal
                new = self._modal_view({"view": answer.get("view")})
                self._keep_modal(view_id, new, modal["user"])
            elif answer.get("response_action") in ("clear", None):
                modal["closed"] = True
        await self._changed.notify()
        return status, text

    async def message_shortcut(
        self, channel: str, ts: str, user: str, callback_id: str = "send_to_customer"
    ) -> int:
        """The person runs a message shortcut on message ``ts``: a signed ``message_action``."""
        message = self._find(channel, ts)
        if message is None:
            raise ValueError(f"no message {ts} in {channel}")
        response_url = self._response_url()
        self.response_users[response_url.rsplit("/", 1)[1]] = user
        status, _ = await self._interaction(
            user,
            "message_action",
            callback_id=callback_id,
            action_ts=f"{time.time():.6f}",
            channel={"id": channel, "name": CHANNELS.get(channel, channel)},
            message={k: v for k, v in message.items() if k != "reactions"},
            message_ts=ts,
            response_url=response_url,
        )
        return status

    async def edits_message(self, channel: str, ts: str, user: str, text: str) -> int:
        """An agent edits their message: Slack sends a ``message_changed`` event."""
        message = self._find(channel, ts)
        if message is None:
            raise ValueError(f"no message {ts} in {channel}")
        previous = dict(message)
        message["text"] = text
        message["edited"] = {"user": user, "ts": self._ts()}
        await self._changed.notify()
        return await self._event(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": channel,
                "hidden": True,
                "ts": self._ts(),
                "message": {k: v for k, v in message.items() if k != "reactions"},
                "previous_message": {k: v for k, v in previous.items() if k != "reactions"},
                "event_ts": self._ts(),
            }
        )

    async def agent_broadcasts(self, channel: str, thread_ts: str, user: str, text: str) -> str:
        """A thread reply with "Also send to #channel" ticked (subtype ``thread_broadcast``)."""
        ts = self._ts()
        message = {
            "type": "message",
            "subtype": "thread_broadcast",
            "user": user,
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
        }
        self.channels.setdefault(channel, []).append(message)
        await self._changed.notify()
        await self._event({**message, "channel": channel, "event_ts": ts})
        return ts

    async def _user_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user", ""))
        if user not in AGENTS:
            raise SlackError("user_not_found")
        name = AGENTS[user]
        return {
            "user": {
                "id": user,
                "team_id": TEAM,
                "name": name,
                "real_name": name.title(),
                "is_bot": False,
                "deleted": False,
                "profile": {"display_name": name.title(), "real_name": name.title()},
            }
        }

    async def _get_presence(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user", ""))
        if user not in AGENTS:
            raise SlackError("user_not_found")
        presence = self.presences.get(user, "active")
        return {"presence": presence, "online": presence == "active"}

    async def _usergroup_members(self, params: dict[str, Any]) -> dict[str, Any]:
        group = str(params.get("usergroup", ""))
        if not group:
            raise SlackError("invalid_arguments")
        if self.usergroups is None:
            raise SlackError("paid_teams_only")
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    async def _conversation_open(self, params: dict[str, Any]) -> dict[str, Any]:
        """The app's DM with one user (``users``), or an existing conversation (``channel``)."""
        if params.get("channel"):
            return {"channel": {"id": self._channel(params)}}
        users = [u.strip() for u in str(params.get("users") or "").split(",") if u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        if any(u not in AGENTS for u in users):
            raise SlackError("user_not_found")
        if len(users) > 1:  # a group DM: the desk never opens one, so the stand-in has none
            raise SlackError("not_implemented")
        dm = self.dm_channel(users[0])
        self.channels.setdefault(dm, [])
        return {"channel": {"id": dm}}

    async def _conversation_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        return {
            "channel": {
                "id": channel,
                "name": CHANNELS.get(channel, channel),
                "is_archived": channel in self.archived,
            }
        }
