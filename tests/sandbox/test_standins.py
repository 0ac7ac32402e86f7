"""The stand-ins are only worth testing against if they refuse what the real services refuse.

Driven with the real clients (aiogram, slack_sdk, aiohttp), with a tiny fake desk where the
stand-in has to call one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns

TOKEN = "123456:ABC-standin-test"


class FakeDesk:
    """Records what the stand-ins deliver; answers with the statuses it is told to."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered in turn; 200 once used up
        # Run before each answer, as a desk that calls Slack while it answers would.
        self.before_answer: Callable[[], Awaitable[None]] | None = None
        self.answer = "ok"  # the body of a 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.before_answer is not None:
            await self.before_answer()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=self.answer if status == 200 else "nope")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def desk() -> AsyncIterator[FakeDesk]:
    d = FakeDesk()
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def standins(desk: FakeDesk) -> AsyncIterator[StandIns]:
    s = StandIns(
        desk_url=desk.url,
        telegram_token=TOKEN,
        whatsapp_access_token="EAAG-right",
        whatsapp_phone_number_id="1065",
        whatsapp_app_secret="app-secret",
        slack_bot_token="xoxb-right",
        slack_signing_secret="signing-secret",
        retry_base_delay=0.05,
    )
    await s.start()
    yield s
    await s.stop()


def _bot(standins: StandIns, token: str = TOKEN) -> Bot:
    api = TelegramAPIServer.from_base(standins.telegram_api_base)
    return Bot(token, session=AiohttpSession(api=api))


async def test_telegram_refuses_like_the_bot_api(standins: StandIns) -> None:
    bot = _bot(standins)
    wrong = _bot(standins, "999:not-the-token")
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await wrong.get_me()
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.send_message(42, "nobody wrote from here yet")
        await standins.telegram.customer_says(42, "hi")
        with pytest.raises(TelegramBadRequest, match="message text is empty"):
            await bot.send_message(42, " ")
        # Bursts pass, then 429 with retry_after, as on one real chat.
        with pytest.raises(TelegramRetryAfter) as caught:
            for i in range(10):
                await bot.send_message(42, f"reply {i}")
        assert caught.value.retry_after >= 1
        assert 1 <= len(standins.telegram.sent_to(42)) < 10
        standins.telegram.block(42)
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await bot.send_message(42, "are you there?")
    finally:
        await bot.session.close()
        await wrong.session.close()


async def test_telegram_updates_stay_until_an_offset_confirms_them(standins: StandIns) -> None:
    bot = _bot(standins)
    try:
        await standins.telegram.customer_says(7, "one")
        await standins.telegram.customer_says(7, "two")
        first = await bot.get_updates(timeout=0)
        again = await bot.get_updates(timeout=0)  # nothing confirmed: the same two again
        assert [u.message.text for u in first if u.message] == ["one", "two"]
        assert [u.update_id for u in again] == [u.update_id for u in first]
        rest = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
        assert rest == []
    finally:
        await bot.session.close()


async def test_telegram_409_for_a_second_poller_and_while_a_webhook_is_set(
    standins: StandIns,
) -> None:
    bot = _bot(standins)
    try:
        older = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.2)
        newer = asyncio.create_task(bot.get_updates(timeout=1))
        with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
            await older
        assert await newer == []
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="s3cret")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates(timeout=0)
        with pytest.raises(TelegramBadRequest, match="unallowed characters"):
            await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="not allowed!")
    finally:
        await bot.session.close()


async def test_telegram_webhook_is_retried_until_acknowledged(
    standins: StandIns, desk: FakeDesk
) -> None:
    bot = _bot(standins)
    desk.statuses = [500, 503]
    try:
        await bot.set_webhook(desk.url + "/telegram/webhook", secret_token="s3cret")
        await standins.telegram.customer_says(5, "hello")
        for _ in range(100):
            if len(desk.requests) >= 3:
                break
            await asyncio.sleep(0.05)
        bodies = {body for _, _, body in desk.requests}
        assert len(desk.requests) == 3 and len(bodies) == 1  # the same update, three times
        assert all(h["X-Telegram-Bot-Api-Secret-Token"] == "s3cret" for _, h, _ in desk.requests)
    finally:
        await bot.session.close()


