"""Telegram: customers write to the company's bot. aiogram 3's Bot client and Update models.

Input comes by long polling (default) or by webhook (``settings.webhook_url``). Either way an
update is written to the inbox before Telegram hears that we have it: the getUpdates offset
only moves past an update after ``inbox.accept`` returned, and the webhook answers 2xx only
after it returned. That is why polling is our own loop over ``bot.get_updates`` rather than
aiogram's Dispatcher, which confirms an update as soon as it has fetched it.

Output (:meth:`TelegramAdapter.send`) maps aiogram's exceptions onto the desk's typed errors.
aiogram does not retry 429s itself; the outbox does, after ``retry_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

import adapters.aiogram_lazy  # noqa: F401  # isort: skip  (before aiogram: see there)
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    GetFile,
    SendDocument,
    SendMessage,
    SendPhoto,
)
from aiogram.methods.base import Response, TelegramMethod
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
    User,
)
from aiogram.utils.token import TokenValidationError
from aiohttp import web
from pydantic import ValidationError

from adapters._common import (
    BodyRefused,
    BodyTooLarge,
    bad_request,
    parse_json_object,
    read_body,
    too_large,
    unavailable,
)
from bot.base.settings import TelegramSettings
from bot.delivery.inbox import Inbox
from bot.domain.events import (
    Attachment,
    Channel,
    CustomerBlocked,
    CustomerButton,
    CustomerContact,
    CustomerEdit,
    CustomerMessage,
    CustomerStart,
    Event,
    Ignored,
    Sender,
    Shared,
)
from bot.domain.files import TELEGRAM_DOWNLOAD_MAX
from bot.domain.outbound import (
    BadRequest,
    Delivery,
    DeliveryError,
    FileContent,
    FileRef,
    Forbidden,
    Outbound,
    RetryAfter,
    Unavailable,
)

log = logging.getLogger("deskbot.adapters.telegram")

ROUTE = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# What we ask Telegram for. Anything else that still arrives is recorded as Ignored.
# my_chat_member: the customer blocked or unblocked the bot.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
BUTTONS_PER_ROW = 5
NOT_MODIFIED = "message is not modified"
CAPTION_MAX = 1024  # editMessage*: the message already looks like that

# --------------------------------------------------------------------------------------------
# Pure parsing: one update → one event


def update_kind(update: Update) -> str:
    """The update's payload key ("message", "callback_query", ...), including unknown ones."""
    for name in type(update).model_fields:
        if name != "update_id" and getattr(update, name) is not None:
            return name
    extra = [k for k in (update.model_extra or {}) if k != "update_id"]
    return extra[0] if extra else "empty"


def parse_update_json(data: Mapping[str, Any]) -> Event:
    """A webhook body or recorded payload → event. ValueError if it is not an update at all."""
    update_id = data.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise ValueError("not a Telegram update: no integer update_id")
    chat = _chat_id_of(data)
    try:
        update = Update.model_validate(dict(data))
    except ValidationError as exc:
        reason = f"invalid update ({exc.error_count()} validation errors)"
    else:
        try:
            return parse_update(update)
        except Exception as exc:  # one odd update must not stop the others
            log.exception("telegram.unparseable update_id=%s", update_id)
            reason = f"unparseable update ({type(exc).__name__})"
    return Ignored(
        channel="telegram",
        external_id=str(update_id),
        conversation=f"telegram:{chat}" if chat else "telegram:ignored",
        reason=reason,
    )


def _chat_id_of(data: Mapping[str, Any]) -> str | None:
    for value in data.values():
        if isinstance(value, Mapping):
            chat = value.get("chat")
            if isinstance(chat, Mapping) and "id" in chat:
                return str(chat["id"])
    return None


