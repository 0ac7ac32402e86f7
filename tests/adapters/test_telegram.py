"""Telegram adapter: parsing recorded updates, the webhook endpoint, the polling loop's offset
discipline, and send()'s error map with the real aiogram client against a fake Bot API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.telegram import TelegramAdapter, parse_update_json
from bot.base.settings import TelegramSettings
from bot.domain.events import (
    CustomerBlocked,
    CustomerButton,
    CustomerContact,
    CustomerEdit,
    CustomerMessage,
    CustomerStart,
    Ignored,
    event_from_json,
    event_to_json,
)
from bot.domain.outbound import BadRequest, Button, Forbidden, Outbound, RetryAfter, Unavailable

from .adapter_fakes import PAYLOADS, FakeAPI, FakeInbox, Recorded, Reply, payload

TOKEN = "123456789:AAE2e-test-token_abcdefghijklmnopqrst"
SECRET = "tg-secret_1"
MAX_BODY = 64 * 1024

# --------------------------------------------------------------------------------------------
# parsing


def test_text_message() -> None:
    ev = parse_update_json(payload("telegram", "message_text"))
    assert isinstance(ev, CustomerMessage)
    assert (ev.external_id, ev.conversation, ev.chat_id) == ("100001", "telegram:42", "42")
    assert ev.platform_message_id == "5"
    assert ev.text == "My card was charged twice for order 1187"
    assert ev.attachments == ()
    assert ev.sender.external_id == "42"
    assert (ev.sender.name, ev.sender.username, ev.sender.language) == ("Ann Lee", "ann", "en")


def test_language_comes_from_the_sender() -> None:
    ev = parse_update_json(payload("telegram", "message_text_zh"))
    assert isinstance(ev, CustomerMessage)
    assert ev.sender.language == "zh-hans"
    assert ev.text == "我的订单还没到"


@pytest.mark.parametrize("name", ["message_start", "message_start_deeplink"])
def test_start(name: str) -> None:
    ev = parse_update_json(payload("telegram", name))
    assert isinstance(ev, CustomerStart)
    assert ev.chat_id == str(payload("telegram", name)["message"]["chat"]["id"])


def test_photo_keeps_the_largest_size_and_the_caption() -> None:
    ev = parse_update_json(payload("telegram", "message_photo"))
    assert isinstance(ev, CustomerMessage)
    assert ev.text == "this is the error I get"
    [att] = ev.attachments
    assert (att.kind, att.file_id, att.size) == ("photo", "AgACAgIAAxkBAAM-large", 68922)


def test_document() -> None:
    ev = parse_update_json(payload("telegram", "message_document"))
    assert isinstance(ev, CustomerMessage)
    assert ev.text == ""
    [att] = ev.attachments
    assert att.kind == "document"
    assert (att.name, att.mime_type, att.size) == ("invoice-1187.pdf", "application/pdf", 48213)


def test_voice_is_recorded_as_an_attachment() -> None:
    ev = parse_update_json(payload("telegram", "message_voice"))
    assert isinstance(ev, CustomerMessage)
    assert [a.kind for a in ev.attachments] == ["voice"]


def test_edit() -> None:
    ev = parse_update_json(payload("telegram", "edited_message"))
    assert isinstance(ev, CustomerEdit)
    assert (ev.platform_message_id, ev.text) == ("5", "My card was charged twice for order 1188")
    assert ev.external_id == "100004"


def test_callback_query() -> None:
    ev = parse_update_json(payload("telegram", "callback_query"))
    assert isinstance(ev, CustomerButton)
    assert (ev.data, ev.callback_query_id, ev.chat_id) == ("rate:42:5", "4382bfdwdsb323b2d9", "42")
    assert ev.conversation == "telegram:42"


def test_callback_on_an_inaccessible_message() -> None:
    ev = parse_update_json(payload("telegram", "callback_query_inaccessible"))
    assert isinstance(ev, CustomerButton)
    assert (ev.data, ev.chat_id) == ("rate:17:4", "42")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("group_new_members", "message without text or attachments"),
        ("future_update_kind", "update some_future_update"),
    ],
)
def test_other_updates_are_ignored(name: str, reason: str) -> None:
    data = payload("telegram", name)
    ev = parse_update_json(data)
    assert isinstance(ev, Ignored)
    assert ev.reason == reason
    assert ev.external_id == str(data["update_id"])


def conformance(name: str) -> dict[str, Any]:
    data = json.loads((PAYLOADS / "telegram" / "conformance" / f"{name}.json").read_text())
    data["update_id"] = 700001
    assert isinstance(data, dict)
    return data


def test_blocking_and_unblocking_the_bot() -> None:
    blocked = parse_update_json(payload("telegram", "my_chat_member_blocked"))
    assert isinstance(blocked, CustomerBlocked)
    assert (blocked.chat_id, blocked.blocked, blocked.conversation) == ("42", True, "telegram:42")
    again = payload("telegram", "my_chat_member_blocked")
    member = again["my_chat_member"]
    bot = member["new_chat_member"]["user"]
    member["old_chat_member"] = {"status": "kicked", "user": bot, "until_date": 0}
    member["new_chat_member"] = {"status": "member", "user": bot}
    unblocked = parse_update_json(again)
    assert isinstance(unblocked, CustomerBlocked) and not unblocked.blocked


def test_a_location_and_a_venue_are_messages_with_a_map_link() -> None:
    loc = parse_update_json(conformance("aiogram2__MESSAGE_WITH_LOCATION"))
    assert isinstance(loc, CustomerMessage) and loc.shared == "location"
    assert loc.text == "📍 Shared a location\nhttps://maps.google.com/?q=50.693416,30.624605"
    venue = parse_update_json(conformance("aiogram2__MESSAGE_WITH_VENUE"))
    assert isinstance(venue, CustomerMessage) and venue.shared == "venue"
    assert venue.text == (
        "📍 Shared a place: Venue Name, Venue Address\n"
        "https://maps.google.com/?q=50.693416,30.624605"
    )


def test_someone_elses_contact_is_a_message_their_own_a_contact() -> None:
    card = parse_update_json(conformance("aiogram2__MESSAGE_WITH_CONTACT"))
    assert isinstance(card, CustomerMessage) and card.shared == "contact"
    assert card.text == "👤 Shared a contact:\n• John Smith: 88005553535"
    own = conformance("aiogram2__MESSAGE_WITH_CONTACT")
    own["message"]["contact"]["user_id"] = own["message"]["from"]["id"]
    mine = parse_update_json(own)
    assert isinstance(mine, CustomerContact) and mine.own and mine.phone == "88005553535"


def test_a_poll_is_a_message_with_its_options() -> None:
    data = payload("telegram", "message_text")
    del data["message"]["text"]
    data["message"]["poll"] = {
        "id": "5",
        "question": "Which day suits you?",
        "options": [
            {"persistent_id": "1", "text": "Monday", "voter_count": 0},
            {"persistent_id": "2", "text": "Friday", "voter_count": 0},
        ],
        "allows_revoting": False,
        "members_only": False,
        "total_voter_count": 0,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
    }
    ev = parse_update_json(data)
    assert isinstance(ev, CustomerMessage) and ev.shared == "poll"
    assert ev.text == "📊 Shared a poll: Which day suits you?\n• Monday\n• Friday"


def test_a_video_note_and_a_sticker_are_files() -> None:
    data = conformance("aiogram2__MESSAGE_WITH_VIDEO_NOTE")
    data["message"]["video_note"]["file_unique_id"] = "AQADnote"  # Bot API 4.5 added it
    data["message"]["video_note"]["thumb"]["file_unique_id"] = "AQADthumb"
    note = parse_update_json(data)
    assert isinstance(note, CustomerMessage), note
    assert [(a.kind, a.file_id) for a in note.attachments] == [
        ("video", "AbCdEfGhIjKlMnOpQrStUvWxYz")
    ]
    sticker = parse_update_json(conformance("teloxide__message.de_sticker"))
    assert isinstance(sticker, CustomerMessage)
    assert [a.kind for a in sticker.attachments] == ["sticker"]


def test_a_live_location_moving_is_not_an_edit() -> None:
    data = conformance("aiogram2__MESSAGE_WITH_LOCATION")
    data["edited_message"] = data.pop("message")
    data["edited_message"]["edit_date"] = 1508755500
    ev = parse_update_json(data)
    assert isinstance(ev, Ignored) and ev.reason == "edited_message: a live location update"


def test_an_invalid_update_is_ignored_not_a_crash() -> None:
    ev = parse_update_json({"update_id": 5, "message": {"message_id": "x"}})
    assert isinstance(ev, Ignored)
    assert ev.reason.startswith("invalid update")


@pytest.mark.parametrize("data", [{}, {"update_id": "12"}, {"update_id": True}])
def test_not_an_update_is_a_value_error(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_update_json(data)


def test_events_survive_the_inbox_json_round_trip() -> None:
    for name in ("message_text", "message_photo", "edited_message", "callback_query"):
        ev = parse_update_json(payload("telegram", name))
        assert event_from_json(json.loads(json.dumps(event_to_json(ev)))) == ev


# --------------------------------------------------------------------------------------------
# a fake Bot API


class BotAPI:
    """getUpdates serves ``pending`` above the offset, like the real server."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.poll_delay = 0.05

    def __call__(self, rec: Recorded) -> Reply:
        method = rec.name.lower()
        if method == "getme":
            return ok({"id": 987654321, "is_bot": True, "first_name": "Acme", "username": "acme"})
        if method == "getupdates":
            offset = int(rec.params.get("offset") or 0)
            fresh = [u for u in self.pending if u["update_id"] >= offset]
            return Reply(body={"ok": True, "result": fresh}, delay=0 if fresh else self.poll_delay)
        if method == "sendmessage":
            params = rec.params
            return ok(
                {
                    "message_id": 501,
                    "date": 1718000000,
                    "chat": {"id": int(params["chat_id"]), "type": "private"},
                    "text": params["text"],
                }
            )
        return ok(True)


