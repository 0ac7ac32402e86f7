"""Slack adapter: parsing of recorded payloads, the signed HTTP endpoint, and send()'s error map.

The Web API side runs the real slack_sdk AsyncWebClient (and Bolt's auth.test) against a small
fake server that answers with Slack's envelopes (HTTP 200 + ok:false, 429 + Retry-After, 5xx).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.signature import SignatureVerifier

from adapters.slack import (
    SlackAdapter,
    parse_block_actions,
    parse_event_callback,
    parse_slash_command,
)
from bot.base.settings import SlackSettings
from bot.domain.events import (
    AgentAction,
    AgentMessage,
    Ignored,
    SlashCommand,
    event_from_json,
    event_to_json,
)
from bot.domain.outbound import BadRequest, Outbound, RetryAfter, Unavailable

from .adapter_fakes import FakeAPI, FakeInbox, Recorded, Reply, payload

SECRET = "slack-signing-secret"
TOKEN = "xoxb-1-test"
MAX_BODY = 64 * 1024

# --------------------------------------------------------------------------------------------
# parsing


def test_thread_reply_is_an_agent_message_in_the_cards_conversation() -> None:
    ev = parse_event_callback(payload("slack", "event_message_thread_reply"))
    assert isinstance(ev, AgentMessage)
    assert ev.external_id == "Ev0THREAD01"
    assert ev.conversation == "slack:C0SUPPORT:1718000000.000100"
    assert (ev.slack_channel, ev.user_id, ev.ts) == ("C0SUPPORT", "U0AGENT", "1718000100.000200")
    assert ev.thread_ts == "1718000000.000100"
    assert ev.text == "Hi Ann, we are on it."


def test_top_level_message_keys_on_its_own_ts() -> None:
    ev = parse_event_callback(payload("slack", "event_message_top_level"))
    assert isinstance(ev, AgentMessage)
    assert ev.thread_ts is None
    assert ev.conversation == "slack:C0SUPPORT:1718000200.000300"


def test_thread_broadcast_counts_as_an_agent_message() -> None:
    ev = parse_event_callback(payload("slack", "event_message_thread_broadcast"))
    assert isinstance(ev, AgentMessage)
    assert ev.text == "Fixed for everyone"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("event_message_changed", "message subtype message_changed"),
        ("event_message_deleted", "message subtype message_deleted"),
        ("event_message_other_bot", "message subtype bot_message"),
        ("event_app_mention", "event app_mention"),
    ],
)
def test_other_events_are_recorded_as_ignored(name: str, reason: str) -> None:
    body = payload("slack", name)
    ev = parse_event_callback(body)
    assert isinstance(ev, Ignored)
    assert ev.reason == reason
    assert ev.external_id == body["event_id"]


def test_a_bot_message_without_subtype_is_ignored() -> None:
    ev = parse_event_callback(payload("slack", "event_message_own_bot"))
    assert isinstance(ev, Ignored)
    assert ev.reason == "message from a bot"


def test_claim_button() -> None:
    ev = parse_block_actions(payload("slack", "block_actions_claim"))
    assert isinstance(ev, AgentAction)
    assert (ev.action, ev.ticket_id) == ("claim", 42)
    assert (ev.user_id, ev.user_name) == ("U0AGENT", "maria.k")
    assert ev.external_id == "action:1718000050.123456:U0AGENT"
    assert ev.conversation == "slack:C0SUPPORT:1718000000.000100"
    assert (ev.slack_channel, ev.message_ts) == ("C0SUPPORT", "1718000000.000100")


def test_resolve_button_takes_username_when_name_is_missing() -> None:
    ev = parse_block_actions(payload("slack", "block_actions_resolve"))
    assert isinstance(ev, AgentAction)
    assert (ev.action, ev.ticket_id, ev.user_name) == ("resolve", 42, "li.wei")


def test_unknown_action_is_ignored() -> None:
    ev = parse_block_actions(payload("slack", "block_actions_unknown"))
    assert isinstance(ev, Ignored)
    assert ev.reason == "action escalate"
    assert ev.external_id == "action:1596530385.1:W111"


def test_claim_with_a_non_numeric_value_is_ignored() -> None:
    body = payload("slack", "block_actions_claim")
    body["actions"][0]["value"] = "ticket_42"
    assert isinstance(parse_block_actions(body), Ignored)


def test_desk_command() -> None:
    body = payload("slack", "slash_desk")
    ev = parse_slash_command(body)
    assert isinstance(ev, SlashCommand)
    assert ev.external_id == f"command:{body['trigger_id']}"
    assert (ev.command, ev.text, ev.user_id) == ("/desk", "status", "U0LEAD")
    assert ev.response_url == body["response_url"]


def test_other_command_is_ignored() -> None:
    ev = parse_slash_command(payload("slack", "slash_other"))
    assert isinstance(ev, Ignored)
    assert ev.reason == "command /ticket"


@pytest.mark.parametrize(
    "body",
    [{}, {"type": "event_callback"}, {"type": "event_callback", "event": "nonsense"}],
)
def test_garbage_never_crashes(body: dict[str, Any]) -> None:
    for parse in (parse_event_callback, parse_block_actions, parse_slash_command):
        ev = parse(body)
        assert isinstance(ev, Ignored)
        assert ev.external_id  # still dedupable


def test_events_survive_the_inbox_json_round_trip() -> None:
    for ev in (
        parse_event_callback(payload("slack", "event_message_thread_reply")),
        parse_block_actions(payload("slack", "block_actions_claim")),
        parse_slash_command(payload("slack", "slash_desk")),
    ):
        assert event_from_json(json.loads(json.dumps(event_to_json(ev)))) == ev


# --------------------------------------------------------------------------------------------
# the HTTP endpoint


def slack_default(rec: Recorded) -> Reply:
    if rec.name == "auth.test":
        return Reply(
            body={
                "ok": True,
                "url": "https://acme.slack.com/",
                "team": "Acme",
                "user": "deskbot",
                "team_id": "T111",
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
            },
            headers={"x-oauth-scopes": "chat:write,reactions:write"},
        )
    if rec.name in ("chat.postMessage", "chat.update"):
        params = rec.params
        return Reply(
            body={
                "ok": True,
                "channel": params.get("channel"),
                "ts": params.get("ts") or "1718001000.000100",
                "message": {"type": "message", "text": params.get("text")},
            }
        )
    if rec.name.startswith("hook"):
        return Reply(body="ok")
    return Reply(body={"ok": True})


@pytest.fixture
async def slack_api() -> AsyncIterator[tuple[FakeAPI, str]]:
    api = FakeAPI(slack_default)
    base = await api.start()
    yield api, base
    await api.close()


@pytest.fixture
async def desk(
    slack_api: tuple[FakeAPI, str],
) -> AsyncIterator[tuple[SlackAdapter, FakeInbox, TestClient[Any, Any], FakeAPI]]:
    api, base = slack_api
    inbox = FakeInbox()
    adapter = SlackAdapter(
        SlackSettings(bot_token=TOKEN, signing_secret=SECRET, api_base=f"{base}/api/"),
        inbox,
        max_body_bytes=MAX_BODY,
        request_timeout=1,
    )
    app = web.Application()
    adapter.install(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield adapter, inbox, client, api
    await client.close()
    await adapter.stop()


def signed(body: str, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if at is None else at)
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert sig is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def as_json(name: str) -> tuple[str, dict[str, str]]:
    body = json.dumps(payload("slack", name))
    return body, {**signed(body), "Content-Type": "application/json"}


def as_form(fields: dict[str, Any]) -> tuple[str, dict[str, str]]:
    body = urlencode(fields)
    return body, {**signed(body), "Content-Type": "application/x-www-form-urlencoded"}


Desk = tuple[SlackAdapter, FakeInbox, TestClient[Any, Any], FakeAPI]


async def test_url_verification_answers_the_challenge(desk: Desk) -> None:
    _, inbox, client, api = desk
    body, headers = as_json("url_verification")
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["challenge"] == payload("slack", "url_verification")["challenge"]
    assert inbox.calls == 0
    assert api.called("auth.test") == []


async def test_thread_reply_is_accepted_before_the_ack(desk: Desk) -> None:
    _, inbox, client, api = desk
    body, headers = as_json("event_message_thread_reply")
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    assert [type(e) for e in inbox.events] == [AgentMessage]
    assert inbox.events[0].external_id == "Ev0THREAD01"
    assert inbox.raws[0] == payload("slack", "event_message_thread_reply")
    # auth.test went to the configured base_url, with the bot token.
    [auth] = api.called("auth.test")
    assert auth.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_a_retried_delivery_is_acked_and_deduped(desk: Desk) -> None:
    _, inbox, client, api = desk
    body, headers = as_json("event_message_thread_reply")
    first = await client.post("/slack/events", data=body, headers=headers)
    retry = await client.post(
        "/slack/events",
        data=body,
        headers={**headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (first.status, retry.status) == (200, 200)
    assert len(inbox.events) == 1
    assert len(api.called("auth.test")) == 1  # cached


async def test_the_bots_own_messages_are_dropped(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body, headers = as_json("event_message_own_bot")
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    assert inbox.events == []


async def test_unknown_event_kinds_are_recorded_and_acked(desk: Desk) -> None:
    _, inbox, client, _ = desk
    for name in ("event_app_mention", "event_message_changed"):
        body, headers = as_json(name)
        resp = await client.post("/slack/events", data=body, headers=headers)
        assert resp.status == 200
    assert [type(e) for e in inbox.events] == [Ignored, Ignored]


async def test_claim_click_is_accepted(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body, headers = as_form({"payload": json.dumps(payload("slack", "block_actions_claim"))})
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    [ev] = inbox.events
    assert isinstance(ev, AgentAction)
    assert (ev.action, ev.ticket_id, ev.user_name) == ("claim", 42, "maria.k")


async def test_desk_command_is_accepted_and_acked_quietly(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body, headers = as_form(payload("slack", "slash_desk"))
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    assert await resp.text() == ""
    [ev] = inbox.events
    assert isinstance(ev, SlashCommand)
    assert ev.text == "status"


async def test_unknown_command_is_recorded_and_answered(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body, headers = as_form(payload("slack", "slash_other"))
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 200
    assert "/ticket" in await resp.text()
    assert isinstance(inbox.events[0], Ignored)


@pytest.mark.parametrize("case", ["wrong_secret", "missing", "stale", "tampered", "bad_ts"])
async def test_bad_signatures_get_401_and_write_nothing(desk: Desk, case: str) -> None:
    _, inbox, client, api = desk
    body, headers = as_json("event_message_thread_reply")
    match case:
        case "wrong_secret":
            headers.update(signed(body, secret="not-the-secret"))
        case "missing":
            del headers["X-Slack-Signature"]
        case "stale":
            headers.update(signed(body, at=int(time.time()) - 600))
        case "tampered":
            body = body.replace("on it", "on IT")
        case "bad_ts":
            headers["X-Slack-Request-Timestamp"] = "yesterday"
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 401
    assert inbox.calls == 0
    assert api.called("auth.test") == []


async def test_malformed_json_is_a_400(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body = '{"type": "event_callback", "event": '
    resp = await client.post(
        "/slack/events", data=body, headers={**signed(body), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert inbox.calls == 0


async def test_oversized_body_is_a_413(desk: Desk) -> None:
    _, inbox, client, _ = desk
    body = json.dumps({"type": "event_callback", "pad": "x" * MAX_BODY})
    resp = await client.post("/slack/events", data=body, headers=signed(body))
    assert resp.status == 413
    assert inbox.calls == 0


async def test_inbox_failure_is_a_503_so_slack_retries(desk: Desk) -> None:
    _, inbox, client, _ = desk
    inbox.fail = RuntimeError("database is locked")
    body, headers = as_json("event_message_thread_reply")
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 503
    inbox.fail = None
    retry = await client.post("/slack/events", data=body, headers={**headers, **signed(body)})
    assert retry.status == 200
    assert len(inbox.events) == 1


async def test_auth_test_outage_is_a_503_not_a_silent_200(desk: Desk) -> None:
    _, inbox, client, api = desk
    api.script("auth.test", Reply(status=503, body="<html>Service Unavailable</html>"))
    body, headers = as_json("event_message_thread_reply")
    resp = await client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 503
    assert inbox.calls == 0
    retry = await client.post("/slack/events", data=body, headers=headers)
    assert retry.status == 200
    assert len(inbox.events) == 1


# --------------------------------------------------------------------------------------------
# start()


async def test_start_rejects_a_bad_token(desk: Desk) -> None:
    adapter, _, _, api = desk
    api.script("auth.test", Reply(body={"ok": False, "error": "invalid_auth"}))
    with pytest.raises(RuntimeError, match="invalid_auth"):
        await adapter.start()
    assert not adapter.started


async def test_start_survives_slack_being_down(desk: Desk) -> None:
    adapter, _, _, api = desk
    api.script("auth.test", Reply(status=500, body={"ok": False, "error": "internal_error"}))
    await adapter.start()
    assert adapter.started
    await adapter.stop()
    assert not adapter.started


# --------------------------------------------------------------------------------------------
# send()

BLOCKS = ({"type": "section", "text": {"type": "mrkdwn", "text": "*Ticket #42*"}},)


async def test_card_is_posted_with_blocks(desk: Desk) -> None:
    adapter, _, _, api = desk
    out = Outbound(
        channel="slack",
        kind="slack_card",
        destination="C0SUPPORT",
        text="Ticket #42",
        blocks=BLOCKS,
    )
    delivery = await adapter.send(out)
    assert delivery.platform_message_id == "1718001000.000100"
    [call] = api.called("chat.postMessage")
    params = call.params
    assert params["channel"] == "C0SUPPORT"
    assert params["text"] == "Ticket #42"
    assert params["blocks"] == list(BLOCKS)
    assert "thread_ts" not in params


async def test_thread_message_goes_under_the_card(desk: Desk) -> None:
    adapter, _, _, api = desk
    out = Outbound(
        channel="slack",
        kind="slack_thread",
        destination="C0SUPPORT",
        text="Ann: hello?",
        reply_to="1718000000.000100",
    )
    await adapter.send(out)
    params = api.called("chat.postMessage")[0].params
    assert params["thread_ts"] == "1718000000.000100"
    assert "blocks" not in params


async def test_thread_message_without_card_ts_is_a_bad_request(desk: Desk) -> None:
    adapter, _, _, api = desk
    out = Outbound(channel="slack", kind="slack_thread", destination="C0SUPPORT", text="x")
    with pytest.raises(BadRequest):
        await adapter.send(out)
    assert api.requests == []


async def test_card_update(desk: Desk) -> None:
    adapter, _, _, api = desk
    out = Outbound(
        channel="slack",
        kind="slack_card_update",
        destination="C0SUPPORT",
        text="Ticket #42 (claimed)",
        blocks=BLOCKS,
        reply_to="1718000000.000100",
    )
    delivery = await adapter.send(out)
    assert delivery.platform_message_id == "1718000000.000100"
    params = api.called("chat.update")[0].params
    assert (params["channel"], params["ts"]) == ("C0SUPPORT", "1718000000.000100")


async def test_reaction_and_already_reacted_is_success(desk: Desk) -> None:
    adapter, _, _, api = desk
    out = Outbound(
        channel="slack",
        kind="slack_reaction",
        destination="C0SUPPORT",
        reply_to="1718000100.000200",
        emoji=":white_check_mark:",
    )
    await adapter.send(out)
    api.script("reactions.add", Reply(body={"ok": False, "error": "already_reacted"}))
    await adapter.send(out)
    calls = api.called("reactions.add")
    assert len(calls) == 2
    params = calls[0].params
    assert (params["name"], params["timestamp"], params["channel"]) == (
        "white_check_mark",
        "1718000100.000200",
        "C0SUPPORT",
    )


async def test_slash_response_goes_to_the_response_url(desk: Desk) -> None:
    adapter, _, _, api = desk
    base = str(api.server.make_url("")).rstrip("/")
    out = Outbound(
        channel="slack",
        kind="slack_response",
        destination=f"{base}/commands/T111/111/hook1",
        text="3 open tickets",
    )
    await adapter.send(out)
    [call] = api.called("hook1")
    assert call.params["text"] == "3 open tickets"
    assert call.params["response_type"] == "ephemeral"


@pytest.mark.parametrize(
    ("status", "exc", "detail"),
    [(404, BadRequest, "response_url http 404"), (500, Unavailable, "response_url http 500")],
)
async def test_slash_response_errors(
    desk: Desk, status: int, exc: type[Exception], detail: str
) -> None:
    adapter, _, _, api = desk
    api.script("hook2", Reply(status=status, body="expired_url"))
    base = str(api.server.make_url("")).rstrip("/")
    out = Outbound(channel="slack", kind="slack_response", destination=f"{base}/x/hook2", text="hi")
    with pytest.raises(exc, match=detail):
        await adapter.send(out)


async def test_slash_response_429(desk: Desk) -> None:
    adapter, _, _, api = desk
    api.script("hook3", Reply(status=429, body="rate_limited", headers={"Retry-After": "4"}))
    base = str(api.server.make_url("")).rstrip("/")
    out = Outbound(channel="slack", kind="slack_response", destination=f"{base}/hook3", text="x")
    with pytest.raises(RetryAfter) as info:
        await adapter.send(out)
    assert info.value.seconds == 4


CARD = Outbound(channel="slack", kind="slack_card", destination="C0SUPPORT", text="Ticket #1")


async def test_429_maps_to_retry_after_with_its_header(desk: Desk) -> None:
    adapter, _, _, api = desk
    api.script(
        "chat.postMessage",
        Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "7"}),
    )
    with pytest.raises(RetryAfter) as info:
        await adapter.send(CARD)
    assert info.value.seconds == 7
    assert len(api.called("chat.postMessage")) == 1  # the SDK did not retry on its own


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "invalid_blocks"])
async def test_ok_false_maps_to_bad_request(desk: Desk, error: str) -> None:
    adapter, _, _, api = desk
    api.script("chat.postMessage", Reply(body={"ok": False, "error": error}))
    with pytest.raises(BadRequest) as info:
        await adapter.send(CARD)
    assert info.value.detail == error


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=500, body={"ok": False, "error": "internal_error"}),
        Reply(status=503, body="<html>503 Service Unavailable</html>"),
        Reply(status=200, body={"ok": False, "error": "fatal_error"}),
    ],
)
async def test_server_errors_map_to_unavailable(desk: Desk, reply: Reply) -> None:
    adapter, _, _, api = desk
    api.script("chat.postMessage", reply)
    with pytest.raises(Unavailable):
        await adapter.send(CARD)


async def test_timeout_maps_to_unavailable(desk: Desk) -> None:
    adapter, _, _, api = desk
    api.script("chat.postMessage", Reply(body={"ok": True, "ts": "1.2"}, delay=1.5))
    with pytest.raises(Unavailable):
        await adapter.send(CARD)
    assert len(api.called("chat.postMessage")) == 1  # not re-posted behind our back


async def test_connection_refused_maps_to_unavailable() -> None:
    adapter = SlackAdapter(
        SlackSettings(bot_token=TOKEN, signing_secret=SECRET, api_base="http://127.0.0.1:9/api/"),
        FakeInbox(),
        max_body_bytes=MAX_BODY,
    )
    try:
        with pytest.raises(Unavailable):
            await adapter.send(CARD)
    finally:
        await adapter.stop()


def test_the_transfer_menu_becomes_a_transfer_action() -> None:
    event = parse_block_actions(payload("slack", "block_actions_transfer"))
    assert isinstance(event, AgentAction)
    assert (event.action, event.ticket_id, event.team) == ("transfer", 42, "billing")
    assert event.external_id == "action:1718000060.654321:U0AGENT"


def test_a_transfer_without_a_team_or_a_button_with_one_is_ignored() -> None:
    body = payload("slack", "block_actions_transfer")
    body["actions"][0]["selected_option"]["value"] = "42"
    assert isinstance(parse_block_actions(body), Ignored)
    claim = payload("slack", "block_actions_claim")
    claim["actions"][0]["value"] = "42:billing"
    assert isinstance(parse_block_actions(claim), Ignored)


def test_incident_buttons_and_the_reply_modal_become_agent_actions() -> None:
    import json as _json

    from adapters.slack import parse_reply_confirmed
    from bot.incidents.cards import preview_modal, reply_modal, submitted_texts

    def click(action_id: str, value: str) -> dict[str, object]:
        return {
            "type": "block_actions",
            "user": {"id": "U0ALICE", "username": "alice"},
            "channel": {"id": "C0SUPPORT"},
            "container": {"message_ts": "1.5", "channel_id": "C0SUPPORT"},
            "actions": [{"action_id": action_id, "value": value, "action_ts": "9.1"}],
        }

    ev = parse_block_actions(click("incident_resolve", "7"))
    assert isinstance(ev, AgentAction)
    assert (ev.action, ev.incident_id, ev.ticket_id) == ("incident_resolve", 7, 0)
    assert (ev.conversation, ev.external_id, ev.user_id, ev.user_name) == (
        "slack:incident:7",
        "action:9.1:U0ALICE",
        "U0ALICE",
        "alice",
    )
    assert (ev.slack_channel, ev.message_ts, ev.team, ev.value) == ("C0SUPPORT", "1.5", None, None)
    closed = parse_block_actions(click("incident_close", "7"))
    assert isinstance(closed, AgentAction)
    assert (closed.action, closed.incident_id, closed.conversation) == (
        "incident_close",
        7,
        "slack:incident:7",
    )
    assert isinstance(parse_block_actions(click("incident_resolve", "7:x")), Ignored)
    assert isinstance(parse_block_actions(click("incident_close", "x7")), Ignored)
    assert isinstance(parse_block_actions(click("incident_reply_all", "7")), Ignored)

    modal = reply_modal(7, {"en": 30, "es": 2}, "en")
    inputs = [b for b in modal["blocks"] if b["type"] == "input"]
    assert [(b["block_id"], b["optional"]) for b in inputs] == [
        ("text.en", False),
        ("text.es", True),
    ]
    typed = {"text.en": {"text": {"value": " Fixed. "}}, "text.es": {"text": {"value": ""}}}
    texts = submitted_texts(typed)
    assert texts == {"en": "Fixed."}
    preview = preview_modal(7, {"en": 30, "es": 2}, texts, "en")
    assert "32 customers will read" in _json.dumps(preview["blocks"])  # es falls back to en
    body = {
        "type": "view_submission",
        "user": {"id": "U0ALICE", "username": "alice"},
        "view": {"id": "V1", "callback_id": "incident_reply_confirm", **preview},
    }
    ev = parse_reply_confirmed(body)
    assert isinstance(ev, AgentAction) and ev.action == "incident_reply"
    assert (ev.incident_id, ev.texts, ev.external_id) == (7, {"en": "Fixed."}, "view:V1")
    forged = {**body, "view": {"id": "V2", "private_metadata": "not json"}}
    assert isinstance(parse_reply_confirmed(forged), Ignored)
