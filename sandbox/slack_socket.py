"""Slack's Socket Mode, on the stand-in: what Slack does when the app dials out.

``apps.connections.open`` (with the app-level ``xapp-`` token) hands out a one-time WebSocket
URL on the stand-in. A connection gets ``hello``; every delivery is an envelope
``{"envelope_id", "type": "events_api" | "interactive" | "slash_commands", "payload",
"accepts_response_payload", "retry_attempt", "retry_reason"}`` with the same payload the Events
API would POST. The app acknowledges with ``{"envelope_id", "payload"?}`` within 3 s; an
event not acknowledged is delivered again in a *new* envelope with ``retry_attempt`` 1, 2, 3
(the caller's retry schedule), maybe to another connection. Deliveries are spread over the
open connections in turn, as Slack spreads them over an app's connections.

For tests: :meth:`SocketMode.refresh` sends ``{"type": "disconnect", "reason":
"refresh_requested"}`` and closes the connection a moment later, as Slack rotates them;
:meth:`SocketMode.silence` makes a connection a dead one that stays open (no pongs, nothing
read, nothing sent); :attr:`SocketMode.drop_acks` loses the next acknowledgements.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

log = logging.getLogger("sandbox.slack")


@dataclass
class Connection:
    id: str
    ws: web.WebSocketResponse
    opened: float = field(default_factory=time.time)
    refreshing: bool = False
    silent: bool = False
    envelopes: int = 0  # envelopes sent on it


@dataclass
class Envelope:
    envelope_id: str
    type: str
    connection: str
    retry_attempt: int
    payload: dict[str, Any]
    acked: bool = False


class SocketMode:
    def __init__(self, app_token: str | None, *, ack_timeout: float = 3.0) -> None:
        self.app_token = app_token
        self.ack_timeout = ack_timeout
        self.prefix = "/slack"
        self.connections: list[Connection] = []
        self.closed: list[Connection] = []
        self.envelopes: list[Envelope] = []
        self.drop_acks = 0  # the next N acknowledgements are lost on the way
        self.refresh_grace = 0.5  # seconds between disconnect and closing the connection
        self._tickets: set[str] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._turn = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.app_token is not None

    def install(self, app: web.Application, prefix: str) -> None:
        self.prefix = prefix
        app.router.add_get(prefix + "/socket/{ticket}", self.serve)

    # -- apps.connections.open ------------------------------------------------------------

    def open_url(self, base_url: str) -> dict[str, Any]:
        """A one-time ws:// URL on the stand-in at ``base_url`` (http://host:port)."""
        ticket = secrets.token_hex(12)
        self._tickets.add(ticket)
        ws_base = base_url.replace("http://", "ws://", 1)
        return {"url": f"{ws_base}{self.prefix}/socket/{ticket}"}

    # -- the WebSocket ----------------------------------------------------------------------

    def open_connections(self) -> list[Connection]:
        return [c for c in self.connections if not c.ws.closed]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)  # a URL from apps.connections.open is good once
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = Connection(id=ticket[:8], ws=ws)
        self.connections.append(conn)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.open_connections()),
                "debug_info": {"host": "sandbox", "build_number": 1},
                "connection_info": {"app_id": "A0DESKBOT"},
            }
        )
        await self._notify()
        try:
            async for msg in ws:
                if conn.silent:
                    continue  # a dead connection that never says so
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._ack(msg.data)
        finally:
            if conn in self.connections:
                self.connections.remove(conn)
                self.closed.append(conn)
            await self._notify()
        return ws

    def _ack(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        future = self._acks.get(str(message.get("envelope_id")))
        if future is None or future.done():
            return
        if self.drop_acks > 0:
            self.drop_acks -= 1
            log.info("sandbox.slack_ack_lost envelope=%s", message.get("envelope_id"))
            return
        future.set_result(message)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_connections(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` connections are open and not being refreshed."""

        def ready() -> bool:
            return len([c for c in self.open_connections() if not c.refreshing]) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except TimeoutError:
                return False
        return True

    async def wait_for_new_connection(self, after: int, timeout: float = 10.0) -> bool:
        """Wait until more than ``after`` connections were ever opened and one is usable."""

        def ready() -> bool:
            total = len(self.connections) + len(self.closed)
            usable = [c for c in self.open_connections() if not c.refreshing and not c.silent]
            return total > after and bool(usable)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except TimeoutError:
                return False
        return True

    @property
    def opened_total(self) -> int:
        return len(self.connections) + len(self.closed)

    # -- what Slack does to connections -----------------------------------------------------

    async def refresh(self, connection: Connection | None = None) -> None:
        """Slack rotates a connection: ``disconnect`` (refresh_requested), then closes it."""
        targets = [connection] if connection else self.open_connections()
        for conn in targets:
            conn.refreshing = True
            try:
                await conn.ws.send_json(
                    {
                        "type": "disconnect",
                        "reason": "refresh_requested",
                        "debug_info": {"host": "sandbox"},
                    }
                )
            except ConnectionError:
                continue
            self._spawn(self._close_later(conn))
        await self._notify()

    async def _close_later(self, conn: Connection) -> None:
        await asyncio.sleep(self.refresh_grace)
        await conn.ws.close()

    def silence(self, connection: Connection | None = None) -> None:
        """The connection stays open but goes dead: no pong, nothing read or sent."""
        for conn in [connection] if connection else self.open_connections():
            conn.silent = True

    # -- deliveries -------------------------------------------------------------------------

    async def _pick(self, timeout: float) -> Connection | None:
        """The next connection in turn; while none is open (the app is reconnecting), wait
        up to ``timeout`` for one, as Slack holds an event briefly."""
        deadline = time.monotonic() + timeout
        while True:
            usable = [c for c in self.open_connections() if not c.refreshing]
            if usable:
                self._turn += 1
                return usable[self._turn % len(usable)]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    return None

    async def deliver(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """What would have been one HTTP delivery to the Events API URL, as one envelope:
        (200, the ack's payload as JSON or "") when acknowledged in time, else (0, "")."""
        kind, payload = _as_envelope(body, headers)
        retry = int(headers.get("X-Slack-Retry-Num") or 0)
        started = time.monotonic()
        conn = await self._pick(self.ack_timeout)
        if conn is None:
            log.info("sandbox.slack_socket_undelivered (no connection)")
            return 0, ""
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry
            envelope["retry_reason"] = headers.get("X-Slack-Retry-Reason", "") if retry else ""
        record = Envelope(envelope["envelope_id"], kind, conn.id, retry, payload)
        self.envelopes.append(record)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[record.envelope_id] = future
        try:
            if not conn.silent:
                conn.envelopes += 1
                await conn.ws.send_str(json.dumps(envelope))
            left = max(self.ack_timeout - (time.monotonic() - started), 0.1)
            ack = await asyncio.wait_for(future, left)
        except (TimeoutError, ConnectionError):
            return 0, ""
        finally:
            self._acks.pop(record.envelope_id, None)
        record.acked = True
        answer = ack.get("payload")
        return 200, json.dumps(answer) if answer else ""

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.connections):
            await conn.ws.close()


def _as_envelope(body: bytes, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The Events API request as Socket Mode carries it: JSON is an event, a form with
    ``payload`` is interactivity, any other form a slash command."""
    content_type = headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        return "events_api", json.loads(body)
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    if "payload" in form:
        return "interactive", json.loads(form["payload"])
    return "slash_commands", form