async def _graph_post(standins: StandIns, token: str, body: Any) -> tuple[int, Any]:
    url = f"{standins.whatsapp_api_base}/1065/messages"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_whatsapp_graph_errors_and_signed_statuses(
    standins: StandIns, desk: FakeDesk
) -> None:
    text = {"messaging_product": "whatsapp", "to": "15550001", "type": "text"}
    status, body = await _graph_post(standins, "EAAG-wrong", {**text, "text": {"body": "x"}})
    assert status == 401 and body["error"]["code"] == 190
    assert body["error"]["type"] == "OAuthException"
    status, body = await _graph_post(standins, "EAAG-right", {**text, "text": {"body": ""}})
    assert status == 400 and body["error"]["code"] == 100

    # Nobody wrote in the last 24 h: accepted now, failed later with 131047, as Meta does it.
    status, body = await _graph_post(standins, "EAAG-right", {**text, "text": {"body": "hi"}})
    assert status == 200 and body["messages"][0]["message_status"] == "accepted"
    for _ in range(100):
        if desk.requests:
            break
        await asyncio.sleep(0.02)
    path, headers, raw = desk.requests[0]
    assert path == "/whatsapp/webhook"
    expected = "sha256=" + hmac.new(b"app-secret", raw, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected
    status_event = json.loads(raw)["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert status_event["status"] == "failed"
    assert status_event["errors"][0]["code"] == 131047


async def test_whatsapp_webhook_retried_with_the_same_bytes(
    standins: StandIns, desk: FakeDesk
) -> None:
    desk.statuses = [500]
    wamid = await standins.whatsapp.customer_says("15550002", "anyone?", name="Q")
    for _ in range(100):
        if len(desk.requests) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(desk.requests) == 2
    assert desk.requests[0][2] == desk.requests[1][2] and wamid.encode() in desk.requests[0][2]


async def test_slack_envelopes_limits_and_retried_events(
    standins: StandIns, desk: FakeDesk
) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=standins.slack_api_base)
    with pytest.raises(SlackApiError) as caught:
        await wrong.auth_test()
    assert caught.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C0NOWHERE", text="x")
    assert caught.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C0SUPPORT")
    assert caught.value.response["error"] == "no_text"
    posted = await client.chat_postMessage(channel="C0SUPPORT", text="card")
    await client.reactions_add(channel="C0SUPPORT", timestamp=posted["ts"], name="memo")
    with pytest.raises(SlackApiError) as caught:
        await client.reactions_add(channel="C0SUPPORT", timestamp=posted["ts"], name="memo")
    assert caught.value.response["error"] == "already_reacted"
    with pytest.raises(SlackApiError) as caught:
        for i in range(20):
            await client.chat_postMessage(channel="C0SUPPORT", text=f"burst {i}")
    assert caught.value.response.status_code == 429
    assert int(caught.value.response.headers["Retry-After"]) >= 1

    # An event the app does not acknowledge comes again, marked as a retry.
    desk.statuses = [500]
    await standins.slack.agent_replies("C0SUPPORT", posted["ts"], "U0ALICE", "hello")
    for _ in range(100):
        if len(desk.requests) >= 2:
            break
        await asyncio.sleep(0.02)
    (_, first, body1), (_, second, body2) = desk.requests[:2]
    assert "X-Slack-Retry-Num" not in first and second["X-Slack-Retry-Num"] == "1"
    assert json.loads(body1)["event_id"] == json.loads(body2)["event_id"]
    ts = second["X-Slack-Request-Timestamp"]
    base = f"v0:{ts}:".encode() + body2
    signature = "v0=" + hmac.new(b"signing-secret", base, hashlib.sha256).hexdigest()
    assert second["X-Slack-Signature"] == signature


async def test_slack_response_url_takes_five_posts(standins: StandIns, desk: FakeDesk) -> None:
    url = standins.slack._response_url()
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(6):
            async with http.post(url, json={"text": f"answer {i}"}) as r:
                statuses.append(r.status)
        async with http.post(url + "x", json={"text": "unknown"}) as r:
            unknown = r.status
    assert statuses == [200] * 5 + [404] and unknown == 404


async def test_buttons_are_held_to_the_platforms_rules(standins: StandIns) -> None:
    """The "My tickets" button: an inline button needs callback data (or a URL) of 1-64
    bytes; a WhatsApp reply button an id of 1-256 characters and a title of at most 20."""
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    bot = _bot(standins)
    await standins.telegram.customer_says(43, "hi")
    try:
        for button, error in (
            (InlineKeyboardButton(text="My tickets"), "text buttons are unallowed"),
            (InlineKeyboardButton(text="My tickets", callback_data=""), "BUTTON_DATA_INVALID"),
            (InlineKeyboardButton(text=" ", callback_data="status:mine"), "BUTTON_TEXT_INVALID"),
        ):
            markup = InlineKeyboardMarkup(inline_keyboard=[[button]])
            with pytest.raises(TelegramBadRequest, match=error):
                await bot.send_message(43, "Your ticket is #1", reply_markup=markup)
        good = InlineKeyboardButton(text="My tickets", callback_data="status:mine")
        sent = await bot.send_message(
            43, "Your ticket is #1", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[good]])
        )
        await standins.telegram.customer_presses(43, sent.message_id, "status:mine")
    finally:
        await bot.session.close()

    await standins.whatsapp.customer_says("15550043", "hi")

    def reply(**fields: Any) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "to": "15550043",
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Your ticket is #1"},
                "action": {"buttons": [{"type": "reply", "reply": fields}]},
            },
        }

    for fields in ({"title": "My tickets"}, {"id": "x" * 257, "title": "My tickets"}):
        status, body = await _graph_post(standins, "EAAG-right", reply(**fields))
        assert status == 400 and body["error"]["code"] == 100, body
    status, body = await _graph_post(
        standins, "EAAG-right", reply(id="status:mine", title="My tickets")
    )
    assert status == 200, body
    await standins.whatsapp.customer_presses("15550043", "status:mine", "My tickets")


