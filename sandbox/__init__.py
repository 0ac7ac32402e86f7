"""Loopback stand-ins for Telegram, WhatsApp and Slack, on one local HTTP server.

The desk talks to them exactly as to the real services (its real client libraries, pointed at
``*_api_base``); they call the desk's webhooks signed as the real services sign them. Tests and
the benchmark drive them from Python; ``deskbot sandbox`` drives them from a browser page and a
small JSON control API under ``/control/``.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from .slack import SlackStandIn
from .telegram import TelegramStandIn
from .whatsapp import WhatsAppStandIn

__all__ = ["SlackStandIn", "StandIns", "TelegramStandIn", "WhatsAppStandIn"]

PAGE = Path(__file__).with_name("page.html")


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

    @classmethod
    def for_sandbox(cls, desk_url: str, *, rate_limits: bool = True) -> StandIns:
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

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
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
        return self.url

    async def stop(self) -> None:
        await self.telegram.close()
        await self.whatsapp.close()
        await self.slack.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


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
