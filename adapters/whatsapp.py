"""WhatsApp Cloud API over plain HTTP (aiohttp): a signed webhook in, Graph API calls out.

``GET /whatsapp/webhook`` answers Meta's verification handshake. ``POST /whatsapp/webhook``
checks ``X-Hub-Signature-256`` over the exact bytes received before anything is parsed, turns
every entry/change into events (a delivery may carry several messages and statuses) and commits
them all with one ``inbox.accept`` before answering 200. Meta retries anything else for up to
seven days; the inbox dedupes on the message id (statuses on ``id:status``).

:meth:`WhatsAppAdapter.send` posts to ``{api_base}/{phone_number_id}/messages`` and maps Graph
error envelopes onto the desk's typed errors.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from adapters._common import (
    BodyRefused,
    BodyTooLarge,
    as_mapping,
    as_str,
    bad_request,
    digest_id,
    parse_json_object,
    read_body,
    too_large,
    unavailable,
)
from bot.base.settings import WhatsAppSettings
from bot.delivery.inbox import Inbox
from bot.domain.events import (
    Attachment,
    Channel,
    CustomerButton,
    CustomerEdit,
    CustomerMessage,
    CustomerNumberChanged,
    CustomerReaction,
    DeliveryStatus,
    Event,
    Ignored,
    Sender,
    Shared,
)
from bot.domain.files import SLACK_UPLOAD_MAX
from bot.domain.outbound import (
    BadRequest,
    Delivery,
    DeliveryError,
    FileContent,
    FileRef,
    Forbidden,
    Outbound,
    RetryAfter,
    TemplateRefused,
    Unavailable,
    WindowClosed,
)
from bot.domain.window import TEMPLATE_ERROR_CODES, WINDOW_CLOSED_CODE

log = logging.getLogger("deskbot.adapters.whatsapp")

ROUTE = "/whatsapp/webhook"
SIGNATURE_HEADER = "X-Hub-Signature-256"
MEDIA_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")  # Graph media ids are digits

# Graph error codes (protocols.md §2.3).
RATE_LIMIT_CODES = frozenset({130429, 131056, 4, 80007})
UNDELIVERABLE_CODES = frozenset({131026})

# WhatsApp's limits on interactive messages.
MAX_REPLY_BUTTONS = 3
MAX_LIST_ROWS = 10
BUTTON_TITLE_MAX = 20
LIST_ROW_TITLE_MAX = 24
BODY_MAX = 1024
TEXT_MAX = 4096
LIST_BUTTON_LABEL = "Choose"

MEDIA_KINDS: dict[str, Literal["image", "document", "audio", "video", "sticker", "voice"]] = {
    "image": "image",
    "document": "document",
    "audio": "audio",
    "video": "video",
    "sticker": "sticker",
}
STATUSES: dict[str, Literal["sent", "delivered", "read", "failed"]] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
}


# --------------------------------------------------------------------------------------------
# Signatures


def signature_for(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(app_secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(signature_for(app_secret, body).encode(), header.encode())


# --------------------------------------------------------------------------------------------
# Pure parsing: one webhook body → events


def _error_text(error: Mapping[str, Any]) -> str:
    code = as_str(error.get("code"))
    title = as_str(error.get("title")) or as_str(error.get("message"))
    return f"{code} {title}".strip()


def parse_webhook(body: Mapping[str, Any]) -> list[Event]:
    """Every message, status and error in a delivery; unknown parts become Ignored events."""
    if body.get("object") != "whatsapp_business_account":
        return [_ignored(digest_id("object", body), None, f"object {body.get('object')!r}")]
    events: list[Event] = []
    entries = body.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        entry = as_mapping(entry)
        changes = entry.get("changes")
        for change in changes if isinstance(changes, list) else []:
            change = as_mapping(change)
            events.extend(parse_change(change))
    if not events:
        events.append(_ignored(digest_id("empty", body), None, "delivery without changes"))
    return events


def parse_change(change: Mapping[str, Any]) -> list[Event]:
    value = as_mapping(change.get("value"))
    field = as_str(change.get("field"))
    if field != "messages":
        return [_ignored(digest_id("change", change), None, f"field {field or 'unknown'}")]
    people = _people(_list(value.get("contacts")))
    events: list[Event] = []
    errors = _list(value.get("errors"))
    for message in _list(value.get("messages")):
        if errors and not message.get("errors"):
            # A message WhatsApp could not read arrives with the delivery's errors beside it.
            message = {**message, "errors": errors}
        events.append(parse_message(message, people))
    for status in _list(value.get("statuses")):
        events.append(parse_status(status))
    for error in errors:
        events.append(
            _ignored(digest_id("error", error), None, f"platform error {_error_text(error)}")
        )
    if not events:
        events.append(_ignored(digest_id("change", change), None, "change without messages"))
    return events


class _Person:
    """What ``value.contacts[]`` says about a sender: their profile name and username, and
    their business-scoped user id (``user_id``, sent since 2026; the only id of a customer who
    hides their number behind a username)."""

    def __init__(self, contact: Mapping[str, Any]) -> None:
        profile = as_mapping(contact.get("profile"))
        self.wa_id = as_str(contact.get("wa_id"))
        self.user_id = as_str(contact.get("user_id"))
        self.name = as_str(profile.get("name"))
        self.username = as_str(profile.get("username")) or as_str(contact.get("username"))


def _people(contacts: list[Mapping[str, Any]]) -> dict[str, _Person]:
    people: dict[str, _Person] = {}
    for contact in contacts:
        person = _Person(contact)
        for key in (person.wa_id, person.user_id):
            if key:
                people[key] = person
    return people


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [as_mapping(v) for v in value] if isinstance(value, list) else []


def _ignored(external_id: str, wa_id: str | None, reason: str) -> Ignored:
    return Ignored(
        channel="whatsapp",
        external_id=external_id,
        conversation=f"whatsapp:{wa_id}" if wa_id else "whatsapp:ignored",
        reason=reason,
    )


def _sender_id(message: Mapping[str, Any], people: Mapping[str, _Person]) -> str:
    """The phone number (``from``) when WhatsApp gives it; else the business-scoped user id of
    a customer who hides their number (``from_user_id``, or the delivery's only contact)."""
    found = as_str(message.get("from")) or as_str(message.get("from_user_id"))
    if found:
        return found
    ids = {p.user_id for p in people.values() if p.user_id}
    return ids.pop() if len(ids) == 1 else ""


def _is_phone(external_id: str) -> bool:
    return external_id.isdigit()


def map_link(latitude: Any, longitude: Any) -> str:
    return f"https://maps.google.com/?q={latitude},{longitude}"


def describe_location(location: Mapping[str, Any]) -> str:
    lat, lng = location.get("latitude"), location.get("longitude")
    place = ", ".join(
        part for part in (as_str(location.get("name")), as_str(location.get("address"))) if part
    )
    lines = ["📍 Shared a location" + (f": {place}" if place else "")]
    if isinstance(lat, int | float) and isinstance(lng, int | float):
        lines.append(map_link(lat, lng))
    url = as_str(location.get("url"))
    if url:
        lines.append(url)
    return "\n".join(lines)


def describe_contacts(cards: list[Mapping[str, Any]]) -> str:
    lines = ["👤 Shared a contact:" if len(cards) == 1 else f"👤 Shared {len(cards)} contacts:"]
    for card in cards:
        name = as_mapping(card.get("name"))
        who = as_str(name.get("formatted_name")) or " ".join(
            p for p in (as_str(name.get("first_name")), as_str(name.get("last_name"))) if p
        )
        numbers = [
            as_str(p.get("phone"))
            + (f" ({as_str(p.get('type')).lower()})" if p.get("type") else "")
            for p in _list(card.get("phones"))
            if as_str(p.get("phone"))
        ]
        lines.append(f"• {who or 'no name'}: {', '.join(numbers) or 'no number'}")
    return "\n".join(lines)


def describe_order(order: Mapping[str, Any]) -> str:
    lines = ["🛒 Sent an order:"]
    for item in _list(order.get("product_items")):
        price = item.get("item_price")
        each = f" at {price} {as_str(item.get('currency'))}".rstrip() if price is not None else ""
        lines.append(
            f"• {item.get('quantity', 1)} × {as_str(item.get('product_retailer_id')) or '?'}{each}"
        )
    note = as_str(order.get("text"))
    if note:
        lines.append(note)
    catalog = as_str(order.get("catalog_id"))
    if catalog:
        lines.append(f"(catalog {catalog})")
    return "\n".join(lines)


def describe_undeliverable(message: Mapping[str, Any], mtype: str) -> str:
    errors = _list(message.get("errors"))
    title = ""
    if errors:
        title = as_str(errors[0].get("title")) or as_str(errors[0].get("message"))
    what = as_str(as_mapping(message.get("unsupported")).get("type"))
    return (
        "⚠️ Sent something WhatsApp cannot deliver to the desk"
        + (f" (a {what})" if what else "")
        + f": {title or mtype}. Ask them to send it as text or a photo."
    )


def _sent_at(message: Mapping[str, Any]) -> datetime | None:
    """The message's ``timestamp`` (Unix seconds, as a string): the 24-hour window counts from
    it. None when missing or not a plausible time."""
    raw = as_str(message.get("timestamp"))
    if not raw.isdigit() or not 0 < int(raw) < 2**33:
        return None
    return datetime.fromtimestamp(int(raw), UTC)


def parse_message(message: Mapping[str, Any], people: Mapping[str, _Person]) -> Event:
    wamid = as_str(message.get("id")) or digest_id("message", message)
    mtype = as_str(message.get("type")) or "unknown"
    wa_id = _sender_id(message, people)
    if not wa_id:
        return _ignored(wamid, None, f"message {mtype} without sender")
    person = people.get(wa_id)
    sender = Sender(
        external_id=wa_id,
        name=person.name if person else "",
        username=(person.username or None) if person else None,
        phone=wa_id if _is_phone(wa_id) else None,
    )
    common: dict[str, Any] = {
        "channel": "whatsapp",
        "external_id": wamid,
        "conversation": f"whatsapp:{wa_id}",
        "sender": sender,
        "chat_id": wa_id,
        "sent_at": _sent_at(message),
    }

    def said(text: str, shared: Shared | None = None) -> CustomerMessage:
        return CustomerMessage(**common, platform_message_id=wamid, text=text, shared=shared)

    if mtype == "text":
        return said(as_str(as_mapping(message.get("text")).get("body")))
    if mtype in MEDIA_KINDS:
        media = as_mapping(message.get(mtype))
        media_id = as_str(media.get("id"))
        if not media_id:
            return _ignored(wamid, wa_id, f"message {mtype} without media id")
        kind = "voice" if mtype == "audio" and media.get("voice") else MEDIA_KINDS[mtype]
        attachment = Attachment(
            kind=kind,
            file_id=media_id,
            name=as_str(media.get("filename")) or None,
            mime_type=as_str(media.get("mime_type")) or None,
        )
        return CustomerMessage(
            **common,
            platform_message_id=wamid,
            text=as_str(media.get("caption")),
            attachments=(attachment,),
        )
    if mtype == "location":
        return said(describe_location(as_mapping(message.get("location"))), "location")
    if mtype == "contacts":
        return said(describe_contacts(_list(message.get("contacts"))), "contact")
    if mtype == "order":
        return said(describe_order(as_mapping(message.get("order"))), "order")
    if mtype == "reaction":
        reaction = as_mapping(message.get("reaction"))
        reacted_to = as_str(reaction.get("message_id"))
        if not reacted_to:
            return _ignored(wamid, wa_id, "reaction without the message it is on")
        return CustomerReaction(
            **common, reacted_to=reacted_to, emoji=as_str(reaction.get("emoji"))
        )
    if mtype == "interactive":
        interactive = as_mapping(message.get("interactive"))
        itype = as_str(interactive.get("type"))
        if itype in ("button_reply", "list_reply"):
            reply = as_mapping(interactive.get(itype))
            return CustomerButton(
                **common, data=as_str(reply.get("id")), title=as_str(reply.get("title"))
            )
        if message.get("errors"):
            return said(describe_undeliverable(message, f"interactive {itype}"), "unsupported")
        # nfm_reply (a WhatsApp Flow's answer), call_permission_reply: the desk sends neither.
        return _ignored(wamid, wa_id, f"interactive {itype or 'unknown'}: the desk sends none")
    if mtype == "button":
        # A quick-reply button on a template message. The desk sends no templates (its own
        # buttons come back as interactive replies), so the label the customer chose is what
        # they said to us.
        button = as_mapping(message.get("button"))
        return said(as_str(button.get("text")) or as_str(button.get("payload")))
    if mtype == "edit":
        edit = as_mapping(message.get("edit"))
        original = as_str(edit.get("original_message_id"))
        edited = as_mapping(edit.get("message"))
        etype = as_str(edited.get("type"))
        body = as_mapping(edited.get(etype))
        text = as_str(body.get("body")) or as_str(body.get("caption"))
        if not original:
            return _ignored(wamid, wa_id, "edit without the message it edits")
        return CustomerEdit(**common, platform_message_id=original, text=text)
    if mtype == "system":
        system = as_mapping(message.get("system"))
        stype = as_str(system.get("type"))
        new_id = as_str(system.get("wa_id"))
        if stype == "user_changed_number" and new_id and new_id != wa_id:
            return CustomerNumberChanged(**common, new_id=new_id, text=as_str(system.get("body")))
        return _ignored(
            wamid,
            wa_id,
            f"system {stype or 'unknown'}: only a changed number needs the desk"
            " (a changed security code does not)",
        )
    if mtype == "revoke":
        return _ignored(
            wamid, wa_id, "revoke: the customer deleted a message for everyone; the desk keeps it"
        )
    if mtype in ("unsupported", "unknown") or message.get("errors"):
        return said(describe_undeliverable(message, mtype), "unsupported")
    return _ignored(wamid, wa_id, f"message type {mtype}")


def parse_status(status: Mapping[str, Any]) -> Event:
    wamid = as_str(status.get("id"))
    state = as_str(status.get("status"))
    recipient = as_str(status.get("recipient_id")) or None
    external_id = f"{wamid}:{state}" if wamid else digest_id("status", status)
    known = STATUSES.get(state)
    if not wamid or known is None:
        return _ignored(external_id, recipient, f"status {state or 'unknown'}")
    error = None
    if state == "failed":
        errors = _list(status.get("errors"))
        error = _error_text(errors[0]) if errors else "failed"
    return DeliveryStatus(
        channel="whatsapp",
        external_id=external_id,
        conversation=f"whatsapp:{recipient}" if recipient else "whatsapp:statuses",
        platform_message_id=wamid,
        status=known,
        error=error,
    )


# --------------------------------------------------------------------------------------------
# Outbound bodies and error mapping


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def addressed(destination: str) -> dict[str, Any]:
    """The start of every send: a phone number goes in ``to``; a customer WhatsApp gave us no
    number for (a username user) is addressed by their business-scoped user id, which the
    Cloud API takes in ``recipient`` instead."""
    base: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if _is_phone(destination):
        base["to"] = destination
    else:
        base["recipient"] = destination
    return base


def message_body(message: Outbound) -> dict[str, Any]:
    """The Graph API JSON for one Outbound of kind "text"."""
    base = addressed(message.destination)
    buttons = message.buttons
    if not buttons:
        return {**base, "type": "text", "text": {"body": message.text}}
    body = {"text": _clip(message.text, BODY_MAX) or " "}
    if len(buttons) <= MAX_REPLY_BUTTONS:
        action: dict[str, Any] = {
            "buttons": [
                {"type": "reply", "reply": {"id": b.data, "title": _clip(b.text, BUTTON_TITLE_MAX)}}
                for b in buttons
            ]
        }
        return {
            **base,
            "type": "interactive",
            "interactive": {"type": "button", "body": body, "action": action},
        }
    if len(buttons) <= MAX_LIST_ROWS:
        # WhatsApp caps reply buttons at 3, and the 1-5 rating after Resolve needs 5: from 4
        # options on, the choices go into a list message (one section, up to 10 rows). The
        # customer's pick comes back as a list_reply carrying the row id, like a button.
        rows = [{"id": b.data, "title": _clip(b.text, LIST_ROW_TITLE_MAX)} for b in buttons]
        action = {"button": LIST_BUTTON_LABEL, "sections": [{"rows": rows}]}
        return {
            **base,
            "type": "interactive",
            "interactive": {"type": "list", "body": body, "action": action},
        }
    raise BadRequest(f"WhatsApp offers at most {MAX_LIST_ROWS} choices, got {len(buttons)}")


def template_body(message: Outbound) -> dict[str, Any]:
    """The Graph API JSON for an approved template, its body parameters as text."""
    template = message.template
    if template is None:
        raise BadRequest("template needs the template")
    body: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        body["components"] = [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": p} for p in template.parameters],
            }
        ]
    return {**addressed(message.destination), "type": "template", "template": body}


