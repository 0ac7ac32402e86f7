"""Loopback stand-ins for Telegram, WhatsApp and Slack, on one local HTTP server.

The desk talks to them exactly as to the real services (its real client libraries, pointed at
``*_api_base``); they call the desk's webhooks signed as the real services sign them. Tests and
the benchmark drive them from Python; ``deskbot sandbox`` drives them from a browser page and a
small JSON control API under ``/control/``.

Given a ``state_path``, the stand-ins keep what is in them (chats, channels, threads, id
counters) in a JSON file, saved shortly after every change and at stop, and loaded at start: a
restarted sandbox still shows its conversations and cards, and never reuses an id. Tests and the
benchmark give no path and start empty every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .slack import SlackStandIn
from .telegram import TelegramStandIn
from .whatsapp import WhatsAppStandIn

__all__ = ["DeskHistory", "SlackStandIn", "StandIns", "TelegramStandIn", "WhatsAppStandIn"]

PAGE = Path(__file__).with_name("page.html")
STATE_VERSION = 1
SAVE_DELAY = 0.3  # seconds: changes arrive in bursts; one write per burst is enough

log = logging.getLogger("sandbox")


@dataclass
class DeskHistory:
    """Platform ids and conversations a desk's database already holds (from an earlier run).

    The platforms never hand out an id twice; stand-ins that start again must carry on after
    these, or the desk drops new messages as duplicates of old ones.
    """

    telegram_update_ids: list[str] = field(default_factory=list)
    telegram_message_ids: list[str] = field(default_factory=list)
    telegram_chats: dict[int, str] = field(default_factory=dict)  # chat id → first name
    whatsapp_ids: list[str] = field(default_factory=list)  # wamids, in and out
    whatsapp_last_inbound: dict[str, float] = field(default_factory=dict)  # wa_id → unix time
    whatsapp_names: dict[str, str] = field(default_factory=dict)
    slack_ids: list[str] = field(default_factory=list)  # event ids, trigger ids, message ts


class StandIns:
    def __init__(
        self,
        *,
        desk_url: str,
        telegram_token: str,
        whatsapp_access_token: str,
        whatsapp_phone_number_id: str,
        whatsapp_app_secret: str,
        slack_bot_token: str,
        slack_signing_secret: str,
        rate_limits: bool = True,
        retry_base_delay: float = 1.0,
        state_path: Path | None = None,
    ) -> None:
        self.desk_url = desk_url.rstrip("/")
        self.telegram_token = telegram_token
        self.whatsapp_access_token = whatsapp_access_token
        self.whatsapp_phone_number_id = whatsapp_phone_number_id
        self.whatsapp_app_secret = whatsapp_app_secret
        self.slack_bot_token = slack_bot_token
        self.slack_signing_secret = slack_signing_secret
        self.telegram = TelegramStandIn(
            telegram_token, rate_limits=rate_limits, retry_base_delay=retry_base_delay
        )
        self.whatsapp = WhatsAppStandIn(
            access_token=whatsapp_access_token,
            phone_number_id=whatsapp_phone_number_id,
            app_secret=whatsapp_app_secret,
            desk_url=desk_url,
            rate_limits=rate_limits,
            retry_base_delay=retry_base_delay,
        )
        self.slack = SlackStandIn(
            bot_token=slack_bot_token,
            signing_secret=slack_signing_secret,
            desk_url=desk_url,
            rate_limits=rate_limits,
            retry_base_delay=retry_base_delay,
        )
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.state_path = state_path
        self.continued = False  # True when start() loaded an earlier state
        self._started = False
        self._saver: asyncio.Task[None] | None = None

    @classmethod
    def for_sandbox(
        cls, desk_url: str, *, rate_limits: bool = True, state_path: Path | None = None
    ) -> StandIns:
        """Fresh made-up credentials: the desk must present them, as it would real ones."""
        return cls(
            desk_url=desk_url,
            telegram_token=f"{secrets.randbelow(10**9):09d}:SANDBOX{secrets.token_urlsafe(24)}",
            whatsapp_access_token="EAAG" + secrets.token_urlsafe(32),
            whatsapp_phone_number_id="106540352242922",
            whatsapp_app_secret=secrets.token_hex(16),
            slack_bot_token="xoxb-sandbox-" + secrets.token_hex(12),
            slack_signing_secret=secrets.token_hex(16),
            rate_limits=rate_limits,
            retry_base_delay=1.0,
            state_path=state_path,
        )

    @property
    def telegram_api_base(self) -> str:
        return f"{self.url}/telegram"

    @property
    def whatsapp_api_base(self) -> str:
        return f"{self.url}/whatsapp/v21.0"

    @property
    def slack_api_base(self) -> str:
        return f"{self.url}/slack/api/"

    # -- the state file ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "telegram": self.telegram.snapshot(),
            "whatsapp": self.whatsapp.snapshot(),
            "slack": self.slack.snapshot(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.telegram.restore(state.get("telegram", {}))
        self.whatsapp.restore(state.get("whatsapp", {}))
        self.slack.restore(state.get("slack", {}))

    def continue_after(self, history: DeskHistory) -> None:
        """Never reuse an id the desk already holds, even when the state file is gone."""
        self.telegram.continue_after(
            update_ids=history.telegram_update_ids,
            message_ids=history.telegram_message_ids,
            chats=history.telegram_chats,
        )
        self.whatsapp.continue_after(
            wamids=history.whatsapp_ids,
            last_inbound=history.whatsapp_last_inbound,
            names=history.whatsapp_names,
        )
        self.slack.continue_after(history.slack_ids)

    def load(self) -> bool:
        """Load the state file if there is one; True when it was loaded."""
        path = self.state_path
        if path is None or not path.exists():
            return False
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} state file")
            self.restore(state)
        except (ValueError, KeyError, TypeError) as exc:
            broken = path.with_name(path.name + ".broken")
            os.replace(path, broken)
            log.warning("sandbox.state_unreadable path=%s moved_to=%s error=%s", path, broken, exc)
            return False
        self.continued = True
        return True

    def save(self) -> None:
        """Write the state file whole, then rename it over the old one: never half a file."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _changed(self) -> None:
        if self._saver is None or self._saver.done():
            self._saver = asyncio.ensure_future(self._save_soon())

    async def _save_soon(self) -> None:
        await asyncio.sleep(SAVE_DELAY)
        try:
            self.save()
        except OSError as exc:
            log.warning("sandbox.state_not_saved path=%s error=%s", self.state_path, exc)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        if self.state_path is not None:
            self.load()
            for standin in (self.telegram, self.whatsapp, self.slack):
                standin._changed.on_change = self._changed
        app = web.Application(client_max_size=8 * 1024 * 1024)
        self.telegram.install(app, "/telegram")
        self.whatsapp.install(app, "/whatsapp")
        self.slack.install(app, "/slack")
        Control(self).install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = int(self._runner.addresses[0][1])
        self.url = f"http://{host}:{bound}"
        self.slack.base_url = self.url
        self._started = True
        return self.url

    async def stop(self) -> None:
        await self.telegram.close()
        await self.whatsapp.close()
        await self.slack.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._saver is not None:
            self._saver.cancel()
        if self._started:  # never overwrite a state file with the empty state of a failed start
            self.save()


