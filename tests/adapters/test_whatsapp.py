"""WhatsApp adapter: parsing recorded webhooks, the signed endpoint and its handshake, message
bodies (text, reply buttons, list) and the Graph error map against a fake Cloud API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.whatsapp import (
    WhatsAppAdapter,
    message_body,
    parse_webhook,
    signature_for,
)
from bot.base.settings import WhatsAppSettings
from bot.domain.events import (
    CustomerButton,
    CustomerMessage,
    DeliveryStatus,
    Ignored,
    event_from_json,
    event_to_json,
)
from bot.domain.outbound import BadRequest, Button, Forbidden, Outbound, RetryAfter, Unavailable

from .adapter_fakes import FakeAPI, FakeInbox, Recorded, Reply, payload, payload_bytes

SECRET = "wa-app-secret"
VERIFY = "wa-verify-token"
TOKEN = "EAAG-test-access-token"
PHONE_ID = "106540352242922"
MAX_BODY = 64 * 1024

# --------------------------------------------------------------------------------------------
# parsing


def test_text_message_with_the_contacts_name() -> None:
    [ev] = parse_webhook(payload("whatsapp", "message_text"))
    assert isinstance(ev, CustomerMessage)
    assert ev.external_id == "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert ev.platform_message_id == ev.external_id
    assert (ev.conversation, ev.chat_id) == ("whatsapp:16505551234", "16505551234")
    assert ev.text == "Hi, my order 1187 never arrived"
    assert (ev.sender.external_id, ev.sender.name, ev.sender.phone) == (
        "16505551234",
        "Sheena Nelson",
        "16505551234",
    )


def test_image_with_caption() -> None:
    [ev] = parse_webhook(payload("whatsapp", "message_image"))
    assert isinstance(ev, CustomerMessage)
    assert ev.text == "the box was empty"
    [att] = ev.attachments
    assert (att.kind, att.file_id, att.mime_type) == ("image", "1479537139650973", "image/jpeg")


def test_document_keeps_its_filename() -> None:
    [ev] = parse_webhook(payload("whatsapp", "message_document"))
    assert isinstance(ev, CustomerMessage)
    assert ev.attachments[0].name == "receipt.pdf"


def test_voice_note() -> None:
    [ev] = parse_webhook(payload("whatsapp", "message_voice"))
    assert isinstance(ev, CustomerMessage)
    assert ev.attachments[0].kind == "voice"


@pytest.mark.parametrize(
    ("name", "data"),
    [("interactive_button_reply", "rate:42:3"), ("interactive_list_reply", "rate:42:5")],
)
def test_button_and_list_replies(name: str, data: str) -> None:
    [ev] = parse_webhook(payload("whatsapp", name))
    assert isinstance(ev, CustomerButton)
    assert (ev.data, ev.chat_id, ev.callback_query_id) == (data, "16505551234", None)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("message_location", "message type location"),
        ("message_unsupported", "message type unsupported"),
    ],
)
def test_unknown_message_types_are_ignored(name: str, reason: str) -> None:
    [ev] = parse_webhook(payload("whatsapp", name))
    assert isinstance(ev, Ignored)
    assert ev.reason == reason
    assert ev.external_id.startswith("wamid.")


def test_statuses() -> None:
    sent, delivered = parse_webhook(payload("whatsapp", "statuses_sent_delivered"))
    assert isinstance(sent, DeliveryStatus) and isinstance(delivered, DeliveryStatus)
    assert (sent.status, sent.external_id, sent.platform_message_id) == (
        "sent",
        "wamid.OUT01:sent",
        "wamid.OUT01",
    )
    assert delivered.external_id == "wamid.OUT01:delivered"
    assert sent.error is None
    [read] = parse_webhook(payload("whatsapp", "status_read"))
    assert isinstance(read, DeliveryStatus) and read.status == "read"


def test_failed_status_carries_code_and_title() -> None:
    [ev] = parse_webhook(payload("whatsapp", "status_failed"))
    assert isinstance(ev, DeliveryStatus)
    assert (ev.status, ev.error) == ("failed", "131047 Re-engagement message")


def test_value_errors_are_recorded_as_ignored() -> None:
    [ev] = parse_webhook(payload("whatsapp", "value_errors"))
    assert isinstance(ev, Ignored)
    assert ev.reason == "platform error 131000 Something went wrong"


def test_every_entry_and_change_is_read() -> None:
    events = parse_webhook(payload("whatsapp", "two_messages_one_delivery"))
    assert [type(e).__name__ for e in events] == ["CustomerMessage", "CustomerMessage", "Ignored"]
    second = events[1]
    assert isinstance(second, CustomerMessage)
    assert (second.sender.name, second.chat_id) == ("Raj", "919876543210")
    assert events[2].reason == "field account_update"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body", [payload("whatsapp", "not_whatsapp"), {}, {"object": "whatsapp_business_account"}]
)
def test_other_objects_are_ignored(body: dict[str, Any]) -> None:
    [ev] = parse_webhook(body)
    assert isinstance(ev, Ignored)


def test_garbage_inside_a_valid_envelope_does_not_crash() -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"changes": [{"field": "messages", "value": {"messages": ["x", {"id": 5}]}}]}, 7],
    }
    events = parse_webhook(body)
    assert all(isinstance(e, Ignored) for e in events)
    assert len({e.external_id for e in events}) == len(events)


def test_events_survive_the_inbox_json_round_trip() -> None:
    for name in ("message_text", "message_image", "interactive_list_reply", "status_failed"):
        for ev in parse_webhook(payload("whatsapp", name)):
            assert event_from_json(json.loads(json.dumps(event_to_json(ev)))) == ev


# --------------------------------------------------------------------------------------------
# message bodies


def out(n_buttons: int = 0, text: str = "How did we do?") -> Outbound:
    return Outbound(
        channel="whatsapp",
        kind="text",
        destination="16505551234",
        text=text,
        buttons=tuple(
            Button(text=f"{i} star", data=f"rate:7:{i}") for i in range(1, n_buttons + 1)
        ),
    )


def test_plain_text_body() -> None:
    assert message_body(out()) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"body": "How did we do?"},
    }


def test_up_to_three_buttons_are_reply_buttons() -> None:
    body = message_body(out(3))
    interactive = body["interactive"]
    assert (body["type"], interactive["type"]) == ("interactive", "button")
    assert interactive["body"] == {"text": "How did we do?"}
    assert interactive["action"]["buttons"][0] == {
        "type": "reply",
        "reply": {"id": "rate:7:1", "title": "1 star"},
    }


def test_button_titles_are_cut_to_20_characters() -> None:
    message = Outbound(
        channel="whatsapp",
        kind="text",
        destination="1",
        text="x",
        buttons=(Button(text="A rather long button title", data="b1"),),
    )
    title = message_body(message)["interactive"]["action"]["buttons"][0]["reply"]["title"]
    assert len(title) == 20


def test_a_five_point_rating_becomes_a_list() -> None:
    interactive = message_body(out(5))["interactive"]
    assert interactive["type"] == "list"
    [section] = interactive["action"]["sections"]
    assert [r["id"] for r in section["rows"]] == [f"rate:7:{i}" for i in range(1, 6)]
    assert len(interactive["action"]["button"]) <= 20


def test_more_than_ten_choices_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        message_body(out(11))


# --------------------------------------------------------------------------------------------
# the webhook endpoint


Hook = tuple[WhatsAppAdapter, FakeInbox, TestClient[Any, Any]]


def settings(api_base: str = "http://127.0.0.1:9/v21.0") -> WhatsAppSettings:
    return WhatsAppSettings(
        access_token=TOKEN,
        phone_number_id=PHONE_ID,
        app_secret=SECRET,
        verify_token=VERIFY,
        api_base=api_base,
    )


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    inbox = FakeInbox()
    adapter = WhatsAppAdapter(settings(), inbox, max_body_bytes=MAX_BODY)
    app = web.Application()
    adapter.install(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield adapter, inbox, client
    await client.close()
    await adapter.stop()


async def test_verification_handshake(hook: Hook) -> None:
    _, _, client = hook
    resp = await client.get(
        "/whatsapp/webhook",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"},
    )
    assert resp.status == 200
    assert await resp.text() == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
        {},
    ],
)
async def test_verification_refused(hook: Hook, params: dict[str, str]) -> None:
    _, _, client = hook
    resp = await client.get("/whatsapp/webhook", params=params)
    assert resp.status == 403
    assert await resp.text() != "1"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": signature_for(secret, body), "Content-Type": "application/json"}


async def test_signed_delivery_is_accepted_whole(hook: Hook) -> None:
    _, inbox, client = hook
    body = payload_bytes("whatsapp", "two_messages_one_delivery")
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 200
    assert inbox.calls == 1  # one commit for the whole delivery
    assert [e.external_id for e in inbox.events][:2] == ["wamid.MULTI01", "wamid.MULTI02"]
    assert inbox.raws[0] == json.loads(body)
    again = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert again.status == 200
    assert len(inbox.events) == 3  # Meta's redelivery deduped


async def test_status_delivery_is_accepted(hook: Hook) -> None:
    _, inbox, client = hook
    body = payload_bytes("whatsapp", "status_failed")
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 200
    [ev] = inbox.events
    assert isinstance(ev, DeliveryStatus) and ev.error == "131047 Re-engagement message"


async def test_missing_signature_is_401(hook: Hook) -> None:
    _, inbox, client = hook
    body = payload_bytes("whatsapp", "message_text")
    resp = await client.post("/whatsapp/webhook", data=body)
    assert resp.status == 401
    assert inbox.calls == 0


@pytest.mark.parametrize("case", ["wrong_secret", "tampered", "garbage", "bare_hex"])
async def test_wrong_signature_is_403(hook: Hook, case: str) -> None:
    _, inbox, client = hook
    body = payload_bytes("whatsapp", "message_text")
    headers = signed(body)
    match case:
        case "wrong_secret":
            headers = signed(body, secret="other")
        case "tampered":
            body = body.replace(b"never arrived", b"arrived fine")
        case "garbage":
            headers["X-Hub-Signature-256"] = "sha256=zzz"
        case "bare_hex":
            headers["X-Hub-Signature-256"] = headers["X-Hub-Signature-256"][len("sha256=") :]
    resp = await client.post("/whatsapp/webhook", data=body, headers=headers)
    assert resp.status == 403
    assert inbox.calls == 0


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"\xff"])
async def test_malformed_json_is_400(hook: Hook, body: bytes) -> None:
    _, inbox, client = hook
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 400
    assert inbox.calls == 0


async def test_oversized_body_is_413(hook: Hook) -> None:
    _, inbox, client = hook
    body = json.dumps({"object": "whatsapp_business_account", "pad": "x" * MAX_BODY}).encode()
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 413
    assert inbox.calls == 0


async def test_inbox_failure_is_503(hook: Hook) -> None:
    _, inbox, client = hook
    inbox.fail = RuntimeError("database is locked")
    body = payload_bytes("whatsapp", "message_text")
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 503


async def test_unknown_object_is_recorded_and_acked(hook: Hook) -> None:
    _, inbox, client = hook
    body = payload_bytes("whatsapp", "not_whatsapp")
    resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
    assert resp.status == 200
    assert isinstance(inbox.events[0], Ignored)


# --------------------------------------------------------------------------------------------
# send()


def graph_default(rec: Recorded) -> Reply:
    to = rec.params.get("to", "")
    return Reply(
        body={
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": "wamid.SENT0001", "message_status": "accepted"}],
        }
    )


def graph_error(status: int, code: int, message: str, **extra: Any) -> Reply:
    return Reply(
        status=status,
        body={
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": message},
                "fbtrace_id": "AbCdEf",
                **extra,
            }
        },
    )


@pytest.fixture
async def graph() -> AsyncIterator[tuple[FakeAPI, WhatsAppAdapter]]:
    api = FakeAPI(graph_default)
    base = await api.start()
    adapter = WhatsAppAdapter(
        settings(f"{base}/v21.0"), FakeInbox(), max_body_bytes=MAX_BODY, request_timeout=1
    )
    yield api, adapter
    await adapter.stop()
    await api.close()


async def test_send_text(graph: tuple[FakeAPI, WhatsAppAdapter]) -> None:
    api, adapter = graph
    await adapter.start()
    assert adapter.started
    delivery = await adapter.send(out(text="Your ticket #7 is open"))
    assert delivery.platform_message_id == "wamid.SENT0001"
    [call] = api.requests
    assert call.path == f"/v21.0/{PHONE_ID}/messages"
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.params["text"] == {"body": "Your ticket #7 is open"}


async def test_send_rating_list(graph: tuple[FakeAPI, WhatsAppAdapter]) -> None:
    api, adapter = graph
    await adapter.send(out(5))
    assert api.requests[0].params["interactive"]["type"] == "list"


async def test_answer_callback_is_a_no_op(graph: tuple[FakeAPI, WhatsAppAdapter]) -> None:
    api, adapter = graph
    message = Outbound(channel="whatsapp", kind="answer_callback", destination="1")
    assert (await adapter.send(message)).platform_message_id is None
    assert api.requests == []


@pytest.mark.parametrize(
    ("reply", "exc", "detail"),
    [
        (graph_error(400, 130429, "(#130429) Rate limit hit"), RetryAfter, "130429"),
        (
            graph_error(
                400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"
            ),
            RetryAfter,
            "131056",
        ),
        (graph_error(400, 80007, "(#80007) Rate limit issues"), RetryAfter, "80007"),
        (
            Reply(
                status=429,
                body={"error": {"message": "slow down", "code": 4}},
                headers={"Retry-After": "9"},
            ),
            RetryAfter,
            "4: slow down",
        ),
        (graph_error(400, 131026, "(#131026) Message Undeliverable"), Forbidden, "131026: "),
        (graph_error(400, 131047, "(#131047) Re-engagement message"), BadRequest, "131047: "),
        (graph_error(400, 100, "(#100) Invalid parameter"), BadRequest, "100: "),
        (
            graph_error(
                401, 190, "Error validating access token: Session has expired", error_subcode=463
            ),
            BadRequest,
            "190: ",
        ),
        (graph_error(500, 1, "An unknown error occurred"), Unavailable, "1: "),
        (Reply(status=503, body="<html>Service Unavailable</html>"), Unavailable, "http 503"),
        (Reply(body={"messages": [{"id": "x"}]}, delay=1.5), Unavailable, "Timeout"),
    ],
)
async def test_error_mapping(
    graph: tuple[FakeAPI, WhatsAppAdapter], reply: Reply, exc: type[Exception], detail: str
) -> None:
    api, adapter = graph
    api.script("messages", reply)
    with pytest.raises(exc, match=detail) as info:
        await adapter.send(out())
    if isinstance(info.value, RetryAfter):
        assert info.value.seconds == (9 if reply.status == 429 else 1)


async def test_connection_refused_is_unavailable() -> None:
    adapter = WhatsAppAdapter(settings(), FakeInbox(), max_body_bytes=MAX_BODY)
    try:
        with pytest.raises(Unavailable):
            await adapter.send(out())
    finally:
        await adapter.stop()


async def test_slack_kinds_are_refused(graph: tuple[FakeAPI, WhatsAppAdapter]) -> None:
    _, adapter = graph
    with pytest.raises(BadRequest):
        await adapter.send(Outbound(channel="whatsapp", kind="slack_card", destination="1"))