def ok(result: Any) -> Reply:
    return Reply(body={"ok": True, "result": result})


def tg_error(status: int, description: str, **parameters: Any) -> Reply:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(status=status, body=body)


@pytest.fixture
async def bot_api() -> AsyncIterator[tuple[FakeAPI, BotAPI, str]]:
    state = BotAPI()
    api = FakeAPI(state)
    base = await api.start()
    yield api, state, base
    await api.close()


Make = Callable[..., TelegramAdapter]


@pytest.fixture
async def make(bot_api: tuple[FakeAPI, BotAPI, str]) -> AsyncIterator[Make]:
    made: list[TelegramAdapter] = []
    _, _, base = bot_api

    def _make(inbox: FakeInbox, **kwargs: Any) -> TelegramAdapter:
        settings = TelegramSettings(
            bot_token=TOKEN,
            api_base=kwargs.pop("api_base", base),
            poll_timeout=1,
            webhook_url=kwargs.pop("webhook_url", None),
            webhook_secret=kwargs.pop("webhook_secret", None),
        )
        kwargs.setdefault("backoff_initial", 0.05)
        kwargs.setdefault("request_timeout", 2)
        adapter = TelegramAdapter(settings, inbox, max_body_bytes=MAX_BODY, **kwargs)
        made.append(adapter)
        return adapter

    yield _make
    for adapter in made:
        await adapter.stop()