def parse_update(update: Update) -> Event:
    external_id = str(update.update_id)
    kind = update_kind(update)

    def ignored(reason: str, chat_id: int | None = None) -> Ignored:
        conversation = f"telegram:{chat_id}" if chat_id is not None else "telegram:ignored"
        return Ignored(
            channel="telegram", external_id=external_id, conversation=conversation, reason=reason
        )

    if update.message is not None:
        return _parse_message(external_id, update.message, ignored)
    if update.edited_message is not None:
        msg = update.edited_message
        if msg.from_user is None:
            return ignored("edited_message without sender", msg.chat.id)
        if msg.location is not None:  # a live location moved: not something they said
            return ignored("edited_message: a live location update", msg.chat.id)
        if not (msg.text or msg.caption):
            return ignored("edited_message without text", msg.chat.id)
        return CustomerEdit(
            channel="telegram",
            external_id=external_id,
            conversation=f"telegram:{msg.chat.id}",
            sender=sender_of(msg.from_user),
            chat_id=str(msg.chat.id),
            platform_message_id=str(msg.message_id),
            text=msg.text or msg.caption or "",
        )
    if update.callback_query is not None:
        return _parse_callback(external_id, update.callback_query)
    member = update.my_chat_member
    if member is not None:
        if member.chat.type != "private":
            return ignored(f"my_chat_member in a {member.chat.type} chat", member.chat.id)
        status = member.new_chat_member.status
        if status not in ("kicked", "member"):
            return ignored(f"my_chat_member {status}", member.chat.id)
        return CustomerBlocked(
            channel="telegram",
            external_id=external_id,
            conversation=f"telegram:{member.chat.id}",
            sender=sender_of(member.from_user),
            chat_id=str(member.chat.id),
            blocked=status == "kicked",
        )
    chat_id = None
    for name in ("channel_post", "edited_channel_post", "business_message"):
        post = getattr(update, name)
        if isinstance(post, Message):
            chat_id = post.chat.id
    return ignored(f"update {kind}", chat_id)


def sender_of(user: User) -> Sender:
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return Sender(
        external_id=str(user.id),
        name=name,
        username=user.username,
        language=user.language_code,
    )


def _is_start(msg: Message) -> bool:
    text = msg.text or ""
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return first == "/start" or first.startswith("/start@")


