"""A loopback Telegram Bot API: ``{base}/bot<token>/<method>``, as the reference server answers.

Strict where the real one is: a wrong token is 401, an unknown method 404, sending to a chat that
never wrote is 400 ``chat not found``, a blocked chat is 403, too many messages are 429 with
``retry_after``, a second poller or a poll while a webhook is set is 409. Updates wait until a
later ``getUpdates`` offset confirms them, so a desk that dies mid-batch sees them again.
Files: ``getFile`` (400 ``invalid file_id``, ``file is too big`` over 20 MB) and the file
endpoint ``{base}/file/bot<token>/<file_path>``; ``sendPhoto``/``sendDocument`` take multipart
uploads (``attach://`` too): ``PHOTO_SAVE_FILE_INVALID`` over 10 MB, 413 over 50 MB.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from ._common import (
    Buckets,
    Deliverer,
    Failures,
    Ids,
    Waiter,
    json_field,
    multipart_files,
    request_params,
)

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TEXT = 4096
MAX_CAPTION = 1024
MB = 1024 * 1024
MAX_DOWNLOAD = 20 * MB  # getFile: "file is too big" above this
MAX_PHOTO = 10 * MB  # sendPhoto
MAX_UPLOAD = 50 * MB  # sendDocument and any multipart upload
UPLOADS = "__uploads__"  # the multipart files of a request, kept beside its fields
BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "Desk", "username": "deskbot_sandbox_bot"}


class TelegramError(Exception):
    def __init__(self, code: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": max(1, round(self.retry_after))}
        return web.json_response(body, status=self.code)


class TelegramStandIn:
    def __init__(
        self,
        token: str,
        *,
        rate_limits: bool = True,
        retry_base_delay: float = 1.0,
    ) -> None:
        self.token = token
        self.failures = Failures()
        self.updates: list[dict[str, Any]] = []  # pending, not yet confirmed by an offset
        self.sent: list[dict[str, Any]] = []  # every message the bot sent, in order
        self.received: list[dict[str, Any]] = []  # every message customers wrote, in order
        self.answered_callbacks: list[dict[str, Any]] = []
        self.blocked: set[int] = set()
        self.webhook: dict[str, Any] | None = None
        self.commands: dict[str, list[dict[str, str]]] = {}  # language_code ("" = default) → menu
        self.calls: list[str] = []  # method names, in order
        self.files: dict[str, dict[str, Any]] = {}  # file_id → file_path, content, file_size
        self._known_chats: dict[int, dict[str, Any]] = {}
        self._callbacks: set[str] = set()
        self._update_ids = Ids(100_001)
        self._message_ids = Ids(1)
        self._chat_buckets = Buckets(1.0, 4) if rate_limits else None
        self._total_bucket = Buckets(30.0, 30) if rate_limits else None
        self._changed = Waiter()
        self._poller = 0  # generation of the newest getUpdates, to end older ones with 409
        self._retry_base = retry_base_delay
        self._deliverer = Deliverer(timeout=10)
        self._pusher: asyncio.Task[None] | None = None
        self._holds: dict[str, int] = {}  # method → how many answers to hold back
        self._release = asyncio.Event()

    def paced_refusals(self) -> int:
        """Calls refused with 429 because the caller outpaced the platform's limit."""
        buckets = (self._chat_buckets, self._total_bucket)
        return sum(b.refused for b in buckets if b is not None)

    def install(self, app: web.Application, prefix: str) -> None:
        app.router.add_route("*", prefix + "/bot{token}/{method}", self.handle)
        app.router.add_get(prefix + "/file/bot{token}/{path:.+}", self.download)

    async def close(self) -> None:
        self._release.set()
        # End a pending long poll now: the server's shutdown would wait out its timeout.
        self._poller += 1
        await self._changed.notify()
        if self._pusher is not None:
            self._pusher.cancel()
        await self._deliverer.close()

    # -- what survives a restart (see sandbox.StandIns) -----------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The chats, messages, unconfirmed updates and id counters, as plain JSON."""
        return {
            "chats": list(self._known_chats.values()),
            "sent": self.sent,
            "received": self.received,
            "updates": self.updates,
            "blocked": sorted(self.blocked),
            "next_update_id": self._update_ids.next_value,
            "next_message_id": self._message_ids.next_value,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._known_chats = {int(c["id"]): c for c in state.get("chats", [])}
        self.sent = list(state.get("sent", []))
        self.received = list(state.get("received", []))
        # Telegram keeps unconfirmed updates (for 24 hours), so a restarted desk still gets them.
        self.updates = list(state.get("updates", []))
        self.blocked = {int(c) for c in state.get("blocked", [])}
        self._update_ids.past(int(state.get("next_update_id", 1)) - 1)
        self._message_ids.past(int(state.get("next_message_id", 1)) - 1)

    def continue_after(
        self,
        *,
        update_ids: Iterable[str] = (),
        message_ids: Iterable[str] = (),
        chats: Mapping[int, str] | None = None,
    ) -> None:
        """Carry on after ids and chats the desk already holds, as the real Bot API does.

        Telegram never hands out an ``update_id`` or ``message_id`` twice, and knows every chat
        that ever wrote to the bot; a restarted stand-in must not start again from its first ids
        (the desk would drop the new updates as duplicates) nor forget the chats.
        """
        for counter, ids in ((self._update_ids, update_ids), (self._message_ids, message_ids)):
            for value in ids:
                if value.lstrip("-").isdigit():
                    counter.past(int(value))
        for chat_id, name in (chats or {}).items():
            if chat_id not in self._known_chats:
                self._chat(chat_id, name or "Customer")

    # -- the customer's side (tests, the sandbox page) -------------------------------------------

    def _chat(self, chat_id: int, first_name: str) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "private", "first_name": first_name}
        self._known_chats[chat_id] = chat
        return chat

    async def customer_says(
        self,
        chat_id: int,
        text: str,
        first_name: str = "Customer",
        language_code: str | None = None,
    ) -> int:
        """The customer sends ``text`` to the bot; returns the message id."""
        chat = self._chat(chat_id, first_name)
        sender: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": first_name}
        if language_code:
            sender["language_code"] = language_code  # the Telegram app's language
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        self.received.append(message)
        await self._push({"message": message})
        return int(message["message_id"])

    async def customer_shares_contact(
        self, chat_id: int, phone: str, *, own: bool = True, first_name: str = "Customer"
    ) -> int:
        """The customer taps "share my phone number" (``own``), or sends someone else's contact
        card, whose user id is not theirs. Telegram gives the number without a plus sign when
        the app shares the user's own."""
        chat = self._chat(chat_id, first_name)
        contact: dict[str, Any] = {"phone_number": phone, "first_name": first_name}
        contact["user_id"] = chat_id if own else chat_id + 1_000_000
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": chat_id, "is_bot": False, "first_name": first_name},
            "contact": contact,
        }
        self.received.append(message)
        await self._push({"message": message})
        return int(message["message_id"])

    async def customer_sends_photo(
        self,
        chat_id: int,
        caption: str = "",
        first_name: str = "Customer",
        *,
        content: bytes = b"",
    ) -> int:
        """The customer sends a photo (with an optional caption); returns the message id.
        ``content`` is the largest size's bytes (a few made-up bytes when not given)."""
        chat = self._chat(chat_id, first_name)
        n = next(self._message_ids)
        sizes = []
        for w in (90, 320, 1280):
            data = content if w == 1280 and content else f"JPEG {n} {w}x{w}".encode()
            file_id = f"AgAC-{n}-{w}"
            self._store_file(file_id, f"photos/file_{n}_{w}.jpg", data, len(data))
            sizes.append(
                {
                    "file_id": file_id,
                    "file_unique_id": f"AQAD{n}{w}",
                    "width": w,
                    "height": w,
                    "file_size": len(data),
                }
            )
        message: dict[str, Any] = {
            "message_id": n,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": chat_id, "is_bot": False, "first_name": first_name},
            "photo": sizes,
        }
        if caption:
            message["caption"] = caption
        self.received.append(message)
        await self._push({"message": message})
        return n

    async def customer_sends_document(
        self,
        chat_id: int,
        name: str,
        content: bytes,
        *,
        mime_type: str = "application/octet-stream",
        caption: str = "",
        first_name: str = "Customer",
        size: int | None = None,
    ) -> int:
        """The customer sends a file; returns the message id. ``size`` claims a size other than
        ``content``'s (a file over a limit without making one)."""
        chat = self._chat(chat_id, first_name)
        n = next(self._message_ids)
        file_id = f"BQAC-{n}"
        real_size = len(content) if size is None else size
        self._store_file(file_id, f"documents/file_{n}_{name}", content, real_size)
        message: dict[str, Any] = {
            "message_id": n,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": chat_id, "is_bot": False, "first_name": first_name},
            "document": {
                "file_id": file_id,
                "file_unique_id": f"AgAD{n}",
                "file_name": name,
                "mime_type": mime_type,
                "file_size": real_size,
            },
        }
        if caption:
            message["caption"] = caption
        self.received.append(message)
        await self._push({"message": message})
        return n

    # -- files: getFile, the file endpoint, sendPhoto / sendDocument ----------------------------

    def _store_file(self, file_id: str, path: str, content: bytes, size: int) -> None:
        self.files[file_id] = {"file_path": path, "content": content, "file_size": size}

    async def download(self, request: web.Request) -> web.StreamResponse:
        """``{base}/file/bot<token>/<file_path>``: the bytes of a file getFile described."""
        if request.match_info["token"] != self.token:
            return TelegramError(401, "Unauthorized").response()
        path = request.match_info["path"]
        found = next((f for f in self.files.values() if f["file_path"] == path), None)
        if found is None or found["file_size"] > MAX_DOWNLOAD:
            return TelegramError(404, "Not Found").response()
        return web.Response(body=found["content"], content_type="application/octet-stream")

    async def _get_file(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id") or "")
        found = self.files.get(file_id)
        if found is None:
            raise TelegramError(400, "Bad Request: invalid file_id")
        if found["file_size"] > MAX_DOWNLOAD:
            raise TelegramError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": "U" + file_id,
            "file_size": found["file_size"],
            "file_path": found["file_path"],
        }

    def _upload(self, params: dict[str, Any], field: str) -> tuple[str, bytes]:
        """The file of ``field``: a multipart part of that name, ``attach://<part>``, or the
        file_id of a file Telegram has. Returns (file name, bytes)."""
        uploads: dict[str, tuple[str, bytes]] = params.get(UPLOADS) or {}
        value = params.get(field)
        if field in uploads:
            return uploads[field]
        if isinstance(value, str) and value.startswith("attach://"):
            part = uploads.get(value.removeprefix("attach://"))
            if part is None:
                raise TelegramError(400, f"Bad Request: file {field} not found in the request")
            return part
        if isinstance(value, str) and value in self.files:
            known = self.files[value]
            return known["file_path"].rsplit("/", 1)[-1], known["content"]
        if not value:
            raise TelegramError(400, f'Bad Request: parameter "{field}" is required')
        raise TelegramError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    async def _send_file(self, params: dict[str, Any], field: str, limit: int) -> Any:
        chat = self._chat_for(params)
        name, content = self._upload(params, field)
        if not content:
            raise TelegramError(400, "Bad Request: file must be non-empty")
        if len(content) > MAX_UPLOAD:
            raise TelegramError(413, "Request Entity Too Large")
        if len(content) > limit:
            raise TelegramError(400, "Bad Request: PHOTO_SAVE_FILE_INVALID")
        caption = str(params.get("caption") or "")
        if len(caption) > MAX_CAPTION:
            raise TelegramError(400, "Bad Request: message caption is too long")
        self._limit(int(chat["id"]))
        n = next(self._message_ids)
        file_id = f"{'AgAC' if field == 'photo' else 'BQAC'}-sent-{n}"
        self._store_file(file_id, f"{field}s/sent_{n}_{name}", content, len(content))
        message: dict[str, Any] = {
            "message_id": n,
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
        }
        if field == "photo":
            message["photo"] = [
                {
                    "file_id": file_id,
                    "file_unique_id": "U" + file_id,
                    "width": 1280,
                    "height": 1280,
                    "file_size": len(content),
                }
            ]
        else:
            message["document"] = {
                "file_id": file_id,
                "file_unique_id": "U" + file_id,
                "file_name": name,
                "file_size": len(content),
            }
        if caption:
            message["caption"] = caption
        self.sent.append(message)
        await self._changed.notify()
        return message

    async def _send_photo(self, params: dict[str, Any]) -> Any:
        return await self._send_file(params, "photo", MAX_PHOTO)

    async def _send_document(self, params: dict[str, Any]) -> Any:
        return await self._send_file(params, "document", MAX_UPLOAD)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a file the bot sent or a customer sent (tests look at what arrived)."""
        return bytes(self.files[file_id]["content"])

    async def customer_edits(self, chat_id: int, message_id: int, text: str) -> None:
        chat = self._known_chats[chat_id]
        edited = {
            "message_id": message_id,
            "date": int(time.time()) - 1,
            "edit_date": int(time.time()),
            "chat": chat,
            "from": {"id": chat_id, "is_bot": False, "first_name": chat["first_name"]},
            "text": text,
        }
        await self._push({"edited_message": edited})

    async def customer_presses(self, chat_id: int, message_id: int, data: str) -> str:
        """The customer presses an inline button under one of the bot's messages."""
        mine = [m for m in self.sent if m["chat"]["id"] == chat_id]
        message = next((m for m in mine if m["message_id"] == message_id), None)
        if message is None:
            raise ValueError(f"the bot sent no message {message_id} to chat {chat_id}")
        buttons = [
            b["callback_data"]
            for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row
        ]
        if data not in buttons:
            raise ValueError(f"message {message_id} has no button with data {data!r}")
        query_id = f"{chat_id}{next(self._update_ids)}"
        self._callbacks.add(query_id)
        chat = self._known_chats[chat_id]
        await self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "chat_instance": f"-{chat_id}",
                    "from": {"id": chat_id, "is_bot": False, "first_name": chat["first_name"]},
                    "message": {k: message[k] for k in ("message_id", "date", "chat", "text")},
                    "data": data,
                }
            }
        )
        return query_id

    def block(self, chat_id: int) -> None:
        """The customer blocks the bot: sends to them now fail with 403."""
        self.blocked.add(chat_id)

    def fail_next(
        self, method: str, *, status: int, retry_after: float | None = None, times: int = 1
    ) -> None:
        self.failures.add(method, status=status, retry_after=retry_after, times=times)

    def hold_after_accept(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are carried out (a sendMessage is recorded as
        sent) but their HTTP answers are held back until :meth:`release_held`: the moment in
        which a client that dies cannot know that Telegram accepted its message."""
        self._holds[method.lower()] = times
        self._release.clear()

    def release_held(self) -> None:
        self._release.set()

    def sent_to(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["chat"]["id"] == chat_id]

    async def wait_for_sent(
        self, chat_id: int, n: int, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """The messages sent to the customer, once there are ``n``. The default wait bounds a
        hang and measures nothing: a reply's chain (Slack event, inbox, step, outbox, send) on a
        loaded CI machine once took longer than 10 s."""
        if not await self._changed.wait_for(lambda: len(self.sent_to(chat_id)) >= n, timeout):
            got = [m.get("text") for m in self.sent_to(chat_id)]
            raise AssertionError(f"chat {chat_id} got {len(got)} of {n} messages: {got}")
        return self.sent_to(chat_id)

    def chats(self) -> dict[int, dict[str, Any]]:
        return dict(self._known_chats)

    async def _push(self, payload: dict[str, Any]) -> None:
        self.updates.append({"update_id": next(self._update_ids), **payload})
        await self._changed.notify()
        if self.webhook is not None:
            self._kick_pusher()

    # -- the Bot API ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return TelegramError(401, "Unauthorized").response()
        method = request.match_info["method"].lower()  # the server looks methods up lowercased
        self.calls.append(method)
        try:
            params = await request_params(request)
        except (ValueError, UnicodeDecodeError):
            return TelegramError(400, "Bad Request: can't parse request body").response()
        if request.content_type == "multipart/form-data":
            params[UPLOADS] = await multipart_files(request)
        handler = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._webhook_info,
            "sendmessage": self._send_message,
            "answercallbackquery": self._answer_callback,
            "editmessagereplymarkup": self._edit_reply_markup,
            "sendchataction": self._chat_action,
            "setmycommands": self._set_my_commands,
            "getfile": self._get_file,
            "sendphoto": self._send_photo,
            "senddocument": self._send_document,
        }.get(method)
        if handler is None:
            return TelegramError(404, "Not Found: method not found").response()
        failure = self.failures.take(method)
        try:
            if failure is not None:
                raise TelegramError(
                    failure.status,
                    _description(failure.status, failure.retry_after),
                    failure.retry_after,
                )
            result = await handler(params)
        except TelegramError as exc:
            return exc.response()
        if self._holds.get(method, 0) > 0:
            self._holds[method] -= 1
            await self._release.wait()
        return web.json_response({"ok": True, "result": result})

    async def _get_me(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    async def _get_updates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            raise TelegramError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = min(float(params.get("timeout") or 0), 50.0)
        if offset > 0:  # confirms everything below it
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self._poller += 1
        me = self._poller
        await self._changed.notify()  # an older poll sees it is superseded
        await self._changed.wait_for(lambda: bool(self.updates) or self._poller != me, timeout)
        if self._poller != me:
            raise TelegramError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        return self.updates[:limit]

    async def _set_webhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url", ""))
        secret = params.get("secret_token")
        if secret is not None and not SECRET_RE.match(str(secret)):
            raise TelegramError(400, "Bad Request: secret token contains unallowed characters")
        if not url:
            self.webhook = None
            return True
        self.webhook = {"url": url, "secret_token": secret}
        if params.get("drop_pending_updates") in (True, "true", "1", 1):
            self.updates.clear()
        self._poller += 1  # a pending long poll is ended
        await self._changed.notify()
        self._kick_pusher()
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        if params.get("drop_pending_updates") in (True, "true", "1", 1):
            self.updates.clear()
        return True

    async def _webhook_info(self, params: dict[str, Any]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    def _limit(self, chat_id: int) -> None:
        if self._chat_buckets is None or self._total_bucket is None:
            return
        wait = max(self._chat_buckets.take(str(chat_id)), self._total_bucket.take("all"))
        if wait > 0:
            seconds = max(1, round(wait + 0.5))
            raise TelegramError(429, f"Too Many Requests: retry after {seconds}", seconds)

    def _chat_for(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            chat_id = int(params.get("chat_id", ""))
        except ValueError:
            raise TelegramError(400, "Bad Request: chat not found") from None
        chat = self._known_chats.get(chat_id)
        if chat is None:
            raise TelegramError(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            raise TelegramError(403, "Forbidden: bot was blocked by the user")
        return chat

    async def _send_message(self, params: dict[str, Any]) -> Any:
        chat = self._chat_for(params)
        text = str(params.get("text", ""))
        if not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise TelegramError(400, "Bad Request: message is too long")
        markup = json_field(params["reply_markup"]) if params.get("reply_markup") else None
        if markup is not None:
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    if not str(button.get("text", "")).strip():
                        raise TelegramError(400, "Bad Request: BUTTON_TEXT_INVALID")
                    if "callback_data" not in button and "url" not in button:
                        # A bare text button belongs to a reply keyboard, not an inline one.
                        raise TelegramError(
                            400, "Bad Request: text buttons are unallowed in the inline keyboard"
                        )
                    if not 1 <= len(str(button.get("callback_data", "x")).encode()) <= 64:
                        raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
        if markup is not None and "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or not rows or not all(rows):
                raise TelegramError(400, "Bad Request: keyboard must be non-empty")
            for row in rows:
                for button in row:
                    label = button if isinstance(button, str) else button.get("text", "")
                    if not str(label).strip():
                        raise TelegramError(400, "Bad Request: BUTTON_TEXT_INVALID")
        if (
            markup is not None
            and "remove_keyboard" in markup
            and markup["remove_keyboard"] is not True
        ):
            raise TelegramError(400, "Bad Request: remove_keyboard must be true")
        self._limit(int(chat["id"]))
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
            "text": text,
        }
        if markup is not None:
            message["reply_markup"] = markup
        self.sent.append(message)
        await self._changed.notify()
        # Telegram's Message.reply_markup is an inline keyboard only: a reply keyboard (or its
        # removal) is shown to the user but not part of the message the API returns.
        if markup is not None and "inline_keyboard" not in markup:
            return {k: v for k, v in message.items() if k != "reply_markup"}
        return message

    async def _edit_reply_markup(self, params: dict[str, Any]) -> Any:
        """editMessageReplyMarkup of a message the bot sent; no ``reply_markup`` removes it."""
        if params.get("inline_message_id"):
            raise TelegramError(400, "Bad Request: MESSAGE_ID_INVALID")  # no inline mode here
        try:
            message_id = int(params.get("message_id") or 0)
        except ValueError:
            message_id = 0
        if message_id <= 0:
            raise TelegramError(400, "Bad Request: message identifier is not specified")
        chat = self._chat_for(params)
        message = next(
            (
                m
                for m in self.sent
                if m["chat"]["id"] == chat["id"] and m["message_id"] == message_id
            ),
            None,
        )
        if message is None:
            if any(
                m["chat"]["id"] == chat["id"] and m["message_id"] == message_id
                for m in self.received
            ):
                raise TelegramError(400, "Bad Request: message can't be edited")
            raise TelegramError(400, "Bad Request: message to edit not found")
        markup = json_field(params["reply_markup"]) if params.get("reply_markup") else None
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                if len(str(button.get("callback_data", "")).encode()) > 64:
                    raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
        if markup is not None and not any(markup.get("inline_keyboard", [])):
            markup = None  # an empty inline keyboard is no keyboard
        if markup == message.get("reply_markup"):
            raise TelegramError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        self._limit(int(chat["id"]))
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        await self._changed.notify()
        return message

    async def _set_my_commands(self, params: dict[str, Any]) -> Any:
        """setMyCommands: 0-100 commands of 1-32 lowercase letters, digits and underscores,
        descriptions of 1-256 characters; ``language_code`` empty or two letters. Only the
        default scope is served here (the desk sets no other)."""
        if "commands" not in params:
            raise TelegramError(400, 'Bad Request: parameter "commands" is required')
        try:
            commands = json_field(params["commands"])
        except ValueError:
            raise TelegramError(400, "Bad Request: can't parse commands JSON object") from None
        if not isinstance(commands, list) or len(commands) > 100:
            raise TelegramError(400, "Bad Request: too many commands")
        for c in commands:
            if not isinstance(c, dict) or not re.fullmatch(
                r"[a-z0-9_]{1,32}", str(c.get("command"))
            ):
                raise TelegramError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", "")).strip()) <= 256:
                raise TelegramError(400, "Bad Request: BOT_COMMAND_INVALID")
        language = str(params.get("language_code") or "")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise TelegramError(400, "Bad Request: LANG_CODE_INVALID")
        scope = json_field(params["scope"]) if params.get("scope") else {"type": "default"}
        if scope.get("type") != "default":
            raise TelegramError(400, "Bad Request: only the default scope is served here")
        self.commands[language] = [
            {"command": str(c["command"]), "description": str(c["description"])} for c in commands
        ]
        await self._changed.notify()
        return True

    async def _answer_callback(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._callbacks:
            raise TelegramError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self._callbacks.discard(query_id)
        self.answered_callbacks.append(params)
        return True

    async def _chat_action(self, params: dict[str, Any]) -> Any:
        self._chat_for(params)
        return True

    # -- webhook mode --------------------------------------------------------------------------

    def _kick_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.ensure_future(self._push_webhook())

    async def _push_webhook(self) -> None:
        """Deliver pending updates one at a time; a non-2xx answer is retried with backoff."""
        delay = self._retry_base
        while self.webhook is not None and self.updates:
            hook = self.webhook
            update = self.updates[0]
            headers = {"Content-Type": "application/json"}
            if hook.get("secret_token"):
                headers["X-Telegram-Bot-Api-Secret-Token"] = str(hook["secret_token"])
            status, _ = await self._deliverer.attempt(
                str(hook["url"]), json.dumps(update).encode(), headers
            )
            if 200 <= status < 300:
                if self.updates and self.updates[0] is update:
                    self.updates.pop(0)
                delay = self._retry_base
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60 * self._retry_base)


def _description(status: int, retry_after: float | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {max(1, round(retry_after or 1))}"
    if status == 403:
        return "Forbidden: bot was blocked by the user"
    if status == 400:
        return "Bad Request: chat not found"
    if status == 500:
        return "Internal Server Error: restart"
    return {502: "Bad Gateway", 503: "Service Unavailable"}.get(status, f"Error {status}")
