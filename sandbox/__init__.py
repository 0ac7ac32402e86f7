"""Loopback stand-ins for Telegram, WhatsApp and Slack, on one local HTTP server, and a support
mailbox (IMAP and SMTP servers of its own on loopback ports, :mod:`sandbox.email`).

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
import base64
import json
import logging
import mimetypes
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .email import EmailStandIn
from .slack import AGENTS, BOT_USER, CHANNELS, SlackStandIn
from .telegram import TelegramStandIn
from .whatsapp import WhatsAppStandIn

__all__ = [
    "DeskHistory",
    "EmailStandIn",
    "SlackStandIn",
    "StandIns",
    "TelegramStandIn",
    "WhatsAppStandIn",
]

PAGE = Path(__file__).with_name("page.html")
# A speech bubble, so the browser has an icon and logs no 404 for /favicon.ico.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="14" fill="#4a154b"/>'
    '<path d="M14 16h36a4 4 0 0 1 4 4v20a4 4 0 0 1-4 4H30l-10 8v-8h-6a4 4 0 0 1-4-4V20'
    'a4 4 0 0 1 4-4z" fill="#fff"/></svg>'
)

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
        slack_app_token: str | None = None,  # set → Slack delivers over Socket Mode
    ) -> None:
        self.desk_url = desk_url.rstrip("/")
        self.telegram_token = telegram_token
        self.whatsapp_access_token = whatsapp_access_token
        self.whatsapp_phone_number_id = whatsapp_phone_number_id
        self.whatsapp_app_secret = whatsapp_app_secret
        self.slack_bot_token = slack_bot_token
        self.slack_signing_secret = slack_signing_secret
        self.slack_app_token = slack_app_token
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
            app_token=slack_app_token,
        )
        self.email = EmailStandIn()
        # WhatsApp's 24-hour window counts on the desk's clock, fast-forward included.
        self.whatsapp.clock = self.desk_now
        self.url = ""
        self._runner: web.AppRunner | None = None
        # Set by `deskbot sandbox`: moves the desk's clock forward by N minutes, returns the
        # total offset in minutes (the stand-ins themselves keep real time).
        self.advance_clock: Callable[[float], float] | None = None
        # The desk's clock as fast-forwarded: (real Unix time, offset in seconds from then on),
        # oldest first. Kept in the state file, so a restarted sandbox keeps the desk's time
        # (tickets made while fast-forwarded never lie in its future); --fresh starts at 0.
        self.clock_steps: list[tuple[float, float]] = []
        self.state_path = state_path
        self.continued = False  # True when start() loaded an earlier state
        self._started = False
        self._saver: asyncio.Task[None] | None = None

    @classmethod
    def for_sandbox(
        cls,
        desk_url: str,
        *,
        rate_limits: bool = True,
        state_path: Path | None = None,
        slack_socket: bool = False,
    ) -> StandIns:
        """Fresh made-up credentials: the desk must present them, as it would real ones.
        ``slack_socket``: Slack talks to the desk over Socket Mode instead of the Events API."""
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
            slack_app_token="xapp-1-sandbox-" + secrets.token_hex(12) if slack_socket else None,
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

    # -- the desk's clock -----------------------------------------------------------------------

    @property
    def clock_offset(self) -> float:
        """Seconds the desk's clock runs ahead of real time (the page's fast-forward)."""
        return self.clock_steps[-1][1] if self.clock_steps else 0.0

    def desk_time(self, at: float) -> float:
        """The desk's clock at real Unix time ``at``: the offset it had then."""
        offset = 0.0
        for since, value in self.clock_steps:
            if since > at:
                break
            offset = value
        return at + offset

    def desk_now(self) -> float:
        return time.time() + self.clock_offset

    def clock_moved(self, offset_seconds: float) -> None:
        """The desk's clock now runs ``offset_seconds`` ahead; remembered in the state file."""
        self.clock_steps.append((time.time(), float(offset_seconds)))
        if self.state_path is not None and self._started:
            self._changed()

    # -- the state file ------------------------------------------------------------------------

    def paced_refusals(self) -> dict[str, int]:
        """Per platform: calls refused with 429 because the desk went faster than the limit
        (failures a test asks for are not counted). A desk that keeps its pace causes none."""
        return {
            "telegram": self.telegram.paced_refusals(),
            "whatsapp": self.whatsapp.paced_refusals(),
            "slack": self.slack.paced_refusals_total(),
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "telegram": self.telegram.snapshot(),
            "whatsapp": self.whatsapp.snapshot(),
            "slack": self.slack.snapshot(),
            "email": self.email.snapshot(),
            "clock": {"steps": [list(step) for step in self.clock_steps]},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.telegram.restore(state.get("telegram", {}))
        self.whatsapp.restore(state.get("whatsapp", {}))
        self.slack.restore(state.get("slack", {}))
        self.email.restore(state.get("email", {}))
        steps = state.get("clock", {}).get("steps", [])
        self.clock_steps = [(float(at), float(offset)) for at, offset in steps]

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
            for standin in (self.telegram, self.whatsapp, self.slack, self.email):
                standin._changed.on_change = self._changed
        # Big enough for WhatsApp's 100 MB documents: the stand-ins answer an oversized upload
        # with the platform's own error rather than aiohttp's 413.
        app = web.Application(client_max_size=110 * 1024 * 1024)
        self.telegram.install(app, "/telegram")
        self.whatsapp.install(app, "/whatsapp")
        self.slack.install(app, "/slack")
        Control(self).install(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        await self.email.start(host)
        bound = int(self._runner.addresses[0][1])
        self.url = f"http://{host}:{bound}"
        self.slack.base_url = self.url
        self.whatsapp.base_url = self.url
        self._started = True
        return self.url

    async def stop(self) -> None:
        await self.telegram.close()
        await self.whatsapp.close()
        await self.slack.close()
        await self.email.close()
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
        r.add_get("/favicon.ico", self.favicon)
        r.add_get("/control/state", self.state)
        r.add_post("/control/telegram/customer_says", self.tg_says)
        r.add_post("/control/telegram/customer_presses", self.tg_presses)
        r.add_post("/control/telegram/customer_shares_contact", self.tg_contact)
        r.add_get("/control/telegram/sent", self.tg_sent)
        r.add_post("/control/whatsapp/customer_says", self.wa_says)
        r.add_post("/control/whatsapp/customer_presses", self.wa_presses)
        r.add_get("/control/whatsapp/sent", self.wa_sent)
        r.add_post("/control/email/customer_writes", self.email_writes)
        r.add_get("/control/email/sent", self.email_sent)
        r.add_get("/control/slack/messages", self.slack_messages)
        r.add_post("/control/slack/agent_replies", self.slack_replies)
        r.add_post("/control/slack/agent_clicks", self.slack_clicks)
        r.add_post("/control/slack/answer_clicks", self.slack_answer_clicks)
        r.add_post("/control/slack/slash_command", self.slack_command)
        r.add_post("/control/slack/opens_home", self.slack_opens_home)
        r.add_post("/control/slack/clicks_home", self.slack_clicks_home)
        r.add_post("/control/slack/modal_types", self.slack_modal_types)
        r.add_post("/control/slack/modal_picks", self.slack_modal_picks)
        r.add_post("/control/slack/modal_submits", self.slack_modal_submits)
        r.add_post("/control/slack/modal_closes", self.slack_modal_closes)
        r.add_post("/control/slack/message_shortcut", self.slack_message_shortcut)
        r.add_get("/control/slack/files", self.slack_files)
        r.add_get("/control/slack/files/{file_id}", self.slack_file)
        r.add_get("/control/telegram/files/{file_id}", self.tg_file)
        r.add_get("/control/whatsapp/media/{media_id}", self.wa_media)
        r.add_post("/control/clock/advance", self.clock_advance)
        r.add_post("/control/telegram/customer_sends_file", self.tg_sends_file)
        r.add_post("/control/whatsapp/customer_sends_file", self.wa_sends_file)
        r.add_post("/control/slack/agent_shares_file", self.slack_shares_file)
        # Last, so it only sees what no route above took: a typo or the wrong method.
        r.add_route("*", "/control/{tail:.*}", self.unknown)

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=FAVICON,
            content_type="image/svg+xml",
            headers={"Cache-Control": "max-age=86400"},
        )

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        methods = [m for m, path, _ in ENDPOINTS if path == request.path]
        if methods:
            return web.Response(
                status=405,
                text=f"{request.path} takes {' or '.join(methods)}, not {request.method}",
                headers={"Allow": ", ".join(methods)},
            )
        listing = "\n".join(f"  {m} {path} {usage}".rstrip() for m, path, usage in ENDPOINTS)
        return web.Response(
            status=404, text=f"no control endpoint {request.path}; there are:\n{listing}"
        )

    # -- reading requests: say exactly what is wrong, as 400 -------------------------------------

    @staticmethod
    async def _body(request: web.Request, *required: str) -> dict[str, Any]:
        usage = USAGE.get(request.path, "")
        takes = f"{request.path} takes {usage}" if usage else ""
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError as exc:
            raise _bad(f"the body must be JSON ({exc}); {takes}") from None
        if not isinstance(data, dict):
            raise _bad(f"the body must be a JSON object; {takes}")
        missing = [k for k in required if data.get(k) in (None, "")]
        if missing:
            raise _bad(f"missing {', '.join(missing)}: {takes}")
        return data

    def _channel(self, value: Any) -> str:
        if isinstance(value, str) and value in self.s.slack.channels:
            return value
        known = ", ".join(f"{c} (#{CHANNELS.get(c, c)})" for c in self.s.slack.channels)
        raise _bad(f"channel must be one of the sandbox's Slack channels: {known}; got {value!r}")

    def _card(self, channel: str, value: Any, key: str) -> dict[str, Any]:
        """A top-level message of ``channel`` (a card) by its ts."""
        where = f"GET /control/slack/messages?channel={channel}"
        if not isinstance(value, str) or not TS_RE.match(value):
            raise _bad(
                f"{key} must be a Slack message ts like 1795645156.000001 (each card's"
                f' "ts" in {where}), got {value!r}'
            )
        message = next((m for m in self.s.slack.messages(channel) if m["ts"] == value), None)
        if message is None:
            raise _bad(f"no message with ts {value} in {channel}; its cards are in {where}")
        return message

    # -- what is on every screen ---------------------------------------------------------------

    async def state(self, request: web.Request) -> web.StreamResponse:
        slack = self.s.slack
        channels = {}
        for channel in slack.channels:
            top = slack.messages(channel)
            channels[channel] = [{**m, "replies": slack.thread(channel, m["ts"])} for m in top]
        wa = self.s.whatsapp
        numbers = list(
            dict.fromkeys(
                [str(m.get("from")) for m in wa.received]
                + [str(m.get("to")) for m in wa.sent]
                + list(wa.names)
            )
        )
        return web.json_response(
            {
                # The desk's clock (real time plus the fast-forward), as the desk counts ages.
                "now": self.s.desk_now(),
                "clock": {
                    "offset_minutes": self.s.clock_offset / 60,
                    # (real Unix time, offset in seconds from then): the stand-ins stamp real
                    # time; the page adds the offset each moment had, as the desk did.
                    "steps": [list(step) for step in self.s.clock_steps],
                },
                "bot": {"user_id": BOT_USER, "name": "deskbot"},
                "agents": {
                    uid: {"name": name, "real_name": name.title()} for uid, name in AGENTS.items()
                },
                "channels": {c: _channel_info(c) for c in slack.channels},
                "telegram": {
                    "chats": {str(k): v for k, v in self.s.telegram.chats().items()},
                    "sent": self.s.telegram.sent,
                    "received": self.s.telegram.received,
                },
                "whatsapp": {
                    "names": wa.names,
                    "numbers": numbers,
                    # When the stand-in took each message (kept across restarts; a state file
                    # from before sent_at has none, and no made-up time is shown for them).
                    "sent": [
                        {**m, "seen_at": wa.sent_at[str(m["id"])]}
                        if "timestamp" not in m and str(m.get("id")) in wa.sent_at
                        else m
                        for m in wa.sent
                    ],
                    "received": wa.received,
                },
                "email": {
                    "address": self.s.email.address,
                    "sent": self.s.email.sent,
                    "received": self.s.email.received(),
                },
                "slack": channels,
                # What the desk told one agent alone (refused card controls), per agent.
                "slack_ephemeral": {uid: slack.ephemerals(uid) for uid in AGENTS},
                # The latest of those answers with buttons (Suggest articles), per agent.
                "slack_answers": {
                    uid: [
                        post
                        for rid, posts in slack.responses.items()
                        if slack.response_users.get(rid) == uid
                        for post in posts
                        if post.get("blocks")
                    ][-1:]
                    for uid in AGENTS
                },
                # Each agent's App Home as last published, and the modal they have open.
                "slack_home": {uid: slack.homes[uid] for uid in AGENTS if uid in slack.homes},
                "slack_modal": {uid: self._modal(uid) for uid in AGENTS if slack.modal_of(uid)},
            }
        )

    # -- the customers -------------------------------------------------------------------------

    async def tg_says(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "chat_id", "text")
        mid = await self.s.telegram.customer_says(
            _chat_id(d["chat_id"]),
            _text(d["text"]),
            _name(d.get("first_name"), "first_name") or "Customer",
            language_code=_language(d.get("language_code")),
        )
        return web.json_response({"message_id": mid})

    async def tg_presses(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "chat_id", "message_id", "data")
        chat_id = _chat_id(d["chat_id"])
        message_id = _whole(
            d["message_id"],
            "message_id",
            f"the bot's message with the button, from GET /control/telegram/sent?chat_id={chat_id}",
        )
        try:
            qid = await self.s.telegram.customer_presses(chat_id, message_id, str(d["data"]))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return web.json_response({"callback_query_id": qid})

    async def tg_contact(self, request: web.Request) -> web.StreamResponse:
        """The customer taps Telegram's "share my phone number" button (``own``, the default),
        or sends someone else's contact card (``own: false``), as for /link."""
        d = await self._body(request, "chat_id", "phone")
        phone = d["phone"]
        if not isinstance(phone, str) or not PHONE_RE.fullmatch(phone.strip()):
            raise _bad(f"phone must be a phone number like +15551234567, got {phone!r}")
        own = d.get("own", True)
        if not isinstance(own, bool):
            raise _bad(f"own must be true or false, got {own!r}")
        mid = await self.s.telegram.customer_shares_contact(
            _chat_id(d["chat_id"]),
            phone.strip(),
            own=own,
            first_name=_name(d.get("first_name"), "first_name") or "Customer",
        )
        return web.json_response({"message_id": mid})

    async def tg_sent(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("chat_id"):
            raise _bad("chat_id is required: GET /control/telegram/sent?chat_id=42")
        return web.json_response(self.s.telegram.sent_to(_chat_id(request.query["chat_id"])))

    async def wa_says(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "wa_id", "text")
        wamid = await self.s.whatsapp.customer_says(
            _wa_id(d["wa_id"]), _text(d["text"]), _name(d.get("name"), "name")
        )
        return web.json_response({"id": wamid})

    async def wa_presses(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "wa_id", "reply_id", "title")
        wamid = await self.s.whatsapp.customer_presses(
            _wa_id(d["wa_id"]), str(d["reply_id"]), str(d["title"])
        )
        return web.json_response({"id": wamid})

    async def wa_sent(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("wa_id"):
            raise _bad("wa_id is required: GET /control/whatsapp/sent?wa_id=15551234567")
        return web.json_response(self.s.whatsapp.sent_to(_wa_id(request.query["wa_id"])))

    async def email_writes(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "from", "text")
        sender = d["from"]
        if not isinstance(sender, str) or not EMAIL_RE.fullmatch(sender.strip()):
            raise _bad(f"from must be an address like anna@customer.test, got {sender!r}")
        subject = _name(d.get("subject"), "subject") or ""
        reply_to = _name(d.get("in_reply_to"), "in_reply_to")
        if not subject and not reply_to:
            raise _bad("subject is required for a new mail (a reply takes the desk's subject)")
        try:
            written = await self.s.email.customer_writes(
                sender.strip().lower(),
                _text(d["text"]),
                name=_name(d.get("name"), "name") or "",
                subject=subject,
                in_reply_to=reply_to,
            )
        except ValueError as exc:
            raise _bad(f"{exc}; the desk's mails are in GET /control/email/sent") from None
        return web.json_response(written)

    async def email_sent(self, request: web.Request) -> web.StreamResponse:
        to = request.query.get("to")
        return web.json_response(self.s.email.sent_to(to) if to else self.s.email.sent)

    # -- the agents ----------------------------------------------------------------------------

    async def slack_messages(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request.query.get("channel", "C0SUPPORT"))
        ts = request.query.get("thread_ts")
        slack = self.s.slack
        if ts:
            self._card(channel, ts, "thread_ts")
        return web.json_response(slack.thread(channel, ts) if ts else slack.messages(channel))

    async def slack_files(self, request: web.Request) -> web.StreamResponse:
        """What the desk uploaded, oldest first, without the bytes (``/files/{id}`` has them)."""
        listed = [
            {
                "id": meta["id"],
                "name": meta["name"],
                "title": meta["title"],
                "size": meta.get("size"),
                "mimetype": _mimetype(meta["name"]),
                "channels": list(meta["channels"]),
                "url": f"/control/slack/files/{meta['id']}",
            }
            for meta in self.s.slack.files.values()
            if meta["content"] is not None
        ]
        return web.json_response(listed)

    async def slack_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        meta = self.s.slack.files.get(file_id)
        if meta is None or meta["content"] is None:
            raise web.HTTPNotFound(text=f"no uploaded file {file_id}; GET /control/slack/files")
        return web.Response(
            body=meta["content"],
            content_type=_mimetype(meta["name"]),
            headers={"Content-Disposition": f'inline; filename="{_safe_name(meta["name"])}"'},
        )

    async def tg_file(self, request: web.Request) -> web.StreamResponse:
        """A file in a Telegram chat (either way), as the customer's app would open it."""
        file_id = request.match_info["file_id"]
        found = self.s.telegram.files.get(file_id)
        if found is None:
            raise web.HTTPNotFound(text=f"no Telegram file {file_id}")
        name = _safe_name(str(found["file_path"]).rsplit("/", 1)[-1])
        return web.Response(
            body=found["content"],
            content_type=_mimetype(name),
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )

    async def wa_media(self, request: web.Request) -> web.StreamResponse:
        """A media item in a WhatsApp chat (either way)."""
        media_id = request.match_info["media_id"]
        found = self.s.whatsapp.media.get(media_id)
        if found is None:
            raise web.HTTPNotFound(text=f"no WhatsApp media {media_id}")
        name = _safe_name(str(found.get("filename") or f"media-{media_id}"))
        return web.Response(
            body=found["content"],
            content_type=str(found.get("mime_type") or "application/octet-stream"),
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )

    # -- files both ways ------------------------------------------------------------------------

    async def tg_sends_file(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "chat_id")
        kind = _file_kind(d.get("kind"), ("photo", "document"))
        name, content, size = _file(d, "photo.png" if kind == "photo" else "file.pdf")
        chat_id = _chat_id(d["chat_id"])
        first = _name(d.get("first_name"), "first_name") or "Customer"
        caption = str(d.get("caption") or "")
        if kind == "photo":
            mid = await self.s.telegram.customer_sends_photo(
                chat_id, caption, first, content=content
            )
        else:
            mid = await self.s.telegram.customer_sends_document(
                chat_id,
                name,
                content,
                mime_type=_mimetype(name),
                caption=caption,
                first_name=first,
                size=size,
            )
        return web.json_response({"message_id": mid})

    async def wa_sends_file(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "wa_id")
        kind = _file_kind(d.get("kind"), ("image", "document"))
        name, content, _size = _file(d, "photo.png" if kind == "image" else "file.pdf")
        wamid = await self.s.whatsapp.customer_sends_media(
            _wa_id(d["wa_id"]),
            kind,
            content,
            mime_type=_mimetype(name),
            filename=name,
            caption=str(d.get("caption") or ""),
            name=_name(d.get("name"), "name"),
        )
        return web.json_response({"id": wamid})

    async def slack_shares_file(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "thread_ts", "user")
        channel = self._channel(d["channel"])
        self._card(channel, d["thread_ts"], "thread_ts")
        name, content, size = _file(d, "file.pdf")
        ts = await self.s.slack.agent_shares_file(
            channel,
            str(d["thread_ts"]),
            _user(d["user"]),
            name,
            content,
            mimetype=_mimetype(name),
            text=str(d.get("text") or ""),
            size=size,
        )
        return web.json_response({"ts": ts})

    async def slack_replies(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "thread_ts", "user", "text")
        channel = self._channel(d["channel"])
        self._card(channel, d["thread_ts"], "thread_ts")
        ts = await self.s.slack.agent_replies(
            channel, str(d["thread_ts"]), _user(d["user"]), _text(d["text"])
        )
        return web.json_response({"ts": ts})

    async def slack_clicks(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "message_ts", "action_id", "user")
        channel = self._channel(d["channel"])
        card = self._card(channel, d["message_ts"], "message_ts")
        buttons = [
            str(e.get("action_id"))
            for block in card.get("blocks") or []
            for e in block.get("elements") or []
            if e.get("action_id")
        ]
        if d["action_id"] not in buttons:
            has = f"it has {', '.join(buttons)}" if buttons else "it has no buttons now"
            raise _bad(f"the card {card['ts']} has no button {d['action_id']!r}; {has}")
        value = d.get("value")  # a menu's choice (an option's value, or a user), not for buttons
        values = d.get("values")  # a multi-select's choices (the Tags menu)
        if values is not None and (
            not isinstance(values, list) or not all(isinstance(v, str) for v in values)
        ):
            raise _bad(f"values must be a list of option values, got {values!r}")
        try:
            status = await self.s.slack.agent_clicks(
                channel,
                card["ts"],
                str(d["action_id"]),
                _user(d["user"]),
                None if value is None else str(value),
                values,
            )
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return web.json_response({"desk_status": status})

    async def slack_answer_clicks(self, request: web.Request) -> web.StreamResponse:
        """An agent clicks a button in the latest answer the desk gave them alone (e.g. "Send
        to customer" under "Suggest articles"); returns what the desk answered that click."""
        d = await self._body(request, "action_id", "user")
        user, action = _user(d["user"]), str(d["action_id"])
        channel = self._channel(d.get("channel") or "C0SUPPORT")
        slack = self.s.slack
        answers = [
            post
            for rid, posts in slack.responses.items()
            if user in (slack.response_users.get(rid), slack.command_users.get(rid))
            for post in posts
            if any(
                e.get("action_id") == action
                for b in post.get("blocks") or []
                for e in b.get("elements") or []
            )
        ]
        if not answers:
            raise _bad(f"no answer to {user} has a button {action!r}")
        try:
            said = await slack.clicks_in_answer(channel, answers[-1], action, user)
        except (ValueError, AssertionError) as exc:
            raise _bad(str(exc)) from None
        return web.json_response(said)

    # -- App Home, modals and the message shortcut ----------------------------------------------

    def _modal(self, user: str) -> dict[str, Any]:
        slack = self.s.slack
        modal = slack.modal_of(user) or {}
        inputs = {
            b["block_id"]: slack.input_value(modal, b)
            for b in modal.get("blocks", [])
            if b["type"] == "input"
        }
        return {k: v for k, v in modal.items() if k != "state"} | {"values": inputs}

    def _view_id(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.s.slack.modals:
            raise _bad(
                f"no open modal {value!r}; the open ones are under slack_modal in /control/state"
            )
        if self.s.slack.modals[value].get("closed"):
            raise _bad(f"the modal {value} is closed")
        return value

    async def slack_opens_home(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "user")
        status = await self.s.slack.opens_home(_user(d["user"]))
        return web.json_response({"desk_status": status})

    async def slack_clicks_home(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "user", "action_id")
        value = d.get("value")
        try:
            status = await self.s.slack.clicks_home(
                _user(d["user"]), str(d["action_id"]), None if value is None else str(value)
            )
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return web.json_response({"desk_status": status})

    async def slack_modal_types(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "view_id")
        text = d.get("text")
        if not isinstance(text, str) or len(text) > 3000:
            raise _bad("text must be a string of at most 3000 characters")
        status = await self.s.slack.types_in_modal(self._view_id(d["view_id"]), text)
        return web.json_response({"desk_status": status})

    async def slack_modal_picks(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "view_id", "action_id", "value")
        try:
            status = await self.s.slack.picks_in_modal(
                self._view_id(d["view_id"]), str(d["action_id"]), str(d["value"])
            )
        except (ValueError, StopIteration) as exc:
            raise _bad(f"no such menu or option: {exc}") from None
        return web.json_response({"desk_status": status})

    async def slack_modal_submits(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "view_id")
        status, body = await self.s.slack.submits_modal(self._view_id(d["view_id"]))
        return web.json_response({"desk_status": status, "body": body})

    async def slack_modal_closes(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "view_id")
        self.s.slack.modals[self._view_id(d["view_id"])]["closed"] = True
        return web.json_response({"closed": True})

    async def slack_message_shortcut(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "channel", "ts", "user")
        channel = self._channel(d["channel"])
        try:
            status = await self.s.slack.message_shortcut(channel, str(d["ts"]), _user(d["user"]))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        return web.json_response({"desk_status": status})

    async def clock_advance(self, request: web.Request) -> web.StreamResponse:
        """Fast-forward the desk's clock (``deskbot sandbox`` only), e.g. to watch an SLA."""
        d = await self._body(request, "minutes")
        minutes = d["minutes"]
        if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
            raise _bad(f"minutes must be a positive number, got {minutes!r}")
        if self.s.advance_clock is None:
            raise web.HTTPNotFound(text="this desk's clock can't be moved (only `deskbot sandbox`)")
        total = self.s.advance_clock(float(minutes))
        self.s.clock_moved(total * 60)
        return web.json_response({"offset_minutes": total})

    async def slack_command(self, request: web.Request) -> web.StreamResponse:
        d = await self._body(request, "command", "user", "channel")
        command = d["command"]
        if not isinstance(command, str) or not COMMAND_RE.match(command):
            raise _bad(f"command must be a slash command like /desk, got {command!r}")
        try:
            responses = await self.s.slack.slash_command(
                command, str(d.get("text") or ""), _user(d["user"]), self._channel(d["channel"])
            )
        except AssertionError as exc:
            raise web.HTTPBadGateway(text=str(exc)) from None
        return web.json_response(responses)


# What each endpoint takes, for the errors that say what a request should have looked like.
ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("GET", "/control/state", ""),
    (
        "POST",
        "/control/telegram/customer_says",
        '{"chat_id": 42, "text": "Hello", "first_name"?: "Ann", "language_code"?: "zh-hans"}',
    ),
    (
        "POST",
        "/control/telegram/customer_presses",
        '{"chat_id": 42, "message_id": 7, "data": "rate:1:5"}',
    ),
    (
        "POST",
        "/control/telegram/customer_shares_contact",
        '{"chat_id": 42, "phone": "+15551234567", "own"?: true, "first_name"?: "Ann"}',
    ),
    ("GET", "/control/telegram/sent", "?chat_id=42"),
    (
        "POST",
        "/control/whatsapp/customer_says",
        '{"wa_id": "15551234567", "text": "Hello", "name"?: "Sheena"}',
    ),
    (
        "POST",
        "/control/whatsapp/customer_presses",
        '{"wa_id": "15551234567", "reply_id": "...", "title": "..."}',
    ),
    ("GET", "/control/whatsapp/sent", "?wa_id=15551234567"),
    (
        "POST",
        "/control/email/customer_writes",
        '{"from": "anna@customer.test", "text": "Hello", "subject"?: "Order 55",'
        ' "name"?: "Anna", "in_reply_to"?: "<the Message-ID of a mail the desk sent>"}',
    ),
    ("GET", "/control/email/sent", "[?to=anna@customer.test]"),
    ("GET", "/control/slack/messages", "?channel=C0SUPPORT[&thread_ts=TS]"),
    (
        "POST",
        "/control/slack/agent_replies",
        '{"channel": "C0SUPPORT", "thread_ts": "TS", "user": "U0ALICE", "text": "..."}',
    ),
    (
        "POST",
        "/control/slack/agent_clicks",
        '{"channel": "C0SUPPORT", "message_ts": "TS", "action_id": "ticket_claim",'
        ' "user": "U0ALICE", "value"?: "12:billing"}',
    ),
    (
        "POST",
        "/control/slack/slash_command",
        '{"command": "/desk", "text"?: "mine", "user": "U0ALICE", "channel": "C0SUPPORT"}',
    ),
    (
        "POST",
        "/control/slack/answer_clicks",
        '{"action_id": "kb_send.1", "user": "U0ALICE", "channel"?: "C0SUPPORT"}',
    ),
    ("POST", "/control/slack/opens_home", '{"user": "U0ALICE"}'),
    (
        "POST",
        "/control/slack/clicks_home",
        '{"user": "U0ALICE", "action_id": "home_claim", "value"?: "12"}',
    ),
    ("POST", "/control/slack/modal_types", '{"view_id": "V…", "text": "..."}'),
    (
        "POST",
        "/control/slack/modal_picks",
        '{"view_id": "V…", "action_id": "reply_macro", "value": "Refund on its way"}',
    ),
    ("POST", "/control/slack/modal_submits", '{"view_id": "V…"}'),
    ("POST", "/control/slack/modal_closes", '{"view_id": "V…"}'),
    (
        "POST",
        "/control/slack/message_shortcut",
        '{"channel": "C0SUPPORT", "ts": "TS", "user": "U0ALICE"}',
    ),
    ("GET", "/control/slack/files", ""),
    ("GET", "/control/slack/files/{id}", ""),
    ("POST", "/control/clock/advance", '{"minutes": 30}'),
    (
        "POST",
        "/control/telegram/customer_sends_file",
        '{"chat_id": 42, "kind": "photo" | "document", "file_name"?: "invoice.pdf",'
        ' "content_base64"?: "...", "size"?: 26214400, "caption"?: "...", "first_name"?: "Ann"}',
    ),
    (
        "POST",
        "/control/whatsapp/customer_sends_file",
        '{"wa_id": "15551234567", "kind": "image" | "document", "file_name"?: "invoice.pdf",'
        ' "content_base64"?: "...", "caption"?: "...", "name"?: "Sheena"}',
    ),
    (
        "POST",
        "/control/slack/agent_shares_file",
        '{"channel": "C0SUPPORT", "thread_ts": "TS", "user": "U0ALICE", "file_name"?: "guide.pdf",'
        ' "content_base64"?: "...", "size"?: 62914560, "text"?: "..."}',
    ),
)
USAGE = {path: usage for _, path, usage in ENDPOINTS}
TS_RE = re.compile(r"^\d+\.\d+$")
COMMAND_RE = re.compile(r"^/[a-z0-9_-]+$")
SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}$")
EMAIL_RE = re.compile(r"^[^@\s<>\"]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,}$")
WA_ID_RE = re.compile(r"^[1-9]\d{5,14}$")


# A 1×1 PNG: the file a person sends from the page when they pick none.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MAX_CLAIMED_SIZE = 2 * 1024**3


def _file_kind(value: Any, kinds: tuple[str, ...]) -> str:
    if value in kinds:
        return str(value)
    raise _bad(f"kind must be one of {', '.join(kinds)}, got {value!r}")


def _file(d: Mapping[str, Any], default_name: str) -> tuple[str, bytes, int | None]:
    """(file name, bytes, claimed size) from a control request: ``content_base64`` or a tiny
    made-up file; ``size`` claims a bigger size than the bytes (to try the platforms' limits
    without making a huge file)."""
    name = _name(d.get("file_name"), "file_name") or default_name
    raw = d.get("content_base64")
    if raw in (None, ""):
        content = TINY_PNG if name.lower().endswith(".png") else b"%PDF-1.4 sandbox file\n"
    elif isinstance(raw, str):
        try:
            content = base64.b64decode(raw, validate=True)
        except ValueError:
            raise _bad("content_base64 must be base64") from None
    else:
        raise _bad(f"content_base64 must be a base64 string, got {type(raw).__name__}")
    size = d.get("size")
    if size is None:
        return name, content, None
    claimed = _whole(size, "size", "bytes the file claims to have")
    if not len(content) <= claimed <= MAX_CLAIMED_SIZE:
        raise _bad(f"size must be at least the content's {len(content)} bytes and at most 2 GB")
    return name, content, claimed


def _mimetype(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:200]


def _channel_info(channel: str) -> dict[str, str]:
    """A channel's name for the page; a DM (``D0BOB``) is named after its person: "Bob (DM)"."""
    person = "U" + channel[1:]
    if channel.startswith("D") and person in AGENTS:
        return {"name": f"{AGENTS[person].title()} (DM)", "dm_of": person}
    return {"name": CHANNELS.get(channel, channel)}


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text)


def _whole(value: Any, key: str, what: str) -> int:
    """An integer sent as a JSON number or as digits in a string; anything else is a 400."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    raise _bad(f"{key} must be a number ({what}), got {value!r}")


def _chat_id(value: Any) -> int:
    return _whole(value, "chat_id", "Telegram chat ids are integers")


def _wa_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and WA_ID_RE.match(value):
        return value
    raise _bad(
        "wa_id must be the customer's phone number in digits only, country code first, no +"
        f" or spaces (like 15551234567), got {value!r}"
    )


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(f"text must be a string, got {value!r}")
    text = str(value)
    if not text.strip():
        raise _bad("text must not be blank: the platforms deliver no empty messages")
    return text


def _name(value: Any, key: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string, got {value!r}")
    return value


def _language(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and LANGUAGE_RE.match(value):
        return value
    raise _bad(
        "language_code must be a language tag as the Telegram app sends it (en, zh-hans, pt-br),"
        f" got {value!r}"
    )


def _user(value: Any) -> str:
    if isinstance(value, str) and SLACK_USER_RE.match(value):
        return value
    agents = ", ".join(f"{uid} ({name})" for uid, name in AGENTS.items())
    raise _bad(f"user must be a Slack user id such as U0ALICE (agents: {agents}), got {value!r}")