async def test_telegram_set_my_commands_checks_commands_and_language(
    standins: StandIns,
) -> None:
    from aiogram.types import BotCommand

    bot = _bot(standins)
    try:
        for commands, language in (
            ([BotCommand(command="Status", description="My tickets")], None),
            ([BotCommand(command="status", description=" ")], None),
            ([BotCommand(command="status", description="My tickets")], "zh-hans"),
        ):
            with pytest.raises(TelegramBadRequest):
                await bot.set_my_commands(commands, language_code=language)
        assert standins.telegram.commands == {}
        ok = [BotCommand(command="status", description="我的工单")]
        assert await bot.set_my_commands(ok, language_code="zh")
        assert standins.telegram.commands == {
            "zh": [{"command": "status", "description": "我的工单"}]
        }
    finally:
        await bot.session.close()


async def test_slack_keeps_message_metadata_and_shows_it_only_when_asked(
    standins: StandIns,
) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    tag = {"event_type": "deskbot_outbox", "event_payload": {"outbox_id": 7}}
    card = await client.chat_postMessage(channel="C0SUPPORT", text="card", metadata=tag)
    reply = await client.chat_postMessage(
        channel="C0SUPPORT", text="in thread", thread_ts=card["ts"], metadata=tag
    )
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(
            channel="C0SUPPORT", text="x", metadata={"event_payload": {"a": 1}}
        )
    assert caught.value.response["error"] == "invalid_metadata_format"

    plain = await client.conversations_history(channel="C0SUPPORT")
    assert [m["ts"] for m in plain["messages"]] == [card["ts"]]
    assert "metadata" not in plain["messages"][0]
    full = await client.conversations_history(channel="C0SUPPORT", include_all_metadata=True)
    assert full["messages"][0]["metadata"] == tag
    thread = await client.conversations_replies(
        channel="C0SUPPORT", ts=card["ts"], include_all_metadata=True
    )
    assert [m["ts"] for m in thread["messages"]] == [card["ts"], reply["ts"]]
    assert thread["messages"][1]["metadata"] == tag
    with pytest.raises(SlackApiError) as caught:
        await client.conversations_replies(channel="C0SUPPORT", ts="1.000009")
    assert caught.value.response["error"] == "thread_not_found"


async def test_slack_views_open_takes_a_fresh_trigger_once(
    standins: StandIns, desk: FakeDesk
) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Reply"}, "blocks": []}
    with pytest.raises(SlackApiError) as caught:
        await client.views_open(trigger_id="12.made-up", view=view)
    assert caught.value.response["error"] == "invalid_trigger_id"
    slack = standins.slack
    fresh, old = slack._trigger("U0ALICE"), slack._trigger("U0ALICE")
    given, user, used = slack._triggers[old]
    slack._triggers[old] = (given - 4, user, used)  # given out four seconds ago: Slack allows 3
    with pytest.raises(SlackApiError) as caught:
        await client.views_open(trigger_id=old, view=view)
    assert caught.value.response["error"] == "expired_trigger_id"
    too_long = {**view, "title": {"type": "plain_text", "text": "Reply to all affected now!"}}
    with pytest.raises(SlackApiError) as caught:
        await client.views_open(trigger_id=fresh, view=too_long)
    assert caught.value.response["error"] == "invalid_arguments"
    opened = await client.views_open(trigger_id=fresh, view=view)
    assert opened["view"]["id"] in slack.modals
    with pytest.raises(SlackApiError) as caught:
        await client.views_open(trigger_id=fresh, view=view)
    assert caught.value.response["error"] == "exchanged_trigger_id"