def _attachments(msg: Message) -> list[Attachment]:
    found: list[Attachment] = []
    if msg.photo:
        # Telegram sends every size it made; keep the largest (the original resolution).
        best = max(msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        found.append(Attachment(kind="photo", file_id=best.file_id, size=best.file_size))
    if msg.document is not None:
        doc = msg.document
        found.append(
            Attachment(
                kind="document",
                file_id=doc.file_id,
                name=doc.file_name,
                mime_type=doc.mime_type,
                size=doc.file_size,
            )
        )
    # Not required by the issue, but a customer's voice note or video is still something they
    # said: record it rather than drop it.
    for media_kind, media in (
        ("audio", msg.audio),
        ("video", msg.video),
        ("voice", msg.voice),
        ("sticker", msg.sticker),
        ("video", msg.video_note),  # a round video message
        ("video", msg.animation),  # a GIF (Telegram also sets ``document`` for old clients)
    ):
        if media is not None and not any(a.file_id == media.file_id for a in found):
            found.append(
                Attachment(
                    kind=media_kind,
                    file_id=media.file_id,
                    name=getattr(media, "file_name", None),
                    mime_type=getattr(media, "mime_type", None),
                    size=media.file_size,
                )
            )
    return found


def map_link(latitude: float, longitude: float) -> str:
    return f"https://maps.google.com/?q={latitude},{longitude}"


def _shared(msg: Message) -> tuple[str, Shared] | None:
    """A location, venue, someone else's contact card or a poll, described for the agents."""
    if msg.venue is not None:
        venue = msg.venue
        place = ", ".join(p for p in (venue.title, venue.address) if p)
        link = map_link(venue.location.latitude, venue.location.longitude)
        return f"📍 Shared a place: {place}\n{link}", "venue"
    if msg.location is not None:
        loc = msg.location
        live = " (live)" if loc.live_period else ""
        return f"📍 Shared a location{live}\n{map_link(loc.latitude, loc.longitude)}", "location"
    if msg.contact is not None:
        card = msg.contact
        who = " ".join(p for p in (card.first_name, card.last_name) if p)
        return f"👤 Shared a contact:\n• {who or 'no name'}: {card.phone_number}", "contact"
    if msg.poll is not None:
        options = "\n".join(f"• {o.text}" for o in msg.poll.options)
        return f"📊 Shared a poll: {msg.poll.question}\n{options}", "poll"
    return None


def _parse_message(
    external_id: str, msg: Message, ignored: Callable[[str, int | None], Ignored]
) -> Event:
    chat_id = msg.chat.id
    if msg.from_user is None or msg.from_user.is_bot:
        return ignored("message without a human sender", chat_id)
    sender = sender_of(msg.from_user)
    conversation = f"telegram:{chat_id}"
    if _is_start(msg):
        return CustomerStart(
            channel="telegram",
            external_id=external_id,
            conversation=conversation,
            sender=sender,
            chat_id=str(chat_id),
        )
    if msg.contact is not None and msg.contact.user_id == msg.from_user.id:
        # Telegram sets the contact's user_id to the sender's own id only when they shared
        # their own account's number (the "share my phone number" button): that is verified.
        # Anyone else's card is something they said (below), unless it answers /link's
        # button, which bot/wiring.py decides.
        return CustomerContact(
            channel="telegram",
            external_id=external_id,
            conversation=conversation,
            sender=sender,
            chat_id=str(chat_id),
            phone=msg.contact.phone_number,
            own=True,
        )
    said = {
        "channel": "telegram",
        "external_id": external_id,
        "conversation": conversation,
        "sender": sender,
        "chat_id": str(chat_id),
        "platform_message_id": str(msg.message_id),
    }
    shared = _shared(msg)
    if shared is not None:
        return CustomerMessage(**said, text=shared[0], shared=shared[1])
    attachments = _attachments(msg)
    text = msg.text or msg.caption or ""
    if not text and not attachments:
        return ignored("message without text or attachments", chat_id)
    return CustomerMessage(**said, text=text, attachments=tuple(attachments))


def _parse_callback(external_id: str, query: CallbackQuery) -> Event:
    # The button sits on one of our messages in the customer's chat; an inaccessible (very old)
    # message still carries its chat. Without one, the private chat id equals the user id.
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    return CustomerButton(
        channel="telegram",
        external_id=external_id,
        conversation=f"telegram:{chat_id}",
        sender=sender_of(query.from_user),
        chat_id=str(chat_id),
        data=query.data or "",
        callback_query_id=query.id,
        tapped_message_id=str(query.message.message_id) if query.message is not None else None,
    )


class GetRawUpdates(TelegramMethod[list[dict[str, Any]]]):
    """getUpdates, with each update left as the JSON object Telegram sent.

    aiogram's own ``GetUpdates`` validates every update into its models: one update the pinned
    aiogram cannot validate fails the whole call, and dumping a validated model back to JSON is
    not what Telegram sent (aiogram fills unset fields with ``Default`` sentinels, which do not
    serialise). Asking for plain objects keeps aiogram's session, error mapping and retry-after,
    and lets polling store and parse each update exactly as the webhook does."""

    __returning__ = list[dict[str, Any]]
    __api_method__ = "getUpdates"

    offset: int | None = None
    timeout: int | None = None
    allowed_updates: list[str] | None = None


# aiogram parses every answer with ``Response[<the method's result type>]``, a pydantic generic
# made on first use and kept by pydantic in a weak cache: once the collector frees it, the next
# call builds it again (about 3.5 ms). Measured in bench.loop, ``Response[Message]`` was built 42
# times in 300 customer messages. Held here for the methods the desk calls on its hot path.
_RESPONSE_TYPES = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (
        SendMessage,
        AnswerCallbackQuery,
        EditMessageReplyMarkup,
        GetFile,
        SendPhoto,
        SendDocument,
        GetRawUpdates,
    )
)


# --------------------------------------------------------------------------------------------
# Error mapping


def map_telegram_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, TelegramRetryAfter):
        return RetryAfter(float(exc.retry_after), exc.message)
    if isinstance(exc, TelegramForbiddenError):
        return Forbidden(exc.message)
    if isinstance(exc, TelegramEntityTooLarge):  # a TelegramNetworkError subclass: check first
        return BadRequest(exc.message)
    if isinstance(
        exc,
        TelegramBadRequest
        | TelegramNotFound
        | TelegramUnauthorizedError
        | TelegramConflictError
        | TelegramMigrateToChat,
    ):
        return BadRequest(exc.message)
    if isinstance(exc, TelegramServerError | TelegramNetworkError):
        return Unavailable(exc.message)
    if isinstance(exc, TelegramAPIError):  # an unmapped status: assume it may pass later
        return Unavailable(exc.message)
    if isinstance(exc, ClientDecodeError):  # e.g. an HTML error page from a proxy
        return Unavailable(f"undecodable response: {exc.message}")
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return Unavailable(f"{type(exc).__name__}: {exc}")
    return Unavailable(f"{type(exc).__name__}")