class Control:
    """The JSON control API behind the sandbox page (and curl): play customer and agent."""

    def __init__(self, s: StandIns) -> None:
        self.s = s

    def install(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.page)
        r.add_get("/control/state", self.state)
        r.add_post("/control/telegram/customer_says", self.tg_says)
        r.add_post("/control/telegram/customer_presses", self.tg_presses)
        r.add_get("/control/telegram/sent", self.tg_sent)
        r.add_post("/control/whatsapp/customer_says", self.wa_says)
        r.add_post("/control/whatsapp/customer_presses", self.wa_presses)
        r.add_get("/control/whatsapp/sent", self.wa_sent)
        r.add_get("/control/slack/messages", self.slack_messages)
        r.add_post("/control/slack/agent_replies", self.slack_replies)
        r.add_post("/control/slack/agent_clicks", self.slack_clicks)
        r.add_post("/control/slack/slash_command", self.slack_command)

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    @staticmethod
    async def _body(request: web.Request, *required: str) -> dict[str, Any]:
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        missing = [k for k in required if data.get(k) in (None, "")]
        if missing:
            raise web.HTTPBadRequest(text=f"missing: {', '.join(missing)}")
        return data

    async def state(self, request: web.Request) -> web.StreamResponse:
        slack = self.s.slack
        channels = {}
        for channel in slack.channels:
            top = slack.messages(channel)
            channels[channel] = [{**m, "replies": slack.thread(channel, m["ts"])} for m in top]
        return web.json_response(
            {
                "telegram": {
                    "chats": {str(k): v for k, v in self.s.telegram.chats().items()},
                    "sent": self.s.telegram.sent,
                    "received": self.s.telegram.received,
                },
                "whatsapp": {
                    "names": self.s.whatsapp.names,
                    "sent": self.s.whatsapp.sent,
                    "received": self.s.whatsapp.received,
                },
                "slack": channels,
            }
        )

    async def tg_says(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "chat_id", "text")
        mid = await self.s.telegram.customer_says(
            int(d["chat_id"]), str(d["text"]), str(d.get("first_name") or "Customer")
        )
        return web.json_response({"message_id": mid})

    async def tg_presses(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "chat_id", "message_id", "data")
        try:
            qid = await self.s.telegram.customer_presses(
                int(d["chat_id"]), int(d["message_id"]), str(d["data"])
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"callback_query_id": qid})

    async def tg_sent(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.s.telegram.sent_to(int(request.query.get("chat_id", 0))))

    async def wa_says(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "wa_id", "text")
        wamid = await self.s.whatsapp.customer_says(
            str(d["wa_id"]), str(d["text"]), str(d.get("name") or "") or None
        )
        return web.json_response({"id": wamid})

    async def wa_presses(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "wa_id", "reply_id", "title")
        wamid = await self.s.whatsapp.customer_presses(
            str(d["wa_id"]), str(d["reply_id"]), str(d["title"])
        )
        return web.json_response({"id": wamid})

    async def wa_sent(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.s.whatsapp.sent_to(request.query.get("wa_id", "")))

    async def slack_messages(self, request: web.Request) -> web.StreamResponse:
        channel = request.query.get("channel", "C0SUPPORT")
        ts = request.query.get("thread_ts")
        slack = self.s.slack
        return web.json_response(slack.thread(channel, ts) if ts else slack.messages(channel))

    async def slack_replies(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "thread_ts", "user", "text")
        ts = await self.s.slack.agent_replies(
            str(d["channel"]), str(d["thread_ts"]), str(d["user"]), str(d["text"])
        )
        return web.json_response({"ts": ts})

    async def slack_clicks(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "message_ts", "action_id", "user")
        try:
            status = await self.s.slack.agent_clicks(
                str(d["channel"]), str(d["message_ts"]), str(d["action_id"]), str(d["user"])
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"desk_status": status})

    async def slack_command(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "command", "user", "channel")
        try:
            responses = await self.s.slack.slash_command(
                str(d["command"]), str(d.get("text") or ""), str(d["user"]), str(d["channel"])
            )
        except AssertionError as exc:
            raise web.HTTPBadGateway(text=str(exc)) from None
        return web.json_response(responses)
