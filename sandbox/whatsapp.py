"""A loopback WhatsApp Cloud API: ``POST {base}/{phone-number-id}/messages`` and signed webhooks.

Like Meta's: a wrong token is 401 with an OAuthException envelope (code 190), bad parameters are
400 code 100, too many messages are 429 with code 130429, and sends are accepted first and
reported later in signed ``statuses`` webhooks (``sent``, ``delivered``, or ``failed`` with 131047
outside the 24-hour window, 131026 for an unreachable number). Webhooks the desk does not answer
with 200 are delivered again with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from ._common import Buckets, Deliverer, Failures, Ids, Waiter

WINDOW_SECONDS = 24 * 3600
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
        self.unreachable: set[str] = set()
        self.names: dict[str, str] = {}
        self._last_inbound: dict[str, float] = {}
        self._fail_code = 131000
        self._wamids = Ids(1)
        self._bucket = Buckets(80.0, 80) if rate_limits else None
        self._changed = Waiter()
        self._retry_base = retry_base_delay
        self._deliverer = Deliverer(timeout=10)

    def paced_refusals(self) -> int:
        """Calls refused with 429 because the caller outpaced the platform's limit."""
        return self._bucket.refused if self._bucket is not None else 0

    def install(self, app: web.Application, prefix: str) -> None:
        app.router.add_post(prefix + "/{version}/{phone_id}/messages", self.handle)

    async def close(self) -> None:
        await self._deliverer.close()

    def _wamid(self) -> str:
        return f"{WAMID_PREFIX}{next(self._wamids):08d}{secrets.token_hex(4).upper()}"

    # -- what survives a restart (see sandbox.StandIns) -----------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "names": self.names,
            "last_inbound": self._last_inbound,
            "unreachable": sorted(self.unreachable),
            "next_wamid": self._wamids.next_value,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.sent = list(state.get("sent", []))
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
        self._last_inbound[wa_id] = time.time()
        wamid = self._wamid()
        message = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), **message}
        contact = {"profile": {"name": self.names.get(wa_id, wa_id)}, "wa_id": wa_id}
        self.received.append(message)
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
        return [m for m in self.sent if m.get("to") == wa_id]

    async def wait_for_sent(
        self, wa_id: str, n: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
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
        to = str(body["to"])
        wamid = self._wamid()
        self.sent.append({**body, "id": wamid})
        await self._changed.notify()
        self._deliverer.spawn(self._report(to, wamid))
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
        if not str(body.get("to", "")).isdigit():
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
        else:
            raise bad(f"message type {kind!r} is not supported by the sandbox")

    async def _report(self, to: str, wamid: str) -> None:
        """Statuses arrive later, as Meta sends them: failed, or sent then delivered."""
        base: dict[str, Any] = {"id": wamid, "recipient_id": to}
        now = str(int(time.time()))
        last = self._last_inbound.get(to)
        error: dict[str, Any] | None = None
        if to in self.unreachable:
            error = {"code": 131026, "title": "Message undeliverable"}
        elif last is None or time.time() - last > WINDOW_SECONDS:
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