def chat_ref(destination: str) -> int | str:
    """Chat ids are integers (negative for groups); ``@channelname`` stays a string."""
    stripped = destination.lstrip("-")
    return int(destination) if stripped.isdigit() else destination


def reply_markup(
    message: Outbound,
) -> InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None:
    """A text message's markup: the "share my phone number" reply keyboard, its removal, or
    inline buttons."""
    if message.ask_contact:
        # A reply keyboard: the button sends the customer's own number, verified by Telegram.
        ask = KeyboardButton(text=message.ask_contact, request_contact=True)
        return ReplyKeyboardMarkup(keyboard=[[ask]], one_time_keyboard=True, resize_keyboard=True)
    if message.remove_keyboard:
        return ReplyKeyboardRemove(remove_keyboard=True)
    return keyboard(message)


def keyboard(message: Outbound) -> InlineKeyboardMarkup | None:
    if not message.buttons:
        return None
    buttons = [InlineKeyboardButton(text=b.text, callback_data=b.data) for b in message.buttons]
    rows = [buttons[i : i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)]
    return InlineKeyboardMarkup(inline_keyboard=rows)


# --------------------------------------------------------------------------------------------
# The adapter


class TelegramAdapter:
    channel: Channel = "telegram"

    def __init__(
        self,
        settings: TelegramSettings,
        inbox: Inbox,
        *,
        max_body_bytes: int,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        request_timeout: float = 60.0,
        commands: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        """``commands``: the bot's command menu by language code ("" for everyone else), as
        ``(command, description)`` pairs; set with setMyCommands at start."""
        if settings.webhook_url and not settings.webhook_secret:
            raise ValueError("TELEGRAM_WEBHOOK_URL is set: set TELEGRAM_WEBHOOK_SECRET too")
        self._settings = settings
        self._inbox = inbox
        self._max_body = max_body_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._request_timeout = request_timeout
        self._commands = dict(commands or {})
        session = AiohttpSession(
            api=TelegramAPIServer.from_base(settings.api_base), timeout=request_timeout
        )
        try:
            self.bot = Bot(settings.bot_token, session=session)
        except TokenValidationError:
            raise ValueError(
                "TELEGRAM_BOT_TOKEN is not a bot token (expected digits:rest from @BotFather)"
            ) from None
        self.offset: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._accepting = False
        self._started = False

    @property
    def webhook_mode(self) -> bool:
        return bool(self._settings.webhook_url)

    @property
    def started(self) -> bool:
        return self._started

    # -- lifecycle ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        if self.webhook_mode:
            app.router.add_post(ROUTE, self.handle)

    async def start(self) -> None:
        try:
            me = await self.bot.get_me()
        except TelegramUnauthorizedError as exc:
            raise RuntimeError(f"Telegram rejected TELEGRAM_BOT_TOKEN: {exc.message}") from exc
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError, ClientDecodeError) as exc:
            if self.webhook_mode:
                # Without setWebhook nothing arrives: fail loudly rather than sit deaf.
                raise RuntimeError(f"Telegram is unreachable at start-up: {exc}") from exc
            log.warning("telegram.get_me_failed error=%s (polling will retry)", type(exc).__name__)
        else:
            log.info("telegram.identity bot_id=%s username=%s", me.id, me.username)
            await self._set_commands()
        self._stopping.clear()
        if self.webhook_mode:
            assert self._settings.webhook_url is not None
            await self._set_webhook(self._settings.webhook_url)
        else:
            # getUpdates answers 409 while a webhook is set; a deployment that switched from
            # webhook to polling must clear it (pending updates are kept).
            with contextlib.suppress(TelegramAPIError, aiohttp.ClientError, TimeoutError):
                await self.bot.delete_webhook(drop_pending_updates=False)
            self._poller = asyncio.create_task(self._poll(), name="telegram-poll")
        self._started = True
        log.info("telegram.started mode=%s", "webhook" if self.webhook_mode else "polling")

    async def _set_commands(self) -> None:
        """The menu of commands customers see (``/status``). A convenience: the commands work
        without it, so a refusal is logged and the desk starts all the same."""
        for language, commands in self._commands.items():
            try:
                await self.bot.set_my_commands(
                    [BotCommand(command=c, description=d) for c, d in commands],
                    language_code=language or None,
                )
            except (TelegramAPIError, ClientDecodeError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "telegram.set_commands_failed language=%s error=%s",
                    language or "-",
                    type(exc).__name__,
                )
                return
        if self._commands:
            log.info("telegram.commands_set languages=%d", len(self._commands))

    async def _set_webhook(self, url: str, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await self.bot.set_webhook(
                    url=url,
                    secret_token=self._settings.webhook_secret,
                    allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=False,
                )
            except TelegramRetryAfter as exc:
                # setWebhook allows about one call per second: a quick restart can hit it.
                if attempt == attempts:
                    raise
                log.warning("telegram.set_webhook_rate_limited retry_after=%s", exc.retry_after)
                await asyncio.sleep(exc.retry_after)
            else:
                log.info("telegram.webhook_set")
                return

    async def stop(self) -> None:
        # The desk stops adapters twice (intake first, sessions after its last sends): the
        # first stop of a started adapter is the one logged.
        was_started, self._started = self._started, False
        self._stopping.set()
        poller, self._poller = self._poller, None
        if poller is not None:
            if not self._accepting:
                poller.cancel()  # parked in getUpdates or a backoff sleep: nothing to lose
            # Mid-commit: let the inbox write finish; the loop exits right after it.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(poller, timeout=10)
        await self.bot.session.close()
        if was_started:
            log.info("telegram.stopped offset=%s", self.offset)

    # -- long polling --------------------------------------------------------------------------

    async def _poll(self) -> None:
        delay = self._backoff_initial
        timeout = self._settings.poll_timeout
        while not self._stopping.is_set():
            try:
                updates = await self.bot(
                    GetRawUpdates(
                        offset=self.offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES
                    ),
                    # Longer than the long poll itself, or every quiet poll would time out.
                    request_timeout=int(self._request_timeout) + timeout,
                )
            except TelegramRetryAfter as exc:
                log.warning("telegram.poll_rate_limited retry_after=%s", exc.retry_after)
                await self._pause(float(exc.retry_after))
                continue
            except (TelegramAPIError, ClientDecodeError, aiohttp.ClientError, TimeoutError) as exc:
                # 409 (another poller, or a webhook set), 5xx, network: back off and try again.
                log.warning(
                    "telegram.poll_failed error=%s detail=%s retry_in=%.1f",
                    type(exc).__name__,
                    self._scrub(getattr(exc, "message", "")),
                    delay,
                )
                await self._pause(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            delay = self._backoff_initial
            try:
                await self._accept(updates)
            except Exception:
                # The inbox could not commit: poll again from the same offset after a pause;
                # what was committed already is deduped.
                log.exception("telegram.inbox_failed offset=%s", self.offset)
                await self._pause(delay)
                delay = min(delay * 2, self._backoff_max)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _accept(self, updates: list[dict[str, Any]]) -> None:
        """A poll's updates into the inbox in one transaction, then confirmed to Telegram (the
        next poll's offset): a crash before the commit polls them again, and the inbox drops
        what it already holds."""
        accepted: list[tuple[Event, dict[str, Any]]] = []
        last: int | None = None
        for update in updates:
            update_id = update.get("update_id")
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                # Not an update at all: there is nothing to confirm or store.
                log.warning("telegram.skipped reason=no_update_id")
                continue
            accepted.append((parse_update_json(update), update))
            last = update_id
        if accepted:
            self._accepting = True
            try:
                await self._inbox.accept_each(accepted)
            finally:
                self._accepting = False
        if last is not None:
            self.offset = last + 1  # only now is it confirmed to Telegram
        for event, _ in accepted:
            log.info("telegram.update_accepted update_id=%s kind=%s", event.external_id, event.kind)

    # -- webhook -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        expected = self._settings.webhook_secret or ""
        given = request.headers.get(SECRET_HEADER, "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("telegram.rejected reason=bad_secret")
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body = await read_body(request, self._max_body)
        except BodyTooLarge:
            log.warning("telegram.rejected reason=too_large")
            return too_large(self._max_body)
        except BodyRefused as exc:
            log.warning("telegram.rejected reason=%s", exc.reason)
            return exc.response()
        try:
            data = parse_json_object(body)
            event = parse_update_json(data)
        except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
            log.warning("telegram.rejected reason=malformed")
            return bad_request(str(exc) if "update" in str(exc) else "malformed JSON")
        try:
            await self._inbox.accept([event], data)
        except Exception:
            log.exception("telegram.inbox_failed update_id=%s", event.external_id)
            return unavailable()
        log.info("telegram.update_accepted update_id=%s kind=%s", event.external_id, event.kind)
        return web.Response(status=200)

    # -- outbound ----------------------------------------------------------------------------

    async def send(self, message: Outbound) -> Delivery:
        try:
            match message.kind:
                case "text":
                    sent = await self.bot.send_message(
                        chat_id=chat_ref(message.destination),
                        text=message.text,
                        reply_markup=reply_markup(message),
                    )
                    return Delivery(platform_message_id=str(sent.message_id))
                case "answer_callback":
                    if not message.callback_query_id:
                        raise BadRequest("answer_callback needs callback_query_id")
                    await self.bot.answer_callback_query(
                        callback_query_id=message.callback_query_id, text=message.text or None
                    )
                    return Delivery()
                case "edit_buttons":
                    return await self._edit_buttons(message)
                case "file":
                    return await self._send_file(message)
                case _:
                    raise BadRequest(f"telegram cannot send {message.kind}")
        except DeliveryError:
            raise
        except (TelegramAPIError, ClientDecodeError, aiohttp.ClientError, TimeoutError) as exc:
            error = map_telegram_error(exc)
            error.detail = self._scrub(error.detail)
            error.args = (error.detail,)
            raise error from exc

    # -- files -------------------------------------------------------------------------------

    async def fetch_file(self, ref: FileRef) -> FileContent:
        """A customer's file: getFile, then the bytes from the file endpoint (the token is in
        its URL). Telegram lets bots download up to 20 MB; over that getFile answers "file is
        too big", checked here first when the size is known."""
        if ref.size is not None and ref.size > TELEGRAM_DOWNLOAD_MAX:
            raise BadRequest("file is too big (Telegram lets bots download up to 20 MB)")
        try:
            found = await self.bot.get_file(ref.file_id)
            if found.file_size is not None and found.file_size > TELEGRAM_DOWNLOAD_MAX:
                raise BadRequest("file is too big (Telegram lets bots download up to 20 MB)")
            if not found.file_path:
                raise BadRequest("getFile gave no file_path")
            buffer = io.BytesIO()
            await self.bot.download_file(found.file_path, destination=buffer)
        except DeliveryError:
            raise
        except (TelegramAPIError, ClientDecodeError, aiohttp.ClientError, TimeoutError) as exc:
            error = map_telegram_error(exc)
            error.detail = self._scrub(error.detail)
            error.args = (error.detail,)
            raise error from exc
        name = ref.name or found.file_path.rsplit("/", 1)[-1] or f"{ref.kind}"
        mime = ref.mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileContent(data=buffer.getvalue(), name=name, mime_type=mime)

    async def _send_file(self, message: Outbound) -> Delivery:
        """An agent's file to the customer, uploaded multipart: sendPhoto or sendDocument as
        bot.domain.files decided from Telegram's limits (photo 10 MB, document 50 MB)."""
        if message.file is None or message.content is None:
            raise BadRequest("file needs the file and its content")
        content = message.content
        upload = BufferedInputFile(content.data, filename=content.name)
        caption = message.text[:CAPTION_MAX] or None
        chat = chat_ref(message.destination)
        if message.file.kind == "photo":
            sent = await self.bot.send_photo(chat_id=chat, photo=upload, caption=caption)
        else:
            sent = await self.bot.send_document(chat_id=chat, document=upload, caption=caption)
        return Delivery(platform_message_id=str(sent.message_id))

    async def _edit_buttons(self, message: Outbound) -> Delivery:
        if not message.reply_to or not message.reply_to.isdigit():
            raise BadRequest("edit_buttons needs the message id in reply_to")
        try:
            # Without reply_markup Telegram removes the inline keyboard.
            await self.bot.edit_message_reply_markup(
                chat_id=chat_ref(message.destination),
                message_id=int(message.reply_to),
                reply_markup=keyboard(message),
            )
        except TelegramBadRequest as exc:
            # The keyboard is already as asked (an earlier attempt got through before a crash,
            # or the buttons were removed for another reason): the goal is met.
            if NOT_MODIFIED not in exc.message:
                raise
        return Delivery(platform_message_id=message.reply_to)

    def _scrub(self, text: str) -> str:
        # The token is part of every Bot API URL; an aiohttp error quoting a URL must not carry
        # it into logs or into the ticket's thread.
        return text.replace(self._settings.bot_token, "<token>")