async def test_slack_modal_submitted_closes_even_if_updated_meanwhile(
    standins: StandIns, desk: FakeDesk
) -> None:
    """The desk updates the modal (views.update) while it answers the modal's submission; the
    answer (an empty 200) still closes it, as in Slack."""
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    slack = standins.slack
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Reply"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reply",
                "label": {"type": "plain_text", "text": "Reply"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
    }
    opened = await client.views_open(trigger_id=slack._trigger("U0ALICE"), view=view)
    view_id = opened["view"]["id"]

    async def update() -> None:
        desk.before_answer = None
        await client.views_update(view_id=view_id, view=view)

    desk.before_answer, desk.answer = update, ""  # an empty 200: the modal is done
    status, _ = await slack.submits_modal(view_id)
    assert status == 200
    assert slack.modal_of("U0ALICE") is None
    with pytest.raises(SlackApiError) as caught:
        await client.views_update(view_id=view_id, view=view)
    assert caught.value.response["error"] == "not_found"


async def test_whatsapp_templates_are_checked_as_meta_does(
    standins: StandIns, desk: FakeDesk
) -> None:
    wa = standins.whatsapp
    wa.register_template("ticket_update", "en_US", "Update on ticket #{{1}}. Reply to read it.")
    base = {"messaging_product": "whatsapp", "to": "15550003", "type": "template"}

    def template(name: str, code: str, *params: str) -> dict[str, Any]:
        body = [{"type": "text", "text": p} for p in params]
        components = [{"type": "body", "parameters": body}] if params else []
        return {
            **base,
            "template": {"name": name, "language": {"code": code}, "components": components},
        }

    # Outside any window a template passes, and is shown as the customer reads it.
    status, body = await _graph_post(
        standins, "EAAG-right", template("ticket_update", "en_US", "7")
    )
    assert status == 200
    assert wa.sent_to("15550003")[-1]["rendered"] == "Update on ticket #7. Reply to read it."
    for sent, code in [
        (template("ticket_update", "es", "7"), 132001),  # not approved in that language
        (template("no_such_thing", "en_US", "7"), 132001),
        (template("ticket_update", "en_US"), 132000),  # one parameter missing
        (template("ticket_update", "en_US", "7", "Ana"), 132000),  # one too many
    ]:
        status, body = await _graph_post(standins, "EAAG-right", sent)
        assert status in (400, 404) and body["error"]["code"] == code, sent
    wa.set_template_status("ticket_update", "PAUSED")
    status, body = await _graph_post(
        standins, "EAAG-right", template("ticket_update", "en_US", "7")
    )
    assert body["error"]["code"] == 132015
    wa.set_template_status("ticket_update", "DISABLED")
    status, body = await _graph_post(
        standins, "EAAG-right", template("ticket_update", "en_US", "7")
    )
    assert body["error"]["code"] == 132016


async def test_whatsapp_window_counts_on_its_clock(standins: StandIns, desk: FakeDesk) -> None:
    wa = standins.whatsapp
    now = [1_800_000_000.0]
    wa.clock = lambda: now[0]
    wa.window_refused_on_send = True
    await wa.customer_says("15550004", "hello", name="Ana")
    message = wa.received[-1]
    assert message["timestamp"] == "1800000000"  # the webhook's time is the platform's clock
    text = {"messaging_product": "whatsapp", "to": "15550004", "type": "text"}
    now[0] += 23 * 3600
    status, _ = await _graph_post(standins, "EAAG-right", {**text, "text": {"body": "in time"}})
    assert status == 200
    now[0] += 2 * 3600  # 25 h after the customer wrote
    status, body = await _graph_post(standins, "EAAG-right", {**text, "text": {"body": "late"}})
    assert status == 400 and body["error"]["code"] == 131047
    assert wa.sent_to("15550004")[-1]["text"]["body"] == "in time"
