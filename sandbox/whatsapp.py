"""A loopback WhatsApp Cloud API: ``POST {base}/{phone-number-id}/messages`` and signed webhooks.

Like Meta's: a wrong token is 401 with an OAuthException envelope (code 190), bad parameters are
400 code 100, too many messages are 429 with code 130429, and sends are accepted first and
reported later in signed ``statuses`` webhooks (``sent``, ``delivered``, or ``failed`` with 131047
outside the 24-hour window, 131026 for an unreachable number). Webhooks the desk does not answer
with 200 are delivered again with backoff. Media: ``GET /{media-id}`` gives a download URL that
serves the bytes for five minutes to the same bearer token; ``POST /{phone-id}/media`` takes a
multipart upload within each type's limit (131053 over it); image and document messages must
name a known media id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ._common import Buckets, Deliverer, Failures, Ids, Waiter

WINDOW_SECONDS = 24 * 3600
MEDIA_URL_SECONDS = 5 * 60
LOOKASIDE = "/lookaside/whatsapp_business/attachments"
MB = 1024 * 1024
# Meta's media limits by type (Cloud API "Supported media types").
MEDIA_LIMITS = {
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "image/webp": 100 * 1024,  # stickers
    "audio/aac": 16 * MB,
    "audio/mp4": 16 * MB,
    "audio/mpeg": 16 * MB,
    "audio/amr": 16 * MB,
    "audio/ogg": 16 * MB,
    "video/mp4": 16 * MB,
    "video/3gpp": 16 * MB,
}
DOCUMENT_MAX = 100 * MB


BSUID = re.compile(r"[A-Z]{2}\.[0-9A-Za-z]{1,128}")


def media_limit(mime: str) -> int | None:
    """The most bytes WhatsApp takes for ``mime``; documents of any other type up to 100 MB."""
    if mime in MEDIA_LIMITS:
        return MEDIA_LIMITS[mime]
    if mime.startswith(("application/", "text/")):
        return DOCUMENT_MAX
    return None


PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


@dataclass
class TemplateSpec:
    """A template as approved in WhatsApp Manager: its body with {{1}}, {{2}}… placeholders."""

    body: str
    status: str = "APPROVED"  # or PAUSED, DISABLED

    @property
    def parameters(self) -> int:
        return len(set(PLACEHOLDER.findall(self.body)))

    def render(self, values: list[str]) -> str:
        return PLACEHOLDER.sub(lambda m: values[int(m.group(1)) - 1], self.body)


WABA_ID = "102290129340398"
WAMID_PREFIX = "wamid.SANDBOX"


class GraphError(Exception):
    def __init__(self, status: int, code: int, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or message

    def response(self, retry_after: float | None = None) -> web.Response:
        body = {
            "error": {
                "message": f"(#{self.code}) {self.message}",
                "type": "OAuthException",
                "code": self.code,
                "error_data": {"messaging_product": "whatsapp", "details": self.details},
                "fbtrace_id": secrets.token_urlsafe(12),
            }
        }
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        return web.json_response(body, status=self.status, headers=headers)


class WhatsAppStandIn:
    def __init__(
        self,
        *,
        access_token: str,
        phone_number_id: str,
        app_secret: str,
        desk_url: str,
        rate_limits: bool = True,
        retry_base_delay: float = 1.0,
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.app_secret = app_secret
        self.webhook_url = desk_url.rstrip("/") + "/whatsapp/webhook"
        self.failures = Failures()
        self.sent: list[dict[str, Any]] = []  # request bodies the desk posted, plus their "id"
        self.received: list[dict[str, Any]] = []  # what customers wrote, as delivered
        self.sent_at: dict[str, float] = {}  # wamid → when the desk sent it (Unix seconds)
        self.unreachable: set[str] = set()
        self.names: dict[str, str] = {}
        self._last_inbound: dict[str, float] = {}
        self._fail_code = 131000
        # Approved templates by (name, language code); see register_template.
        self.templates: dict[tuple[str, str], TemplateSpec] = {}
        # The platform's clock: the 24-hour window and message timestamps count on it. The
        # sandbox makes it the desk's (real time plus the page's fast-forward).
        self.clock: Callable[[], float] = time.time
        # Meta usually accepts a free-form message outside the window and reports 131047 in a
        # "failed" status webhook; set to refuse it on the send instead (also seen).
        self.window_refused_on_send = False
        self._wamids = Ids(1)
        self._bucket = Buckets(80.0, 80) if rate_limits else None
        self._changed = Waiter()
        self._retry_base = retry_base_delay
        self._deliverer = Deliverer(timeout=10)
        self.base_url = ""  # where the stand-in is served, for media URLs
        self._prefix = ""
        self.media: dict[str, dict[str, Any]] = {}  # media id → content, mime_type, filename
        self._media_ids = Ids(1_037_543_291_543_636)
        self._downloads: dict[str, tuple[str, float]] = {}  # URL key → (media id, expiry)

    def paced_refusals(self) -> int:
        """Calls refused with 429 because the caller outpaced the platform's limit."""
        return self._bucket.refused if self._bucket is not None else 0

    def install(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + "/{version}/{phone_id}/messages", self.handle)
        app.router.add_post(prefix + "/{version}/{phone_id}/media", self.upload_media)
        app.router.add_get(prefix + "/{version}/{media_id}", self.media_info)
        app.router.add_get(prefix + LOOKASIDE + "/{key}", self.media_download)
        self._prefix = prefix

    async def close(self) -> None:
        await self._deliverer.close()

    def _wamid(self) -> str:
        return f"{WAMID_PREFIX}{next(self._wamids):08d}{secrets.token_hex(4).upper()}"

    # -- what survives a restart (see sandbox.StandIns) -----------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_at": self.sent_at,
            "received": self.received,
            "names": self.names,
            "last_inbound": self._last_inbound,
            "unreachable": sorted(self.unreachable),
            "next_wamid": self._wamids.next_value,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.sent = list(state.get("sent", []))
        self.sent_at = {str(k): float(v) for k, v in state.get("sent_at", {}).items()}
        self.received = list(state.get("received", []))
        self.names = dict(state.get("names", {}))
        self._last_inbound = {k: float(v) for k, v in state.get("last_inbound", {}).items()}
        self.unreachable = set(state.get("unreachable", []))
        self._wamids.past(int(state.get("next_wamid", 1)) - 1)

    def continue_after(
        self,
        *,
        wamids: Iterable[str] = (),
        last_inbound: Mapping[str, float] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Carry on after message ids and conversations the desk already holds.

        Meta never reuses a wamid; and a customer who wrote within the last 24 hours can still
        be answered after the stand-in restarted, as on the real Cloud API.
        """
        for wamid in wamids:
            wamid = wamid.split(":", 1)[0]  # the desk keys statuses as "<wamid>:<state>"
            number = wamid.removeprefix(WAMID_PREFIX)[:-8]
            if wamid.startswith(WAMID_PREFIX) and number.isdigit():
                self._wamids.past(int(number))
        for wa_id, at in (last_inbound or {}).items():
            self._last_inbound[wa_id] = max(self._last_inbound.get(wa_id, 0.0), at)
        for wa_id, name in (names or {}).items():
            self.names.setdefault(wa_id, name)

    # -- webhooks to the desk --------------------------------------------------------------------

    def sign(self, body: bytes, secret: str | None = None) -> str:
        key = (secret if secret is not None else self.app_secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": self.phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }

    def _retry_delays(self) -> list[float]:
        # Meta retries for up to 7 days with backoff; the stand-in keeps the shape, not the span.
        return [self._retry_base * 2**n for n in range(8)]

    async def deliver_raw(
        self, payload: dict[str, Any] | bytes, *, sign: bool = True, secret: str | None = None
    ) -> int:
        """One delivery of ``payload`` (signed unless told not to); returns the desk's status."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if sign:
            headers["X-Hub-Signature-256"] = self.sign(body, secret)
        status, _ = await self._deliverer.attempt(self.webhook_url, body, headers)
        return status

    async def _deliver(self, payload: dict[str, Any]) -> int:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": self.sign(body)}
        return await self._deliverer.deliver(
            self.webhook_url, lambda _n: (body, headers), self._retry_delays()
        )

    async def verify_webhook(self, token: str, challenge: str) -> tuple[int, str]:
        """Meta's subscription handshake: GET with hub.mode, hub.verify_token, hub.challenge."""
        params = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": challenge}
        session = self._deliverer._client()
        async with session.get(self.webhook_url, params=params) as resp:
            return resp.status, await resp.text()

    # -- the customer's side ---------------------------------------------------------------------

    async def _inbound(self, wa_id: str, name: str | None, message: dict[str, Any]) -> str:
        if name:
            self.names[wa_id] = name
        now = self.clock()
        if message.get("type") != "reaction":  # a reaction does not open the window
            self._last_inbound[wa_id] = now
        wamid = self._wamid()
        message = {"from": wa_id, "id": wamid, "timestamp": str(int(now)), **message}
        contact = {"profile": {"name": self.names.get(wa_id, wa_id)}, "wa_id": wa_id}
        # seen_at: real time, which the sandbox page shifts by the fast-forward of the moment.
        self.received.append({**message, "seen_at": time.time()})
        await self._changed.notify()
        await self._deliver(self._envelope({"contacts": [contact], "messages": [message]}))
        return wamid

    async def customer_says(self, wa_id: str, text: str, name: str | None = None) -> str:
        """The customer writes; returns the message's wamid after the first delivery attempt."""
        return await self._inbound(wa_id, name, {"type": "text", "text": {"body": text}})

    async def customer_presses(
        self, wa_id: str, reply_id: str, title: str, context_id: str | None = None
    ) -> str:
        """The customer taps a reply button or picks a list row of one of the desk's messages."""
        kind = "button_reply"
        for sent in reversed(self.sent_to(wa_id)):
            interactive = sent.get("interactive") or {}
            if interactive.get("type") == "list":
                rows = [r for s in interactive["action"]["sections"] for r in s["rows"]]
                if any(r["id"] == reply_id for r in rows):
                    kind, context_id = "list_reply", context_id or sent["id"]
                    break
            elif interactive.get("type") == "button":
                ids = [b["reply"]["id"] for b in interactive["action"]["buttons"]]
                if reply_id in ids:
                    context_id = context_id or sent["id"]
                    break
        message = {
            "context": {"from": "15550783881", "id": context_id or "wamid.unknown"},
            "type": "interactive",
            "interactive": {"type": kind, kind: {"id": reply_id, "title": title}},
        }
        return await self._inbound(wa_id, None, message)

    async def customer_sends_media(
        self,
        wa_id: str,
        kind: str,
        content: bytes,
        *,
        mime_type: str,
        filename: str | None = None,
        caption: str = "",
        name: str | None = None,
    ) -> str:
        """The customer sends an image or a document (``kind``); returns its wamid."""
        media_id = self.store_media(content, mime_type, filename)
        media: dict[str, Any] = {
            "id": media_id,
            "mime_type": mime_type,
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        if filename and kind == "document":
            media["filename"] = filename
        if caption:
            media["caption"] = caption
        return await self._inbound(wa_id, name, {"type": kind, kind: media})

    # -- media: GET /{media-id}, its download URL (bearer token), POST /{phone-id}/media ------

    def store_media(self, content: bytes, mime_type: str, filename: str | None = None) -> str:
        media_id = str(next(self._media_ids))
        self.media[media_id] = {
            "content": content,
            "mime_type": mime_type,
            "filename": filename,
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        return media_id

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return hmac.compare_digest(auth.encode(), f"Bearer {self.access_token}".encode())

    @staticmethod
    def _bad_token() -> web.Response:
        return GraphError(401, 190, "Error validating access token: Session has expired").response()

    async def media_info(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._bad_token()
        media_id = request.match_info["media_id"]
        found = self.media.get(media_id)
        if found is None:
            return GraphError(
                400,
                100,
                f"Unsupported get request. Object with ID '{media_id}' does not exist",
            ).response()
        # A download URL valid for five minutes, as Meta's are.
        key = secrets.token_urlsafe(16)
        self._downloads[key] = (media_id, time.monotonic() + MEDIA_URL_SECONDS)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base_url}{self._prefix}{LOOKASIDE}/{key}?mid={media_id}",
                "mime_type": found["mime_type"],
                "sha256": found["sha256"],
                "file_size": len(found["content"]),
                "id": media_id,
            }
        )

    async def media_download(self, request: web.Request) -> web.StreamResponse:
        """The media URL: bytes only with the same bearer token, within five minutes."""
        if not self._authorized(request):
            return self._bad_token()
        entry = self._downloads.get(request.match_info["key"])
        if entry is None or entry[1] < time.monotonic():
            return web.Response(status=404, text="URL signature expired")
        found = self.media[entry[0]]
        return web.Response(body=found["content"], content_type=found["mime_type"])

    async def upload_media(self, request: web.Request) -> web.StreamResponse:
        """``POST /{phone-id}/media`` (multipart: messaging_product, type, file) → ``{"id"}``,
        refused with 131053 over the limit of the file's type."""
        if not self._authorized(request):
            return self._bad_token()
        if request.match_info["phone_id"] != self.phone_number_id:
            return GraphError(
                400,
                100,
                "Unsupported post request. Object with ID "
                f"'{request.match_info['phone_id']}' does not exist",
            ).response()
        if request.content_type != "multipart/form-data":
            return GraphError(
                400, 100, "Invalid parameter", "the upload must be multipart"
            ).response()
        form = await request.post()
        if form.get("messaging_product") != "whatsapp":
            return GraphError(
                400, 100, "Invalid parameter", "messaging_product must be whatsapp"
            ).response()
        part = form.get("file")
        if not isinstance(part, web.FileField):
            return GraphError(
                400, 100, "Invalid parameter", "The parameter file is required"
            ).response()
        content = part.file.read()
        mime = str(form.get("type") or part.content_type or "")
        limit = media_limit(mime)
        if limit is None:
            return GraphError(
                400, 131053, "Media upload error", f"Unsupported media type {mime!r}"
            ).response()
        if len(content) > limit:
            return GraphError(
                400,
                131053,
                "Media upload error",
                f"The file is {len(content)} bytes; {mime} media can be at most {limit} bytes",
            ).response()
        media_id = self.store_media(content, mime, part.filename)
        await self._changed.notify()
        return web.json_response({"id": media_id})

    def media_of(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """What a sent image/document message carried: the media (bytes, type, file name)."""
        kind = str(message.get("type"))
        return self.media[str(message[kind]["id"])]

    def register_template(self, name: str, language: str, body: str) -> None:
        """Approve a template (as WhatsApp Manager would): sends must name it with this
        language code and give one body parameter per {{n}}."""
        self.templates[(name, language)] = TemplateSpec(body)

    def set_template_status(self, name: str, status: str) -> None:
        """PAUSED (132015) or DISABLED (132016) every language of ``name``; APPROVED again."""
        for (n, _), spec in self.templates.items():
            if n == name:
                spec.status = status

    def window_open(self, wa_id: str) -> bool:
        last = self._last_inbound.get(wa_id)
        return last is not None and self.clock() - last <= WINDOW_SECONDS

    def rendered(self, message: Mapping[str, Any]) -> str | None:
        """A sent template's text as the customer sees it, or None for other messages."""
        template = message.get("template")
        if message.get("type") != "template" or not isinstance(template, dict):
            return None
        spec = self.templates.get((template["name"], template["language"]["code"]))
        if spec is None:
            return None
        values = [
            str(p.get("text", ""))
            for c in template.get("components") or []
            if c.get("type") == "body"
            for p in c.get("parameters") or []
        ]
        return spec.render(values)

    def make_unreachable(self, wa_id: str) -> None:
        """The number left WhatsApp: sends are accepted, then fail with 131026."""
        self.unreachable.add(wa_id)

    def fail_next(
        self,
        *,
        status: int,
        code: int = 131000,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        self.failures.add("messages", status=status, retry_after=retry_after, times=times)
        self._fail_code = code

    def sent_to(self, wa_id: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if wa_id in (m.get("to"), m.get("recipient"))]

    async def wait_for_sent(
        self, wa_id: str, n: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The messages sent to the customer, once there are ``n``. The default wait bounds a
        hang and measures nothing: a reply's chain (Slack event, inbox, step, outbox, send) on a
        loaded CI machine once took longer than 10 s."""
        if not await self._changed.wait_for(lambda: len(self.sent_to(wa_id)) >= n, timeout):
            raise AssertionError(f"{wa_id} got {len(self.sent_to(wa_id))} of {n} messages")
        return self.sent_to(wa_id)

    # -- the Graph API -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.access_token}".encode()):
            return GraphError(
                401, 190, "Error validating access token: Session has expired"
            ).response()
        if request.match_info["phone_id"] != self.phone_number_id:
            return GraphError(
                400,
                100,
                "Unsupported post request. Object with ID "
                f"'{request.match_info['phone_id']}' does not exist",
            ).response()
        failure = self.failures.take("messages")
        if failure is not None:
            code = 130429 if failure.status == 429 else self._fail_code
            return GraphError(failure.status, code, "Injected failure").response(
                failure.retry_after
            )
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return GraphError(400, 100, "Invalid parameter", "the body is not JSON").response()
        try:
            self._validate(body)
        except GraphError as exc:
            return exc.response()
        if self._bucket is not None and self._bucket.take("number") > 0:
            return GraphError(
                429, 130429, "Rate limit hit", "Cloud API message throughput has been reached."
            ).response(1)
        to = str(body.get("to") or body.get("recipient"))
        wamid = self._wamid()
        shown = self.rendered(body)  # a template as the customer reads it (the sandbox page)
        self.sent.append({**body, "id": wamid, **({"rendered": shown} if shown else {})})
        self.sent_at[wamid] = time.time()
        await self._changed.notify()
        self._deliverer.spawn(self._report(to, wamid, template=body.get("type") == "template"))
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    def _validate(self, body: dict[str, Any]) -> None:
        def bad(details: str) -> GraphError:
            return GraphError(400, 100, "Invalid parameter", details)

        if body.get("messaging_product") != "whatsapp":
            raise bad("messaging_product must be whatsapp")
        # A customer known only by their business-scoped user id (a username user, no number)
        # is addressed with ``recipient`` instead of ``to``.
        if "recipient" in body and "to" not in body:
            if not BSUID.fullmatch(str(body["recipient"])):
                raise bad("recipient must be a business-scoped user id")
        elif not str(body.get("to", "")).isdigit():
            raise bad("to must be a phone number")
        kind = body.get("type", "text")
        if kind == "text":
            text = (body.get("text") or {}).get("body", "")
            if not text:
                raise bad("text.body is required")
            if len(text) > 4096:
                raise bad("text.body is longer than 4096 characters")
        elif kind == "interactive":
            interactive = body.get("interactive") or {}
            if len((interactive.get("body") or {}).get("text", "")) > 1024:
                raise bad("interactive.body.text is longer than 1024 characters")
            action = interactive.get("action") or {}
            if interactive.get("type") == "button":
                buttons = action.get("buttons") or []
                if not 1 <= len(buttons) <= 3:
                    raise bad("buttons must have 1-3 items")
                for b in buttons:  # each {"type": "reply", "reply": {"id", "title"}}
                    reply = b.get("reply") if isinstance(b, dict) else None
                    if b.get("type") != "reply" or not isinstance(reply, dict):
                        raise bad("each button must be of type reply with a reply object")
                    if not 1 <= len(str(reply.get("id", ""))) <= 256 or not reply.get("title"):
                        raise bad("a reply button needs an id of 1-256 characters and a title")
                titles = [b["reply"]["title"] for b in buttons]
                if any(len(t) > 20 for t in titles) or len(set(titles)) != len(titles):
                    raise bad("button titles must be unique and at most 20 characters")
            elif interactive.get("type") == "list":
                rows = [r for s in action.get("sections") or [] for r in s.get("rows") or []]
                if not 1 <= len(rows) <= 10:
                    raise bad("a list must have 1-10 rows")
                if not action.get("button") or any(len(r["title"]) > 24 for r in rows):
                    raise bad("list needs a button; row titles at most 24 characters")
            else:
                raise bad(f"interactive type {interactive.get('type')!r} is not supported here")
        elif kind in ("image", "document"):
            media = body.get(kind)
            if not isinstance(media, dict) or not (media.get("id") or media.get("link")):
                raise bad(f"{kind} needs an id or a link")
            if media.get("id") and str(media["id"]) not in self.media:
                raise bad(f"{kind}.id is not a media id of this business")
            if len(str(media.get("caption", ""))) > 1024:
                raise bad(f"{kind}.caption is longer than 1024 characters")
        elif kind == "template":
            self._validate_template(body.get("template"))
        else:
            raise bad(f"message type {kind!r} is not supported by the sandbox")
        to = str(body.get("to") or body.get("recipient"))
        if kind != "template" and self.window_refused_on_send and not self.window_open(to):
            raise GraphError(
                400,
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the"
                " customer last replied to this number.",
            )

    def _validate_template(self, template: Any) -> None:
        """As the Cloud API checks a template message (error codes of Meta's reference)."""
        if not isinstance(template, dict) or not template.get("name"):
            raise GraphError(400, 100, "Invalid parameter", "template.name is required")
        language = (template.get("language") or {}).get("code")
        if not language:
            raise GraphError(400, 100, "Invalid parameter", "template.language.code is required")
        spec = self.templates.get((str(template["name"]), str(language)))
        if spec is None:
            raise GraphError(
                404,
                132001,
                "Template name does not exist in the translation",
                f"template name ({template['name']}) does not exist in {language}",
            )
        if spec.status == "PAUSED":
            raise GraphError(400, 132015, "Template is paused", "Template is paused")
        if spec.status == "DISABLED":
            raise GraphError(400, 132016, "Template is disabled", "Template is disabled")
        given = [
            p
            for c in template.get("components") or []
            if isinstance(c, dict) and c.get("type") == "body"
            for p in c.get("parameters") or []
        ]
        if len(given) != spec.parameters or any(not str(p.get("text", "")) for p in given):
            raise GraphError(
                400,
                132000,
                "Number of parameters does not match the expected number of params",
                f"body: number of localizable_params ({len(given)}) does not match the"
                f" expected number of params ({spec.parameters})",
            )

    async def _report(self, to: str, wamid: str, *, template: bool = False) -> None:
        """Statuses arrive later, as Meta sends them: failed, or sent then delivered."""
        base: dict[str, Any] = {"id": wamid, "recipient_id": to}
        now = str(int(self.clock()))
        error: dict[str, Any] | None = None
        if to in self.unreachable:
            error = {"code": 131026, "title": "Message undeliverable"}
        elif not template and not self.window_open(to):
            error = {"code": 131047, "title": "Re-engagement message"}
        if error is not None:
            error["message"] = error["title"]
            status = {**base, "status": "failed", "timestamp": now, "errors": [error]}
            await self._deliver(self._envelope({"statuses": [status]}))
            return
        for state in ("sent", "delivered"):
            await self._deliver(
                self._envelope({"statuses": [{**base, "status": state, "timestamp": now}]})
            )
