"""Slack's Socket Mode: the desk dials out (an app-level ``xapp-`` token, a WebSocket), so
nothing needs a public URL.

slack_sdk's aiohttp ``SocketModeClient`` does the protocol (``apps.connections.open``, the
envelopes, ``disconnect`` messages, pings); slack-bolt's socket-mode internals turn an envelope
into the same Bolt request the Events API gives, so events, interactivity, slash commands,
shortcuts and Home go through the same listeners into the inbox. The envelope is acknowledged
only when Bolt answered 200, that is after the inbox committed (``process_before_response``):
an event the desk failed to store is not acknowledged, and Slack delivers it again.

Dedupe: Slack redelivers an unacknowledged event in a *new* envelope (new ``envelope_id``,
``retry_attempt`` ≥ 1), possibly to another connection or another desk process. The inbox
drops it on the event's own id (``event_id``, ``action_ts``, ``trigger_id``, the view's
hash), which every process shares; the envelope ids this process already acknowledged are
acknowledged again without a second pass through the listeners (no second ``views.open``).

The watchdog: handlers have been seen to stall silently after reconnects (bolt-python #1529,
#417; python-slack-sdk #1110, #1446). Every ``watchdog_seconds / 3`` it pings; a connection
that brought no message and no pong for ``watchdog_seconds`` is dropped (not closed politely:
a dead peer would hold the close for seconds) and a new one opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMessage
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("deskbot.adapters.slack")

# What the desk does with one envelope's payload: Bolt's answer (200 → acknowledged).
Dispatch = Callable[[dict[str, Any], dict[str, Any] | None], Awaitable[BoltResponse]]
ACKED_KEPT = 2048  # envelope ids remembered (a redelivery comes within minutes)


class SocketStartError(RuntimeError):
    """Slack refused the app-level token: a configuration error, said at start-up."""


class _Client(SocketModeClient):
    """slack_sdk's client, telling the link when a new connection is up."""

    link: SlackSocket

    async def connect(self) -> None:
        before = self.current_session
        # The library's connect() retries until it succeeds: while it does, the watchdog
        # must not start a second one (two sessions, one of them orphaned but open).
        self.link.connecting += 1
        try:
            await super().connect()  # type: ignore[no-untyped-call]
        finally:
            self.link.connecting -= 1
        if self.current_session is not None and self.current_session is not before:
            self.link.connected()


