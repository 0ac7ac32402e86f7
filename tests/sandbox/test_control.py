"""The control API behind the sandbox page: what a person playing customer or agent gets back.

Driven over HTTP like the page and curl drive it; a real desk where the answer comes from the
desk (the customer's language), a stand-in desk that just says 200 where only the control API's
own answer matters (its errors, its state).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns
from tests.sandbox.running import running_sandbox

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
async def quiet_desk() -> AsyncIterator[str]:
    """Answers every webhook with 200 and does nothing: the control API is under test."""

    async def ok(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def standins(quiet_desk: str) -> AsyncIterator[StandIns]:
    s = StandIns.for_sandbox(quiet_desk, rate_limits=False)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _call(
    http: aiohttp.ClientSession, url: str, method: str, path: str, body: Any = None
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    async with http.request(method, url + path, data=data) as resp:
        return resp.status, await resp.text()


async def test_a_telegram_customer_with_chinese_set_reads_the_chinese_texts(
    database_url: str, http: aiohttp.ClientSession
) -> None:
    async with running_sandbox(database_url) as (standins, _desk):
        for chat_id, language in ((801, "zh-hans"), (802, None)):
            # Too few letters to tell a language, so only the language the app reports can pick
            # the texts (words in a language are answered in it whatever the app said).
            body = {"chat_id": chat_id, "text": "ok?? 🙁", "first_name": "Wei"}
            if language:
                body["language_code"] = language
            status, text = await _call(
                http, standins.url, "POST", "/control/telegram/customer_says", body
            )
            assert status == 200, text
        zh = await standins.telegram.wait_for_sent(801, 1)
        en = await standins.telegram.wait_for_sent(802, 1)
        assert zh[0]["text"].startswith("我们已收到您的消息，工单号为 #"), zh[0]["text"]
        assert en[0]["text"].startswith("Thanks, we got your message."), en[0]["text"]


async def test_state_names_the_agents_the_channels_and_the_bot(
    standins: StandIns, http: aiohttp.ClientSession
) -> None:
    slack = AsyncWebClient(token=standins.slack_bot_token, base_url=standins.slack_api_base)
    card = await slack.chat_postMessage(channel="C0VIP", text="#3 URGENT · Ann (Telegram): hi")
    await slack.chat_postMessage(channel="C0VIP", text="thread", thread_ts=card["ts"])
    await standins.telegram.customer_says(42, "hello", "Ann")
    status, text = await _call(http, standins.url, "GET", "/control/state")
    assert status == 200
    state = json.loads(text)
    assert state["agents"]["U0ALICE"] == {"name": "alice", "real_name": "Alice"}
    assert set(state["agents"]) >= {"U0ALICE", "U0BOB", "U0CAROL"}
    assert state["channels"] == {
        "C0SUPPORT": {"name": "support"},
        "C0VIP": {"name": "vip"},
        "C0BILLING": {"name": "billing"},
        "C0ZH": {"name": "support-zh"},
    }
    assert state["bot"] == {"user_id": "U0DESKBOT", "name": "deskbot"}
    assert isinstance(state["now"], float)
    # The shapes the README and older scripts read are still there.
    assert state["telegram"]["chats"]["42"]["first_name"] == "Ann"
    assert [m["text"] for m in state["telegram"]["received"]] == ["hello"]
    assert state["telegram"]["sent"] == []
    assert [m["text"] for m in state["slack"]["C0VIP"]] == ["#3 URGENT · Ann (Telegram): hi"]
    assert [r["text"] for r in state["slack"]["C0VIP"][0]["replies"]] == ["thread"]
    assert state["slack"]["C0SUPPORT"] == []


async def test_state_lists_whatsapp_numbers_and_when_the_desk_wrote_to_them(
    standins: StandIns, http: aiohttp.ClientSession
) -> None:
    await _call(
        http,
        standins.url,
        "POST",
        "/control/whatsapp/customer_says",
        {"wa_id": "15551234567", "text": "hi", "name": "Sheena"},
    )
    await standins.whatsapp.customer_says("447700900123", "hello")
    # The desk answers the first number, as it would through the Cloud API.
    async with http.post(
        f"{standins.whatsapp_api_base}/{standins.whatsapp_phone_number_id}/messages",
        json={"messaging_product": "whatsapp", "to": "15551234567", "text": {"body": "Thanks"}},
        headers={"Authorization": f"Bearer {standins.whatsapp_access_token}"},
    ) as resp:
        assert resp.status == 200
    before = json.loads((await _call(http, standins.url, "GET", "/control/state"))[1])
    await asyncio.sleep(0.01)
    after = json.loads((await _call(http, standins.url, "GET", "/control/state"))[1])
    assert after["whatsapp"]["numbers"] == ["15551234567", "447700900123"]
    assert after["whatsapp"]["names"] == {"15551234567": "Sheena"}
    [sent] = after["whatsapp"]["sent"]
    assert sent["text"] == {"body": "Thanks"}
    # When the page first could have shown it, and it stays put from one poll to the next.
    assert before["now"] - 5 < sent["seen_at"] <= before["now"]
    assert before["whatsapp"]["sent"][0]["seen_at"] == sent["seen_at"]


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    (
        "POST",
        "/control/telegram/customer_says",
        {"chat_id": "abc", "text": "hi"},
        400,
        "chat_id must be a number (Telegram chat ids are integers), got 'abc'",
    ),
    (
        "POST",
        "/control/telegram/customer_says",
        {"chat_id": 4.5, "text": "hi"},
        400,
        "chat_id must be a number (Telegram chat ids are integers), got 4.5",
    ),
    (
        "POST",
        "/control/telegram/customer_says",
        {"text": "hi"},
        400,
        'missing chat_id: /control/telegram/customer_says takes {"chat_id": 42, "text"',
    ),
    (
        "POST",
        "/control/telegram/customer_says",
        b"chat_id=42&text=hi",
        400,
        "the body must be JSON (",
    ),
    (
        "POST",
        "/control/telegram/customer_says",
        {"chat_id": 42, "text": "   "},
        400,
        "text must not be blank",
    ),
    (
        "POST",
        "/control/telegram/customer_says",
        {"chat_id": 42, "text": "hi", "language_code": "Chinese please"},
        400,
        "language_code must be a language tag as the Telegram app sends it",
    ),
    (
        "POST",
        "/control/telegram/customer_presses",
        {"chat_id": 42, "message_id": "the first", "data": "rate:1:5"},
        400,
        "message_id must be a number (the bot's message with the button, from"
        " GET /control/telegram/sent?chat_id=42), got 'the first'",
    ),
    (
        "GET",
        "/control/telegram/sent?chat_id=abc",
        None,
        400,
        "chat_id must be a number (Telegram chat ids are integers), got 'abc'",
    ),
    ("GET", "/control/telegram/sent", None, 400, "chat_id is required"),
    (
        "POST",
        "/control/whatsapp/customer_says",
        {"wa_id": "+1 555 123 4567", "text": "hi"},
        400,
        "wa_id must be the customer's phone number in digits only, country code first",
    ),
    ("GET", "/control/whatsapp/sent?wa_id=sheena", None, 400, "got 'sheena'"),
    (
        "GET",
        "/control/slack/messages?channel=general",
        None,
        400,
        "channel must be one of the sandbox's Slack channels: C0SUPPORT (#support), C0VIP (#vip)",
    ),
    (
        "POST",
        "/control/slack/agent_replies",
        {"channel": "#support", "thread_ts": "1.000001", "user": "U0ALICE", "text": "hi"},
        400,
        "got '#support'",
    ),
    (
        "POST",
        "/control/slack/agent_replies",
        {"channel": "C0SUPPORT", "thread_ts": "1795645156.000001", "user": "U0ALICE", "text": "x"},
        400,
        "no message with ts 1795645156.000001 in C0SUPPORT",
    ),
    (
        "POST",
        "/control/slack/agent_clicks",
        {"channel": "C0SUPPORT", "message_ts": "card 1", "action_id": "x", "user": "U0ALICE"},
        400,
        "message_ts must be a Slack message ts like 1795645156.000001",
    ),
    (
        "POST",
        "/control/slack/slash_command",
        {"command": "desk", "user": "U0ALICE", "channel": "C0SUPPORT"},
        400,
        "command must be a slash command like /desk, got 'desk'",
    ),
    (
        "POST",
        "/control/slack/slash_command",
        {"command": "/desk", "user": "alice", "channel": "C0SUPPORT"},
        400,
        "user must be a Slack user id such as U0ALICE (agents: U0ALICE (alice)",
    ),
    ("GET", "/control/telegram/customer_says", None, 405, "takes POST, not GET"),
    ("GET", "/control/telegram/says", None, 404, "POST /control/telegram/customer_says {"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), BAD_REQUESTS)
async def test_a_bad_request_says_what_is_wrong(
    standins: StandIns,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    says: str,
) -> None:
    got_status, text = await _call(http, standins.url, method, path, body)
    assert (got_status, says) == (status, says) and says in text, text
    # Nothing half-happened: no customer wrote, no agent replied.
    assert standins.telegram.received == []
    assert standins.whatsapp.received == []
    assert all(m == [] for m in standins.slack.channels.values())


async def test_a_click_on_a_button_the_card_no_longer_has_names_the_ones_it_has(
    standins: StandIns, http: aiohttp.ClientSession
) -> None:
    slack = AsyncWebClient(token=standins.slack_bot_token, base_url=standins.slack_api_base)
    blocks = [
        {
            "type": "actions",
            "block_id": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "ticket_resolve",
                    "text": {"type": "plain_text", "text": "Resolve"},
                }
            ],
        }
    ]
    card = await slack.chat_postMessage(channel="C0BILLING", text="#4 HIGH", blocks=blocks)
    click = {"channel": "C0BILLING", "message_ts": card["ts"], "user": "U0BOB"}
    status, text = await _call(
        http,
        standins.url,
        "POST",
        "/control/slack/agent_clicks",
        {**click, "action_id": "ticket_claim"},
    )
    assert status == 400
    assert text == f"the card {card['ts']} has no button 'ticket_claim'; it has ticket_resolve"
    status, text = await _call(
        http,
        standins.url,
        "POST",
        "/control/slack/agent_clicks",
        {**click, "action_id": "ticket_resolve"},
    )
    assert (status, json.loads(text)) == (200, {"desk_status": 200})


async def test_the_page_has_an_icon(standins: StandIns, http: aiohttp.ClientSession) -> None:
    async with http.get(standins.url + "/favicon.ico") as resp:
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
        assert (await resp.text()).startswith("<svg")