async def until(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# polling


async def test_polling_accepts_then_advances_the_offset(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, state, _ = bot_api
    state.pending = [payload("telegram", "message_text"), payload("telegram", "callback_query")]
    inbox = FakeInbox()
    adapter = make(inbox)
    await adapter.start()
    assert adapter.started
    await until(lambda: len(inbox.events) == 2)
    await until(lambda: adapter.offset == 100006)
    assert tuple(type(e) for e in inbox.events) == (CustomerMessage, CustomerButton)
    assert inbox.raws[0]["message"]["from"]["first_name"] == "Ann"  # raw keeps Telegram's keys
    assert "callback_query" in inbox.raws[1]  # each update kept with its own payload
    assert inbox.calls == 1  # the poll's updates in one transaction
    await until(lambda: any(r.params.get("offset") == "100006" for r in api.called("getUpdates")))
    polls = api.called("getUpdates")
    assert json.loads(polls[0].params["allowed_updates"]) == [
        "message",
        "edited_message",
        "callback_query",
        "my_chat_member",
    ]
    assert api.called("deleteWebhook")  # polling clears a stale webhook first
    await adapter.stop()
    assert not adapter.started


async def test_offset_stays_put_while_the_inbox_fails(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, state, _ = bot_api
    state.pending = [payload("telegram", "message_text")]
    inbox = FakeInbox()
    inbox.fail = RuntimeError("database is locked")
    adapter = make(inbox)
    await adapter.start()
    await until(lambda: inbox.calls >= 2)
    assert adapter.offset is None  # never confirmed to Telegram
    assert all("offset" not in r.params for r in api.called("getUpdates"))
    inbox.fail = None
    await until(lambda: len(inbox.events) == 1)
    await until(lambda: adapter.offset == 100002)


async def test_polling_backs_off_on_conflict_and_recovers(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, state, _ = bot_api
    conflict = tg_error(
        409,
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running",
    )
    api.script("getUpdates", conflict, conflict, tg_error(500, "Internal Server Error: restart"))
    state.pending = [payload("telegram", "message_text")]
    inbox = FakeInbox()
    adapter = make(inbox)
    await adapter.start()
    await until(lambda: len(inbox.events) == 1)
    assert len(api.called("getUpdates")) >= 4


async def test_polling_honours_retry_after(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, state, _ = bot_api
    api.script("getUpdates", tg_error(429, "Too Many Requests: retry after 1", retry_after=1))
    state.pending = [payload("telegram", "message_text")]
    inbox = FakeInbox()
    adapter = make(inbox)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await adapter.start()
    await until(lambda: len(inbox.events) == 1)
    assert loop.time() - began >= 0.9


async def test_stop_interrupts_a_long_poll_quickly(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    _, state, _ = bot_api
    state.poll_delay = 5
    adapter = make(FakeInbox())
    await adapter.start()
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await adapter.stop()
    assert loop.time() - began < 1


async def test_start_with_a_revoked_token_fails_clearly(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, _, _ = bot_api
    api.script("getMe", tg_error(401, "Unauthorized"))
    adapter = make(FakeInbox())
    with pytest.raises(RuntimeError, match="TELEGRAM_BOT_TOKEN"):
        await adapter.start()


def test_a_malformed_token_is_named() -> None:
    with pytest.raises(ValueError, match="TELEGRAM_BOT_TOKEN"):
        TelegramAdapter(TelegramSettings(bot_token="nope"), FakeInbox(), max_body_bytes=1)


# --------------------------------------------------------------------------------------------
# webhook


Hook = tuple[TelegramAdapter, FakeInbox, TestClient[Any, Any], FakeAPI]


@pytest.fixture
async def hook(bot_api: tuple[FakeAPI, BotAPI, str], make: Make) -> AsyncIterator[Hook]:
    api, _, _ = bot_api
    inbox = FakeInbox()
    adapter = make(
        inbox, webhook_url="https://desk.example.com/telegram/webhook", webhook_secret=SECRET
    )
    app = web.Application()
    adapter.install(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield adapter, inbox, client, api
    await client.close()


async def test_webhook_start_registers_the_url_and_secret(hook: Hook) -> None:
    adapter, _, _, api = hook
    await adapter.start()
    [call] = api.called("setWebhook")
    assert call.params["url"] == "https://desk.example.com/telegram/webhook"
    assert call.params["secret_token"] == SECRET
    assert api.called("getUpdates") == []


async def test_webhook_start_waits_out_a_set_webhook_429(hook: Hook) -> None:
    adapter, _, _, api = hook
    api.script("setWebhook", tg_error(429, "Too Many Requests: retry after 1", retry_after=1))
    await adapter.start()
    assert len(api.called("setWebhook")) == 2
    assert adapter.started


async def test_webhook_delivery_is_accepted(hook: Hook) -> None:
    _, inbox, client, _ = hook
    body = payload("telegram", "message_photo")
    resp = await client.post(
        "/telegram/webhook", json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 200
    [ev] = inbox.events
    assert isinstance(ev, CustomerMessage)
    assert inbox.raws[0] == body
    # Telegram redelivers on anything but 2xx; a redelivery is acked and deduped.
    again = await client.post(
        "/telegram/webhook", json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert again.status == 200
    assert len(inbox.events) == 1


async def test_webhook_records_unknown_kinds(hook: Hook) -> None:
    _, inbox, client, _ = hook
    resp = await client.post(
        "/telegram/webhook",
        json=payload("telegram", "future_update_kind"),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert resp.status == 200
    assert isinstance(inbox.events[0], Ignored)


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
async def test_webhook_secret_mismatch_is_401_and_writes_nothing(
    hook: Hook, secret: str | None
) -> None:
    _, inbox, client, _ = hook
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    resp = await client.post(
        "/telegram/webhook", json=payload("telegram", "message_text"), headers=headers
    )
    assert resp.status == 401
    assert inbox.calls == 0


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"message": {}}', b"\xff\xfe"])
async def test_webhook_malformed_body_is_400(hook: Hook, body: bytes) -> None:
    _, inbox, client, _ = hook
    resp = await client.post(
        "/telegram/webhook", data=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 400
    assert inbox.calls == 0


async def test_webhook_oversized_body_is_413(hook: Hook) -> None:
    _, inbox, client, _ = hook
    body = json.dumps({"update_id": 1, "pad": "x" * MAX_BODY})
    resp = await client.post(
        "/telegram/webhook", data=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 413
    assert inbox.calls == 0


async def test_webhook_inbox_failure_is_503(hook: Hook) -> None:
    _, inbox, client, _ = hook
    inbox.fail = RuntimeError("database is locked")
    resp = await client.post(
        "/telegram/webhook",
        json=payload("telegram", "message_text"),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert resp.status == 503


def test_webhook_mode_without_secret_is_refused() -> None:
    settings = TelegramSettings(bot_token=TOKEN, webhook_url="https://x.example/telegram/webhook")
    with pytest.raises(ValueError, match="TELEGRAM_WEBHOOK_SECRET"):
        TelegramAdapter(settings, FakeInbox(), max_body_bytes=1)


def test_polling_mode_installs_no_route(make: Make) -> None:
    app = web.Application()
    make(FakeInbox()).install(app)
    assert len(app.router.routes()) == 0


# --------------------------------------------------------------------------------------------
# send()


def text(n_buttons: int = 0) -> Outbound:
    return Outbound(
        channel="telegram",
        kind="text",
        destination="42",
        text="How did we do?",
        buttons=tuple(Button(text=str(i), data=f"rate:7:{i}") for i in range(1, n_buttons + 1)),
    )


async def test_text_with_a_rating_keyboard(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    api, _, _ = bot_api
    delivery = await make(FakeInbox()).send(text(7))
    assert delivery.platform_message_id == "501"
    [call] = api.called("sendMessage")
    params = call.params
    assert (params["chat_id"], params["text"]) == ("42", "How did we do?")
    rows = json.loads(params["reply_markup"])["inline_keyboard"]
    assert [len(r) for r in rows] == [5, 2]
    assert rows[0][4] == {"text": "5", "callback_data": "rate:7:5"}


async def test_plain_text_has_no_keyboard(bot_api: tuple[FakeAPI, BotAPI, str], make: Make) -> None:
    api, _, _ = bot_api
    await make(FakeInbox()).send(text())
    assert "reply_markup" not in api.called("sendMessage")[0].params


async def test_answer_callback(bot_api: tuple[FakeAPI, BotAPI, str], make: Make) -> None:
    api, _, _ = bot_api
    out = Outbound(
        channel="telegram",
        kind="answer_callback",
        destination="42",
        callback_query_id="4382bfdwdsb323b2d9",
    )
    delivery = await make(FakeInbox()).send(out)
    assert delivery.platform_message_id is None
    assert api.called("answerCallbackQuery")[0].params["callback_query_id"] == "4382bfdwdsb323b2d9"


@pytest.mark.parametrize(
    ("reply", "exc", "detail"),
    [
        (
            tg_error(429, "Too Many Requests: retry after 3", retry_after=3),
            RetryAfter,
            "retry after 3",
        ),
        (tg_error(403, "Forbidden: bot was blocked by the user"), Forbidden, "blocked"),
        (tg_error(403, "Forbidden: user is deactivated"), Forbidden, "deactivated"),
        (tg_error(400, "Bad Request: chat not found"), BadRequest, "chat not found"),
        (tg_error(400, "Bad Request: message text is empty"), BadRequest, "text is empty"),
        (tg_error(401, "Unauthorized"), BadRequest, "Unauthorized"),
        (tg_error(404, "Not Found: method not found"), BadRequest, "Not Found"),
        (tg_error(500, "Internal Server Error: restart"), Unavailable, "restart"),
        (tg_error(502, "Bad Gateway"), Unavailable, "Bad Gateway"),
        (Reply(status=502, body="<html>502 Bad Gateway</html>"), Unavailable, "undecodable"),
        (Reply(body={"ok": True, "result": {}}, delay=2.5), Unavailable, "timeout"),
    ],
)
async def test_send_error_mapping(
    bot_api: tuple[FakeAPI, BotAPI, str],
    make: Make,
    reply: Reply,
    exc: type[Exception],
    detail: str,
) -> None:
    api, _, _ = bot_api
    api.script("sendMessage", reply)
    with pytest.raises(exc, match=detail) as info:
        await make(FakeInbox(), request_timeout=1).send(text())
    if isinstance(info.value, RetryAfter):
        assert info.value.seconds == 3


async def test_connection_refused_is_unavailable(make: Make) -> None:
    with pytest.raises(Unavailable):
        await make(FakeInbox(), api_base="http://127.0.0.1:9").send(text())


async def test_slack_kinds_are_refused(make: Make) -> None:
    out = Outbound(channel="telegram", kind="slack_card", destination="42", text="x")
    with pytest.raises(BadRequest):
        await make(FakeInbox()).send(out)


async def test_errors_never_carry_the_token(make: Make) -> None:
    # aiohttp quotes the URL in some errors, and the token is part of every Bot API URL.
    adapter = make(FakeInbox(), api_base="http://exa mple.invalid:99999")
    with pytest.raises(Unavailable) as info:
        await adapter.send(text())
    assert TOKEN not in info.value.detail
    assert TOKEN not in str(info.value)
    assert "<token>" in info.value.detail


# --------------------------------------------------------------------------------------------
# conformance: real updates other projects collected (tests/payloads/telegram/conformance)

CONFORMANCE = sorted((PAYLOADS / "telegram" / "conformance").glob("*.json"))


def conformance_updates(first_id: int) -> list[dict[str, Any]]:
    """Every sample as the update Telegram would send, each with its own update_id."""
    updates = []
    for n, path in enumerate(CONFORMANCE):
        data = json.loads(path.read_text())
        data["update_id"] = first_id + n
        updates.append(data)
    return updates


def preview_disabled_text() -> dict[str, Any]:
    """A text message from a customer who turned link previews off in their settings."""
    data = payload("telegram", "message_text")
    data["message"]["text"] = "see https://example.com/order/1187 please"
    data["message"]["link_preview_options"] = {"is_disabled": True}
    return data


def assert_each_handled(inbox: FakeInbox, sent: list[dict[str, Any]]) -> None:
    """One event per update, with its raw body exactly as sent: no crash, no silent drop."""
    assert [e.external_id for e in inbox.events] == [str(u["update_id"]) for u in sent]
    assert [dict(r) for r in inbox.raws] == sent
    for event in inbox.events:
        if isinstance(event, Ignored):
            assert event.reason


def test_there_are_conformance_samples() -> None:
    assert len(CONFORMANCE) >= 71


async def test_polling_takes_a_message_with_link_previews_off(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    _, state, _ = bot_api
    state.pending = [preview_disabled_text(), payload("telegram", "callback_query")]
    inbox = FakeInbox()
    adapter = make(inbox)
    await adapter.start()
    await until(lambda: adapter.offset == 100006)
    [message, button] = inbox.events
    assert isinstance(message, CustomerMessage)
    assert message.text == "see https://example.com/order/1187 please"
    assert isinstance(button, CustomerButton)  # the next customer is not stuck behind it
    assert inbox.raws[0] == preview_disabled_text()


async def test_polling_records_an_update_aiogram_cannot_read_and_moves_on(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    _, state, _ = bot_api
    broken = {"update_id": 100001, "message": {"message_id": "not a number", "chat": 7}}
    state.pending = [broken, payload("telegram", "callback_query")]
    inbox = FakeInbox()
    adapter = make(inbox)
    await adapter.start()
    await until(lambda: adapter.offset == 100006)
    [ignored, button] = inbox.events
    assert isinstance(ignored, Ignored)
    assert ignored.reason.startswith("invalid update")
    assert isinstance(button, CustomerButton)
    assert inbox.raws[0] == broken


async def test_every_conformance_sample_by_polling(
    bot_api: tuple[FakeAPI, BotAPI, str], make: Make
) -> None:
    _, state, _ = bot_api
    sent = conformance_updates(first_id=500000)
    state.pending = sent
    inbox = FakeInbox()
    adapter = make(inbox)
    await adapter.start()
    await until(lambda: adapter.offset == 500000 + len(sent), timeout=20)
    assert_each_handled(inbox, sent)
    assert any(isinstance(e, CustomerMessage) for e in inbox.events)


async def test_every_conformance_sample_by_webhook(hook: Hook) -> None:
    _, inbox, client, _ = hook
    sent = conformance_updates(first_id=600000)
    for update in sent:
        resp = await client.post(
            "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert resp.status == 200, update
    assert_each_handled(inbox, sent)