def map_graph_error(status: int, payload: Any, headers: Mapping[str, str]) -> DeliveryError:
    error = as_mapping(as_mapping(payload).get("error"))
    code_raw = error.get("code")
    code = code_raw if isinstance(code_raw, int) else None
    message = as_str(error.get("message")) or f"http {status}"
    detail = f"{code}: {message}" if code is not None else message
    if status == 429 or code in RATE_LIMIT_CODES:
        raw = headers.get("Retry-After")
        try:
            seconds = max(float(raw), 0.0) if raw else 1.0
        except ValueError:
            seconds = 1.0
        return RetryAfter(seconds, detail)
    if code in UNDELIVERABLE_CODES:
        return Forbidden(detail)
    if code == WINDOW_CLOSED_CODE:  # more than 24 h since the customer wrote: templates only
        return WindowClosed(detail)
    if code in TEMPLATE_ERROR_CODES:
        return TemplateRefused(detail)
    if status >= 500:
        return Unavailable(detail)
    # Bad parameters, an expired token...: sending the same thing again will not help.
    return BadRequest(detail)


# --------------------------------------------------------------------------------------------
# The adapter


class WhatsAppAdapter:
    channel: Channel = "whatsapp"

    def __init__(
        self,
        settings: WhatsAppSettings,
        inbox: Inbox,
        *,
        max_body_bytes: int,
        request_timeout: float = 30.0,
    ) -> None:
        self._settings = settings
        self._inbox = inbox
        self._max_body = max_body_bytes
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._started = False

    @property
    def messages_url(self) -> str:
        return f"{self._settings.api_base.rstrip('/')}/{self._settings.phone_number_id}/messages"

    @property
    def started(self) -> bool:
        return self._started

    # -- lifecycle ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.router.add_get(ROUTE, self.verify)
        app.router.add_post(ROUTE, self.handle)

    async def start(self) -> None:
        # Nothing to connect: Meta calls us, and credentials show on the first send. Checking
        # the token here would need a Graph call that the sandbox and tests need not serve.
        self._started = True
        log.info("whatsapp.started phone_number_id=%s", self._settings.phone_number_id)

    async def stop(self) -> None:
        was_started, self._started = self._started, False  # stopped twice: logged once
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
        if was_started:
            log.info("whatsapp.stopped")

    # -- inbound -----------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> web.StreamResponse:
        mode = request.query.get("hub.mode", "")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if mode == "subscribe" and hmac.compare_digest(
            token.encode(), self._settings.verify_token.encode()
        ):
            log.info("whatsapp.webhook_verified")
            return web.Response(text=challenge, content_type="text/plain")
        log.warning("whatsapp.verify_rejected mode=%s", mode or "-")
        return web.Response(status=403, text="verification failed")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request, self._max_body)
        except BodyTooLarge:
            log.warning("whatsapp.rejected reason=too_large")
            return too_large(self._max_body)
        except BodyRefused as exc:
            log.warning("whatsapp.rejected reason=%s", exc.reason)
            return exc.response()
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            log.warning("whatsapp.rejected reason=missing_signature")
            return web.json_response({"error": "missing signature"}, status=401)
        if not signature_ok(self._settings.app_secret, body, header):
            log.warning("whatsapp.rejected reason=bad_signature")
            return web.json_response({"error": "invalid signature"}, status=403)
        try:
            data = parse_json_object(body)
        except ValueError:
            log.warning("whatsapp.rejected reason=malformed_json")
            return bad_request("malformed JSON")
        events = parse_webhook(data)
        try:
            await self._inbox.accept(events, data)
        except Exception:
            log.exception("whatsapp.inbox_failed events=%d", len(events))
            return unavailable()
        for event in events:
            log.info(
                "whatsapp.event_accepted kind=%s external_id=%s", event.kind, event.external_id
            )
        return web.Response(status=200)

    # -- outbound ----------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        # Made lazily: the outbox may send before start(), and a session belongs to a loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._settings.access_token}"}

    @property
    def _api_base(self) -> str:
        return self._settings.api_base.rstrip("/")

    async def fetch_file(self, ref: FileRef) -> FileContent:
        """A customer's media: ``GET /{media-id}`` gives a short-lived URL (and the size, checked
        against Slack's limit before the download), then ``GET`` that URL with the same bearer
        token gives the bytes."""
        if not MEDIA_ID.fullmatch(ref.file_id):  # from a webhook: never let it shape the URL
            raise BadRequest("not a WhatsApp media id")
        try:
            session = self._client()
            async with session.get(f"{self._api_base}/{ref.file_id}", headers=self._auth) as resp:
                status, headers = resp.status, dict(resp.headers)
                try:
                    info: Any = await resp.json(content_type=None)
                except ValueError:
                    info = None
            if status >= 400:
                raise map_graph_error(status, info, headers)
            url = as_str(as_mapping(info).get("url"))
            if not url:
                raise BadRequest("the media has no download url")
            size = as_mapping(info).get("file_size")
            if isinstance(size, int) and size > SLACK_UPLOAD_MAX:
                raise BadRequest("the file is over Slack's 1 GB limit")
            async with session.get(url, headers=self._auth) as resp:
                if resp.status >= 400:
                    try:
                        error: Any = await resp.json(content_type=None)
                    except ValueError:
                        error = None
                    raise map_graph_error(resp.status, error, dict(resp.headers))
                data = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        mime = as_str(as_mapping(info).get("mime_type")) or ref.mime_type
        mime = mime or "application/octet-stream"
        name = ref.name or f"{ref.kind}{mimetypes.guess_extension(mime) or ''}"
        return FileContent(data=data, name=name, mime_type=mime)

    async def _post(self, url: str, **kwargs: Any) -> Any:
        """POST to the Graph API; the JSON answer, or the typed error of its envelope."""
        try:
            async with self._client().post(url, headers=self._auth, **kwargs) as resp:
                status = resp.status
                resp_headers = dict(resp.headers)
                try:
                    data: Any = await resp.json(content_type=None)
                except ValueError:
                    data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise map_graph_error(status, data, resp_headers)
        return data

    async def _media_body(self, message: Outbound) -> dict[str, Any]:
        """An agent's file: uploaded first (``POST /{phone-number-id}/media``, multipart), then
        sent by its media id as an image or a document, as bot.domain.files decided from the
        limits."""
        if message.file is None or message.content is None:
            raise BadRequest("file needs the file and its content")
        content = message.content
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", content.mime_type)
        form.add_field("file", content.data, filename=content.name, content_type=content.mime_type)
        url = f"{self._api_base}/{self._settings.phone_number_id}/media"
        media_id = as_str(as_mapping(await self._post(url, data=form)).get("id"))
        if not media_id:
            raise Unavailable("the media upload gave no id")
        kind = "image" if message.file.kind == "image" else "document"
        media: dict[str, Any] = {"id": media_id}
        if kind == "document":
            media["filename"] = content.name
        if message.text:
            media["caption"] = _clip(message.text, BODY_MAX)
        return {**addressed(message.destination), "type": kind, kind: media}

    async def send(self, message: Outbound) -> Delivery:
        if message.kind == "answer_callback":
            return Delivery()  # WhatsApp buttons need no answer
        if message.kind == "file":
            payload = await self._media_body(message)
        elif message.kind == "text":
            payload = message_body(message)
        elif message.kind == "template":
            payload = template_body(message)
        else:
            raise BadRequest(f"whatsapp cannot send {message.kind}")
        headers = self._auth
        try:
            async with self._client().post(
                self.messages_url, json=payload, headers=headers
            ) as resp:
                status = resp.status
                resp_headers = dict(resp.headers)
                try:
                    data: Any = await resp.json(content_type=None)
                except ValueError:
                    data = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if status >= 400:
            raise map_graph_error(status, data, resp_headers)
        messages = as_mapping(data).get("messages")
        if isinstance(messages, list) and messages:
            return Delivery(platform_message_id=as_str(as_mapping(messages[0]).get("id")) or None)
        # 2xx means accepted: sending again would risk a duplicate, so take it without an id.
        log.warning("whatsapp.send_without_id status=%d", status)
        return Delivery()
