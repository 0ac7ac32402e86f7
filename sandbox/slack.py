"""A loopback Slack: the Web API the desk calls, and the signed requests Slack sends the desk.

Web API like Slack's: HTTP 200 with ``{"ok": false, "error": ...}`` for logical errors
(``invalid_auth``, ``channel_not_found``, ``message_not_found``, ``already_reacted``,
``no_text``, ``invalid_blocks``; ``is_archived`` from chat.postMessage and ``is_inactive`` from
chat.update in an archived channel; ``thread_not_found`` for a reply under a deleted message),
429 with ``Retry-After`` past about one message a second per channel. Towards the desk: events,
block actions and slash commands signed with the v0 scheme; an event the desk does not
acknowledge with 2xx is delivered again with ``X-Slack-Retry-Num``; slash commands and actions
carry a ``response_url`` the stand-in hosts (5 uses, 30 minutes).

Message ``metadata`` as Slack keeps it: chat.postMessage takes ``{"event_type",
"event_payload"}`` (``invalid_metadata_format`` otherwise), and conversations.history and
conversations.replies return it only when asked with ``include_all_metadata``.
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
from urllib.parse import urlencode

from aiohttp import web

from ._common import Buckets, Deliverer, Failures, Ids, Waiter, json_field, request_params

TEAM = "T0SANDBOX"
BOT_USER = "U0DESKBOT"
BOT_ID = "B0DESKBOT"
APP_ID = "A0DESKBOT"
MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_UPLOAD_BYTES = 1024**3  # files.getUploadURLExternal refuses more than 1 GB
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
    ) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.events_url = desk_url.rstrip("/") + "/slack/events"
        self.base_url = base_url  # where the stand-in is served, for response_url
        self.failures = Failures()
        self.channels: dict[str, list[dict[str, Any]]] = {c: [] for c in CHANNELS}
        self.responses: dict[str, list[dict[str, Any]]] = {}  # response_url id → posts
        self.response_users: dict[str, str] = {}  # response_url id → who clicked
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
        self._changed = Waiter()
        self._retry_base = retry_base_delay
        self._deliverer = Deliverer(timeout=3)  # Slack gives an app 3 s to acknowledge
        self._holds: dict[str, int] = {}  # method → how many answers to hold back
        self._release = asyncio.Event()
        self._release.set()
        # trigger_id → when it was given out; Slack lets an app open one view with it, within
        # 3 seconds (then expired_trigger_id; used twice: exchanged_trigger_id).
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()
        self.views: dict[str, dict[str, Any]] = {}  # view id → the open modal, and who sees it

    def install(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + "/api/{method}", self.handle)
        app.router.add_get(prefix + "/api/{method}", self.handle)
        app.router.add_post(prefix + "/response/{rid}", self.respond)
        app.router.add_post(prefix + "/upload/{file_id}", self.receive_upload)

    async def close(self) -> None:
        await self._deliverer.close()

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

    def _trigger(self) -> str:
        trigger = f"{next(self._ids)}.{secrets.token_hex(6)}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    async def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id") or "")
        view = json_field(params.get("view"))
        if trigger not in self._triggers:
            raise SlackError("invalid_trigger_id")
        if trigger in self._used_triggers:
            raise SlackError("exchanged_trigger_id")
        if time.monotonic() - self._triggers[trigger] > 3.0:
            raise SlackError("expired_trigger_id")
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise SlackError("invalid_arguments")
        _check_view(view)
        self._used_triggers.add(trigger)
        view_id = f"V{next(self._ids):09d}"
        opened = {**view, "id": view_id, "hash": secrets.token_hex(6), "state": {"values": {}}}
        self.views[view_id] = opened
        await self._changed.notify()
        return {"view": opened}

    async def agent_submits(
        self, view_id: str, user: str, values: Mapping[str, Mapping[str, str]] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """An agent presses a modal's submit button, having typed ``values`` (block_id →
        action_id → text in its plain_text_input elements). Returns the desk's status and its
        answer (``response_action``); an ``update`` replaces the view, as Slack does."""
        view = self.views.get(view_id)
        if view is None:
            raise ValueError(f"no open view {view_id}")
        state = {
            block: {a: {"type": "plain_text_input", "value": text} for a, text in acts.items()}
            for block, acts in (values or {}).items()
        }
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM},
            "user": {"id": user, "username": AGENTS.get(user, user), "team_id": TEAM},
            "api_app_id": APP_ID,
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger(),
            "view": {**view, "state": {"values": state}},
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        status, text = await self._deliverer.attempt(
            self.events_url, body, self._signed(body, "application/x-www-form-urlencoded")
        )
        answer: dict[str, Any] = json.loads(text) if text.strip() else {}
        if status == 200 and answer.get("response_action") == "update":
            new = answer.get("view") or {}
            _check_view(new)
            self.views[view_id] = {**new, "id": view_id, "hash": secrets.token_hex(6)}
        elif status == 200 and answer.get("response_action") != "errors":
            self.views.pop(view_id, None)  # submitted: Slack closes the modal
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
        nothing: tuple[dict[str, Any], dict[str, Any] | None] = ({}, None)
        block, button = next(
            (
                (b, e)
                for b in message.get("blocks") or []
                for e in b.get("elements") or []
                if e.get("action_id") == action_id
            ),
            nothing,
        )
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
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": AGENTS.get(user, user), "team_id": TEAM},
            "api_app_id": APP_ID,
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger(),
            "team": {"id": TEAM},
            "channel": {"id": channel, "name": CHANNELS.get(channel, channel)},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "message": {k: v for k, v in message.items() if k != "reactions"},
            "state": {"values": {action["block_id"]: {action_id: state}}}
            if kind != "button"
            else {"values": {}},
            "response_url": response_url,
            "actions": [action],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        status, _ = await self._deliverer.attempt(
            self.events_url, body, self._signed(body, "application/x-www-form-urlencoded")
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
        nothing: tuple[dict[str, Any], dict[str, Any] | None] = ({}, None)
        block, button = next(
            (
                (b, e)
                for b in answer.get("blocks") or []
                for e in b.get("elements") or []
                if e.get("action_id") == action_id
            ),
            nothing,
        )
        if button is None:
            raise ValueError(f"the answer has no button {action_id!r}")
        if button.get("confirm") and not confirm:
            return []  # "Keep" in Slack's dialog: the app hears nothing
        url = self._response_url()
        rid = url.rsplit("/", 1)[1]
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": AGENTS.get(user, user), "team_id": TEAM},
            "api_app_id": APP_ID,
            "token": "sandbox-verification-token",
            "trigger_id": self._trigger(),
            "team": {"id": TEAM, "domain": "sandbox"},
            "channel": {"id": channel, "name": CHANNELS.get(channel, channel)},
            # Ephemeral messages are not stored by Slack: the payload has no "message".
            "container": {
                "type": "message",
                "message_ts": f"{time.time():.6f}",
                "channel_id": channel,
                "is_ephemeral": True,
            },
            "response_url": url,
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block.get("block_id", "b"),
                    "value": button.get("value", ""),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)}).encode()
        status, _ = await self._deliverer.attempt(
            self.events_url, body, self._signed(body, "application/x-www-form-urlencoded")
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
            "trigger_id": self._trigger(),
        }
        body = urlencode(form).encode()
        status, ack = await self._deliverer.attempt(
            self.events_url, body, self._signed(body, "application/x-www-form-urlencoded")
        )
        if status != 200:
            raise AssertionError(f"the desk answered {command} with HTTP {status}")
        if ack.strip():
            self.responses[rid].append({"ack": ack})
        await self._changed.wait_for(lambda: bool(self.responses[rid]), timeout)
        return self.responses[rid]

    def ephemerals(self, user: str) -> list[str]:
        """What the desk told ``user`` alone (ephemeral answers to their clicks), oldest first."""
        return [
            str(post.get("text", ""))
            for rid, posts in self.responses.items()
            if self.response_users.get(rid) == user
            for post in posts
            if post.get("response_type") == "ephemeral"
        ]

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
        if not hmac.compare_digest(token.encode(), self.bot_token.encode()):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "views.open": self._views_open,
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
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        failure = self.failures.take(method)
        if failure is not None:
            if failure.status == 429:
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(max(1, round(failure.retry_after or 1)))},
                )
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
    def _blocks(params: dict[str, Any]) -> list[dict[str, Any]] | None:
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
        if len(blocks) > MAX_BLOCKS:
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
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                )
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

    async def _update(self, params: dict[str, Any]) -> dict[str, Any]:
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
        await self._changed.notify()
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shared]}

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
