"""Stand-ins that stop and start again behave like platforms that never did: the same chats and
channels, and never an id handed out twice. Plus the Slack of deleted cards and archived
channels, and a Telegram that accepts a message and then goes quiet."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import DeskHistory, StandIns

from .test_standins import TOKEN, FakeDesk


@pytest.fixture
async def desk() -> AsyncIterator[FakeDesk]:
    d = FakeDesk()
    await d.start()
    yield d
    await d.stop()


def _standins(desk: FakeDesk, state: Path | None) -> StandIns:
    return StandIns(
        desk_url=desk.url,
        telegram_token=TOKEN,
        whatsapp_access_token="EAAG-right",
        whatsapp_phone_number_id="1065",
        whatsapp_app_secret="app-secret",
        slack_bot_token="xoxb-right",
        slack_signing_secret="signing-secret",
        rate_limits=False,
        retry_base_delay=0.05,
        state_path=state,
    )


async def _running(
    desk: FakeDesk, state: Path | None, body: Callable[[StandIns], Awaitable[None]]
) -> StandIns:
    s = _standins(desk, state)
    await s.start()
    try:
        await body(s)
    finally:
        await s.stop()
    return s


def _delivered(desk: FakeDesk, path: str) -> list[dict[str, Any]]:
    return [json.loads(body) for p, _h, body in desk.requests if p.endswith(path)]


async def test_a_restarted_sandbox_keeps_its_chats_and_never_reuses_an_id(
    desk: FakeDesk, tmp_path: Path
) -> None:
    state = tmp_path / "deskbot-sandbox.standins.json"
    client_box: list[str] = []

    async def first(s: StandIns) -> None:
        await s.telegram.customer_says(42, "My order never came", first_name="Kim")
        await s.whatsapp.customer_says("15551230001", "Hi there", name="Ana")
        client = AsyncWebClient(token="xoxb-right", base_url=s.slack_api_base)
        card = await client.chat_postMessage(channel="C0SUPPORT", text="#1 card")
        client_box.append(str(card["ts"]))
        await s.slack.agent_replies("C0SUPPORT", str(card["ts"]), "U0ALICE", "On it")

    one = await _running(desk, state, first)
    assert state.exists() and not one.continued

    async def second(s: StandIns) -> None:
        assert s.continued
        # The page still shows the conversations and the card with its thread.
        assert [m["text"] for m in s.telegram.received] == ["My order never came"]
        assert s.telegram.chats()[42]["first_name"] == "Kim"
        assert s.whatsapp.names == {"15551230001": "Ana"}
        assert [m["text"] for m in s.slack.messages("C0SUPPORT")] == ["#1 card"]
        assert [m["text"] for m in s.slack.thread("C0SUPPORT", client_box[0])] == ["On it"]
        # New ids carry on after the old ones.
        await s.telegram.customer_says(43, "the app is down!")
        await s.whatsapp.customer_says("15551230002", "hello")
        await s.slack.agent_replies("C0SUPPORT", client_box[0], "U0ALICE", "Fixed")

    await _running(desk, state, second)
    # What the desk was sent over both runs: never the same id twice.
    wa = [
        m["id"].removeprefix("wamid.SANDBOX")[:-8]
        for body in _delivered(desk, "/whatsapp/webhook")
        for m in body["entry"][0]["changes"][0]["value"].get("messages", [])
    ]
    slack_events = [b["event_id"] for b in _delivered(desk, "/slack/events")]
    assert len(wa) == len(set(wa)) == 2
    assert len(slack_events) == len(set(slack_events)) == 2
    reloaded = _standins(desk, state)
    assert reloaded.load()
    ids = [m["message_id"] for m in reloaded.telegram.received]
    assert ids == sorted(set(ids)) and len(ids) == 2


async def test_without_a_state_file_ids_continue_from_what_the_desk_holds(desk: FakeDesk) -> None:
    history = DeskHistory(
        telegram_update_ids=["100001", "100007"],
        telegram_message_ids=["1", "12"],
        telegram_chats={42: "Kim"},
        whatsapp_ids=["wamid.SANDBOX00000009ABCDEF01", "wamid.SANDBOX00000004ABCDEF01:sent"],
        whatsapp_last_inbound={"15551230001": 1.0e12},  # "just now" in any clock's eyes
        slack_ids=["Ev0000000005", "1700000000.000031", "command:17.a1b2c3d4e5f6"],
    )

    async def body(s: StandIns) -> None:
        s.continue_after(history)
        mid = await s.telegram.customer_says(43, "the app is down!")
        assert mid == 13
        assert s.telegram.updates[-1]["update_id"] == 100_008
        assert 42 in s.telegram.chats()  # Telegram still knows a chat that wrote before
        wamid = await s.whatsapp.customer_says("15551230002", "hello")
        assert wamid.startswith("wamid.SANDBOX00000010")
        ts = await s.slack.agent_replies("C0SUPPORT", "1700000000.000031", "U0ALICE", "hi")
        assert ts.endswith(".000032")
        (event,) = _delivered(desk, "/slack/events")
        assert event["event_id"] == "Ev0000000018"  # past the trigger id 17 too

    await _running(desk, None, body)


async def test_slack_deleted_cards_and_archived_channels_refuse_like_slack(
    desk: FakeDesk,
) -> None:
    async def body(s: StandIns) -> None:
        client = AsyncWebClient(token="xoxb-right", base_url=s.slack_api_base)
        card = await client.chat_postMessage(channel="C0SUPPORT", text="card")
        ts = str(card["ts"])
        await client.chat_postMessage(channel="C0SUPPORT", text="in thread", thread_ts=ts)
        await s.slack.delete_message("C0SUPPORT", ts)
        assert s.slack.messages("C0SUPPORT") == [] and s.slack.thread("C0SUPPORT", ts) == []
        for call, error in (
            (
                client.chat_postMessage(channel="C0SUPPORT", text="x", thread_ts=ts),
                "thread_not_found",
            ),
            (client.chat_update(channel="C0SUPPORT", ts=ts, text="x"), "message_not_found"),
        ):
            with pytest.raises(SlackApiError) as caught:
                await call
            assert caught.value.response["error"] == error
        deleted = _delivered(desk, "/slack/events")[-1]["event"]
        assert deleted["subtype"] == "message_deleted" and deleted["deleted_ts"] == ts

        other = await client.chat_postMessage(channel="C0BILLING", text="card")
        await s.slack.archive_channel("C0BILLING")
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C0BILLING", text="x")
        assert caught.value.response["error"] == "is_archived"
        with pytest.raises(SlackApiError) as caught:
            await client.chat_update(channel="C0BILLING", ts=str(other["ts"]), text="x")
        assert caught.value.response["error"] == "is_inactive"
        info = await client.conversations_info(channel="C0BILLING")
        assert info["channel"]["is_archived"] is True

    await _running(desk, None, body)


async def test_telegram_can_accept_a_message_and_hold_the_answer(desk: FakeDesk) -> None:
    async def body(s: StandIns) -> None:
        await s.telegram.customer_says(42, "hi")
        s.telegram.hold_after_accept("sendMessage")
        url = f"{s.telegram_api_base}/bot{TOKEN}/sendMessage"
        async with aiohttp.ClientSession() as http:
            call = asyncio.ensure_future(http.post(url, json={"chat_id": 42, "text": "ack"}))
            sent = await s.telegram.wait_for_sent(42, 1)
            assert sent[0]["text"] == "ack"  # Telegram has it ...
            await asyncio.sleep(0.2)
            assert not call.done()  # ... but the client has not heard so yet
            s.telegram.release_held()
            resp = await call
            assert (await resp.json())["result"]["text"] == "ack"
            resp.release()

    await _running(desk, None, body)


async def _state(s: StandIns) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(s.url + "/control/state") as r:
        assert r.status == 200
        return dict(await r.json())


async def test_the_fast_forwarded_desk_clock_survives_a_restart(
    desk: FakeDesk, tmp_path: Path
) -> None:
    """⏩ +15 min on the page, then a restart: the desk's clock is still 15 minutes ahead (the
    state's "now" is the desk's clock), so nothing made meanwhile lies in the desk's future."""
    state = tmp_path / "deskbot-sandbox.standins.json"
    moved: list[float] = []

    def advance(minutes: float) -> float:  # what `deskbot sandbox` plugs in (an OffsetClock)
        moved.append(minutes)
        return sum(moved)

    async def first(s: StandIns) -> None:
        s.advance_clock = advance
        async with aiohttp.ClientSession() as http:
            url = s.url + "/control/clock/advance"
            async with http.post(url, json={"minutes": 15}) as r:
                assert (await r.json()) == {"offset_minutes": 15}
        seen = await _state(s)
        assert seen["clock"]["offset_minutes"] == 15
        assert abs(seen["now"] - (time.time() + 900)) < 5

    await _running(desk, state, first)

    async def second(s: StandIns) -> None:
        assert s.clock_offset == 900  # what `deskbot sandbox` starts its OffsetClock with
        seen = await _state(s)
        assert seen["clock"]["offset_minutes"] == 15
        assert abs(seen["now"] - (time.time() + 900)) < 5
        # A moment before the fast-forward keeps the desk time it had then (no offset).
        before = seen["clock"]["steps"][0][0] - 60
        assert s.desk_time(before) == before
        assert s.desk_time(time.time()) > time.time() + 890

    await _running(desk, state, second)


async def test_a_restart_keeps_when_the_desk_wrote_on_whatsapp(
    desk: FakeDesk, tmp_path: Path
) -> None:
    """The page shows when each desk message arrived; a restart used to restamp them all with
    the restart's time."""
    state = tmp_path / "deskbot-sandbox.standins.json"
    seen: list[float] = []

    async def first(s: StandIns) -> None:
        await s.whatsapp.customer_says("15551230001", "Hi there", name="Ana")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{s.whatsapp_api_base}/1065/messages",
                json={"messaging_product": "whatsapp", "to": "15551230001", "text": {"body": "Hi"}},
                headers={"Authorization": "Bearer EAAG-right"},
            ) as r,
        ):
            assert r.status == 200, await r.text()
        [sent] = (await _state(s))["whatsapp"]["sent"]
        seen.append(sent["seen_at"])

    await _running(desk, state, first)
    await asyncio.sleep(1.5)

    async def second(s: StandIns) -> None:
        [sent] = (await _state(s))["whatsapp"]["sent"]
        assert sent["seen_at"] == seen[0]
        assert sent["seen_at"] < time.time() - 1

    await _running(desk, state, second)