class SlackSocket:
    """One Socket Mode connection of this process, kept alive by a watchdog."""

    def __init__(
        self,
        app_token: str,
        web_client: AsyncWebClient,
        dispatch: Dispatch,
        *,
        watchdog_seconds: float,
    ) -> None:
        self._app_token = app_token
        self._web = web_client
        self._dispatch = dispatch
        self.watchdog_seconds = watchdog_seconds
        self.client: _Client | None = None
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._reason = "closed"  # why the next connection replaces the current one
        self._opened = 0
        self.reconnects: dict[str, int] = {}  # reason → count
        self.on_reconnect: Callable[[str], None] | None = None  # the desk's metrics
        self.last_alive = 0.0  # time.time() of the last message or pong
        self.down_since: float | None = time.time()
        self.redelivered = 0  # envelopes that came with retry_attempt ≥ 1
        self.connecting = 0  # connect() calls under way

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Ask Slack for a URL (a refused token stops the start, a Slack outage does not) and
        connect in the background; the watchdog starts with it."""
        client = _Client(
            app_token=self._app_token,
            logger=log,
            web_client=self._web,
            # The library's own ping and stale check run far behind the watchdog: it decides.
            ping_interval=self.watchdog_seconds,
        )
        client.link = self
        client.socket_mode_request_listeners.append(self._on_request)
        client.on_message_listeners.append(self._on_frame)
        self.client = client
        try:
            client.wss_uri = await client.issue_new_wss_url()
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if error in ("invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked"):
                await client.close()  # type: ignore[no-untyped-call]
                raise SocketStartError(
                    f"Slack refused SLACK_APP_TOKEN at apps.connections.open: {error}"
                ) from None
            log.warning("slack.socket_deferred error=%s", error)
        except (SlackClientError, OSError, TimeoutError) as exc:
            log.warning("slack.socket_deferred error=%s", type(exc).__name__)
        self._spawn(self._connect_first(client))
        self._spawn(self._watch(client))

    async def _connect_first(self, client: _Client) -> None:
        if client.wss_uri is None:
            await client.connect_to_new_endpoint(force=True)
        else:
            await client.connect()

    async def stop(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            session = self.client.current_session
            self.client.current_session = None  # close() would wait on a dead peer's close
            try:
                await self.client.close()  # type: ignore[no-untyped-call]
            except Exception as exc:  # a connection being replaced at that moment
                log.warning("slack.socket_close_error error=%s", type(exc).__name__)
            if session is not None:
                await _drop(session)
        log.info("slack.socket_stopped")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("slack.socket_task_failed", exc_info=t.exception())

        task.add_done_callback(done)

    # -- state ----------------------------------------------------------------------------

    def connected(self) -> None:
        """A new WebSocket is up (the first, or one that replaced another)."""
        self.last_alive = time.time()
        self.down_since = None
        self._opened += 1
        if self._opened > 1:
            reason, self._reason = self._reason, "closed"
            self.reconnects[reason] = self.reconnects.get(reason, 0) + 1
            if self.on_reconnect is not None:
                self.on_reconnect(reason)
            log.info("slack.socket_reconnected reason=%s", reason)
        else:
            log.info("slack.socket_connected")

    @property
    def is_connected(self) -> bool:
        session = self.client.current_session if self.client is not None else None
        return session is not None and not session.closed

    @property
    def state(self) -> str:
        if self._closing:
            return "stopped"
        return "connected" if self.is_connected else "connecting"

    def describe(self) -> dict[str, Any]:
        """For /healthz: the state, since when it is down, the reconnects by reason."""
        now = time.time()
        info: dict[str, Any] = {
            "state": self.state,
            "reconnects": dict(self.reconnects),
            "redelivered": self.redelivered,
        }
        if self.last_alive:
            info["last_heard_seconds_ago"] = round(now - self.last_alive, 1)
        if self.down_since is not None and not self.is_connected:
            info["down_seconds"] = round(now - self.down_since, 1)
        return info

    @property
    def healthy(self) -> bool:
        """Connected, or down for less than the watchdog's bound (a reconnect takes a moment)."""
        if self.is_connected:
            return True
        return self.down_since is not None and time.time() - self.down_since < max(
            self.watchdog_seconds, 5.0
        )

    def _heard(self) -> None:
        self.last_alive = time.time()

    # -- what arrives -----------------------------------------------------------------------

    async def _on_frame(self, message: WSMessage) -> None:
        """Every text frame, as it arrives (before the library acts on it)."""
        self._heard()
        data = message.data
        if isinstance(data, str) and '"disconnect"' in data:
            try:
                parsed = json.loads(data)
            except ValueError:
                return
            if isinstance(parsed, dict) and parsed.get("type") == "disconnect":
                # The library reconnects (apps.connections.open again); we say why.
                self._reason = str(parsed.get("reason") or "disconnect")
                log.info("slack.socket_disconnect reason=%s", self._reason)

    async def _on_request(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        started = time.time()
        if req.retry_attempt:
            self.redelivered += 1
        if req.envelope_id in self._acked:  # delivered twice on this process: answered before
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        response = await self._dispatch(req.payload, build_headers(req))
        if response.status != 200:
            # Not stored (or not processable): no ack, so Slack delivers it again.
            log.warning("slack.socket_not_acked type=%s status=%d", req.type, response.status)
            return
        await send_async_response(client, req, response, started)
        self._acked[req.envelope_id] = None
        while len(self._acked) > ACKED_KEPT:
            self._acked.popitem(last=False)

    # -- the watchdog -----------------------------------------------------------------------

    async def _watch(self, client: _Client) -> None:
        bound = self.watchdog_seconds
        step = max(bound / 6, 0.1)
        last_ping = 0.0
        while not self._closing:
            await asyncio.sleep(step)
            session = client.current_session
            now = time.time()
            if client.last_ping_pong_time is not None:
                self.last_alive = max(self.last_alive, client.last_ping_pong_time)
            if self.connecting:
                continue  # the library is (re)connecting: its loop retries until it is up
            if session is None or session.closed:
                if self.down_since is None:
                    self.down_since = now
                if now - self.down_since > bound:
                    # The library did not bring it back within the bound: do it.
                    await self._replace(client, "watchdog")
                continue
            if now - last_ping >= bound / 3:
                last_ping = now
                try:
                    # The library's own format, so its receiver records the pong.
                    await session.ping(f"sdk-ping-pong:{now}".encode())
                except Exception as exc:
                    log.info("slack.socket_ping_failed error=%s", type(exc).__name__)
            if now - self.last_alive > bound:
                log.warning(
                    "slack.socket_silent seconds=%.1f (no message, no pong): replacing it",
                    now - self.last_alive,
                )
                await self._replace(client, "watchdog")
                last_ping = 0.0

    async def _replace(self, client: _Client, reason: str) -> None:
        old = client.current_session
        self._reason = reason
        self.down_since = self.down_since or time.time()
        # The library closes the old session before it opens a new one, and a silent peer
        # never answers the close: drop it ourselves, in the background.
        client.current_session = None
        if old is not None:
            self._spawn(_drop(old))
        try:
            await client.connect_to_new_endpoint(force=True)
        except Exception as exc:  # Slack down: the next round of the watchdog tries again
            log.warning("slack.socket_reconnect_failed error=%s", type(exc).__name__)


async def _drop(session: ClientWebSocketResponse) -> None:
    try:
        await asyncio.wait_for(session.close(), 2.0)
    except (TimeoutError, Exception):
        log.info("slack.socket_dropped (the old connection did not close cleanly)")
