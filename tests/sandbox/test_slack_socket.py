"""The Slack stand-in's Socket Mode, as Slack does it: apps.connections.open with the app-level
token only, hello, envelopes with the Events API's payloads, acks by envelope_id, a retry in a
new envelope when the ack does not come, and disconnect with refresh_requested."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns
from sandbox.ports import free_port as _free_port

APP_TOKEN = "xapp-1-A0DESKBOT-standin"
ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
async def standins() -> AsyncIterator[StandIns]:
    s = StandIns(
        desk_url="http://127.0.0.1:9",  # no desk: every delivery goes over the socket
        telegram_token="1:a",
        whatsapp_access_token="t",
        whatsapp_phone_number_id="1",
        whatsapp_app_secret="s",
        slack_bot_token="xoxb-standin",
        slack_signing_secret="sig",
        retry_base_delay=0.01,
        slack_app_token=APP_TOKEN,
    )
    s.slack.socket.ack_timeout = 0.5
    await s.start()
    yield s
    await s.stop()


async def test_connections_open_takes_the_app_token_only(standins: StandIns) -> None:
    with pytest.raises(SlackApiError) as bot:
        await AsyncWebClient(base_url=standins.slack_api_base).apps_connections_open(
            app_token="xoxb-standin"
        )
    assert bot.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as wrong:
        await AsyncWebClient(base_url=standins.slack_api_base).apps_connections_open(
            app_token="xapp-1-wrong"
        )
    assert wrong.value.response["error"] == "invalid_auth"
    opened = await AsyncWebClient(base_url=standins.slack_api_base).apps_connections_open(
        app_token=APP_TOKEN
    )
    assert str(opened["url"]).startswith(standins.url.replace("http://", "ws://"))


async def _connect(standins: StandIns, http: aiohttp.ClientSession) -> Any:
    opened = await AsyncWebClient(base_url=standins.slack_api_base).apps_connections_open(
        app_token=APP_TOKEN
    )
    ws = await http.ws_connect(str(opened["url"]))
    hello = await ws.receive_json()
    assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": "A0DESKBOT"}
    return ws


async def test_envelopes_acks_retries_and_refresh(standins: StandIns) -> None:
    slack = standins.slack
    async with aiohttp.ClientSession() as http:
        ws = await _connect(standins, http)
        # A URL from apps.connections.open is good once.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{standins.url}/slack/socket/{'0' * 24}")

        # An agent's thread reply: an events_api envelope; unacknowledged, it comes again in
        # a new envelope with retry_attempt 1 and the same event_id.
        reply = asyncio.ensure_future(slack.agent_replies("C0SUPPORT", "1.000001", "U0BOB", "hi"))
        first = await ws.receive_json()
        assert first["type"] == "events_api" and first["retry_attempt"] == 0
        assert first["payload"]["type"] == "event_callback"
        assert first["payload"]["event"]["text"] == "hi"
        await reply  # the first attempt timed out (no ack)
        second = await ws.receive_json()
        assert second["envelope_id"] != first["envelope_id"]
        assert (second["retry_attempt"], second["retry_reason"]) == (1, "http_error")
        assert second["payload"]["event_id"] == first["payload"]["event_id"]
        await ws.send_str(json.dumps({"envelope_id": second["envelope_id"]}))

        # A slash command: its ack's payload is the answer.
        command = asyncio.ensure_future(slack.slash_command("/desk", "help", "U0BOB", "C0SUPPORT"))
        envelope = await ws.receive_json()
        assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"]
        assert envelope["payload"]["command"] == "/desk"
        await ws.send_str(
            json.dumps({"envelope_id": envelope["envelope_id"], "payload": {"text": "ok"}})
        )
        assert await command == [{"ack": '{"text": "ok"}'}]
        acked = [e for e in slack.socket.envelopes if e.acked]
        assert [e.type for e in acked] == ["events_api", "slash_commands"]

        # Slack rotates the connection: disconnect, then it closes.
        await slack.socket.refresh()
        assert await ws.receive_json() == {
            "type": "disconnect",
            "reason": "refresh_requested",
            "debug_info": {"host": "sandbox"},
        }
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()


async def test_the_sandbox_can_run_slack_over_socket_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deskbot sandbox --slack-socket`: the same stand-ins, Slack over Socket Mode."""
    from bot.app import DeskApp
    from bot.commands.sandbox import sandbox_settings
    from bot.domain.rules import load_rules

    monkeypatch.setenv("DESK_MODEL", "rules")
    monkeypatch.setenv("DESK_RULES", str(ROOT / "rules.yaml"))
    port = _free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", slack_socket=True)
    await standins.start()
    settings = sandbox_settings(
        standins, desk_port=port, database_url=f"sqlite+aiosqlite:///{tmp_path / 'sb.db'}"
    )
    assert settings.slack is not None and settings.slack.socket_mode
    desk = DeskApp(settings, load_rules(ROOT / "rules.yaml"), idle_poll=0.05)
    await desk.start()
    try:
        assert await standins.slack.socket.wait_for_connections(1)
        await standins.telegram.customer_says(5, "Hello from the sandbox", first_name="Sam")
        assert await standins.slack.wait_for(lambda: bool(standins.slack.messages("C0SUPPORT")), 10)
        card = standins.slack.messages("C0SUPPORT")[0]
        await standins.slack.agent_replies("C0SUPPORT", card["ts"], "U0ALICE", "Hi Sam!")
        sent = await standins.telegram.wait_for_sent(5, 2)
        assert sent[1]["text"] == "Hi Sam!"
    finally:
        await desk.stop()
        await standins.stop()
