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
    CustomerEdit,
    CustomerMessage,
    CustomerNumberChanged,
    CustomerReaction,
    DeliveryStatus,
    Event,
    Ignored,
    event_from_json,
    event_to_json,
)
from bot.domain.outbound import BadRequest, Button, Forbidden, Outbound, RetryAfter, Unavailable

from .adapter_fakes import PAYLOADS, FakeAPI, FakeInbox, Recorded, Reply, payload, payload_bytes

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


CONFORMANCE = PAYLOADS / "whatsapp" / "conformance"


def sample(name: str) -> dict[str, Any]:
    """A conformance sample (a real webhook body another project collected)."""
    data = json.loads((CONFORMANCE / f"{name}.json").read_text())
    assert isinstance(data, dict)
    return data


def one(body: dict[str, Any]) -> Event:
    [ev] = parse_webhook(body)
    return ev


def test_a_location_is_a_message_with_a_map_link() -> None:
    ev = one(payload("whatsapp", "message_location"))
    assert isinstance(ev, CustomerMessage)
    assert ev.shared == "location"
    assert ev.text == "📍 Shared a location: Home\nhttps://maps.google.com/?q=37.48,-122.15"
    chosen = one(sample("pywa__message.chosen_location"))
    assert isinstance(chosen, CustomerMessage) and chosen.shared == "location"
    assert "https://maps.google.com/?q=" in chosen.text


def test_contacts_are_a_message_with_names_and_numbers() -> None:
    ev = one(sample("pywa__message.contacts"))
    assert isinstance(ev, CustomerMessage) and ev.shared == "contact"
    assert ev.text.splitlines() == [
        "👤 Shared 3 contacts:",
        "• Chandler Bing: +1 555-555-5555 (cell)",
        "• Monica: +1 666-666-6666 (home)",
        "• Rachel Green: +1 777-777-7777 (work)",
    ]


def test_an_order_is_a_message_listing_its_items() -> None:
    ev = one(sample("pywa__message.order"))
    assert isinstance(ev, CustomerMessage) and ev.shared == "order"
    assert ev.text.splitlines() == [
        "🛒 Sent an order:",
        "• 3 × HAMBURGER at 30 ILS",
        "• 2 × FRENCH_FRIES at 35 ILS",
        "• 2 × SODA at 10 ILS",
        "(catalog 354160437058781)",
    ]


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("message_unsupported", ": Message type unknown."),
        ("conformance/pywa__message.unsupported_with_type", " (a pool): Message type unknown."),
        ("conformance/netflie__an_unknown_notification", ": Unsupported message type."),
    ],
)
def test_what_whatsapp_cannot_deliver_is_said_with_its_error_title(name: str, what: str) -> None:
    ev = one(payload("whatsapp", name))
    assert isinstance(ev, CustomerMessage) and ev.shared == "unsupported"
    assert ev.text == (
        f"⚠️ Sent something WhatsApp cannot deliver to the desk{what}"
        " Ask them to send it as text or a photo."
    )


def test_a_reaction_names_the_message_it_is_on() -> None:
    ev = one(sample("pywa__message.reaction"))
    assert isinstance(ev, CustomerReaction)
    assert (ev.reacted_to, ev.emoji, ev.chat_id) == ("wamid.yzxyzx=", "😮", "972987654321")
    for name in ("pywa__message.unreaction_empty", "pywa__message.unreaction_no_emoji"):
        removed = one(sample(name))
        assert isinstance(removed, CustomerReaction) and removed.emoji == ""


def test_a_changed_number_is_its_own_event() -> None:
    ev = one(sample("pywa__system.phone_number_change"))
    assert isinstance(ev, CustomerNumberChanged)
    assert (ev.chat_id, ev.new_id) == ("972987654321", "972912345678")
    assert ev.text == "User A changed from 972987654321 to 972912345678"
    other = one(sample("pywa__system.identity_change"))
    assert isinstance(other, Ignored)
    assert other.reason.startswith("system customer_identity_changed: only a changed number")


def test_an_edit_is_a_customer_edit_of_the_original() -> None:
    ev = one(sample("pywa__edited_message.image"))
    assert isinstance(ev, CustomerEdit)
    assert ev.platform_message_id.startswith("wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNC")
    assert ev.text == "Updated image caption"


def test_a_template_quick_reply_is_what_the_customer_chose() -> None:
    ev = one(sample("pywa__callback_button.quick_reply"))
    assert isinstance(ev, CustomerMessage)
    assert (ev.text, ev.shared) == ("title", None)


def test_interactive_replies_carry_their_title() -> None:
    ev = one(sample("pywa__callback_selection.description"))
    assert isinstance(ev, CustomerButton) and ev.title


def test_a_flow_answer_is_ignored_with_the_reason() -> None:
    ev = one(sample("pywa__flow_completion.completion"))
    assert isinstance(ev, Ignored)
    assert ev.reason == "interactive nfm_reply: the desk sends none"


def test_a_customer_without_a_number_is_known_by_their_user_id() -> None:
    ev = one(sample("netflie__a_notification_with_bsuid_only_and_no_from"))
    assert isinstance(ev, CustomerMessage)
    assert (ev.chat_id, ev.conversation) == ("BSUID_123", "whatsapp:BSUID_123")
    assert (ev.sender.external_id, ev.sender.name, ev.sender.phone) == ("BSUID_123", "NAME", None)
    assert ev.text == "MESSAGE_BODY"
    # With both, the phone number stays the customer's id (they were known by it before).
    both = one(sample("netflie__can_keep_wa_id_priority_when_user_id_is_present"))
    assert isinstance(both, CustomerMessage) and both.chat_id == "PHONE_NUMBER"


def test_a_reply_to_a_user_id_is_addressed_by_recipient() -> None:
    body = message_body(
        Outbound(channel="whatsapp", kind="text", destination="US.13491208655302741918", text="Hi")
    )
    assert body["recipient"] == "US.13491208655302741918"
    assert "to" not in body
    assert message_body(
        Outbound(channel="whatsapp", kind="text", destination="16505551234", text="Hi")
    )["to"]


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


# --------------------------------------------------------------------------------------------
# conformance: real webhook bodies other projects collected (tests/payloads/whatsapp/conformance)

SAMPLES = sorted(CONFORMANCE.glob("*.json"))

# What each message type becomes (see docs/files.md, "Every kind of message"); anything else
# is recorded as Ignored with the reason.
BECOMES: dict[str, type[Event]] = {
    "text": CustomerMessage,
    "image": CustomerMessage,
    "video": CustomerMessage,
    "audio": CustomerMessage,
    "document": CustomerMessage,
    "sticker": CustomerMessage,
    "location": CustomerMessage,
    "contacts": CustomerMessage,
    "order": CustomerMessage,
    "button": CustomerMessage,
    "unsupported": CustomerMessage,
    "unknown": CustomerMessage,
    "reaction": CustomerReaction,
    "edit": CustomerEdit,
}


def fresh_ids(data: dict[str, Any], n: int) -> dict[str, Any]:
    """The sample as Meta would send it to this desk: our phone_number_id, a fresh customer
    number (equal numbers stay equal) and fresh message and status ids; nothing else changed."""
    numbers: dict[str, str] = {}

    def number(old: str) -> str:
        return numbers.setdefault(old, f"4477009{n:03d}{len(numbers):02d}")

    for entry in data.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            if "phone_number_id" in value.get("metadata", {}):
                value["metadata"]["phone_number_id"] = PHONE_ID
            for contact in value.get("contacts", []):
                if "wa_id" in contact:
                    contact["wa_id"] = number(contact["wa_id"])
            for i, message in enumerate(value.get("messages", [])):
                message["id"] = f"wamid.CONF{n:03d}M{i}"
                if "from" in message:
                    message["from"] = number(message["from"])
                system = message.get("system", {})
                if "wa_id" in system:
                    system["wa_id"] = number(system["wa_id"])
            for i, status in enumerate(value.get("statuses", [])):
                status["id"] = f"wamid.CONF{n:03d}S{i}"
                if "recipient_id" in status:
                    status["recipient_id"] = number(status["recipient_id"])
    return data


def expected(message: dict[str, Any], errors: bool) -> type[Event]:
    """``errors``: the delivery carries errors beside its messages."""
    mtype = message.get("type", "")
    if mtype not in ("reaction", "system", "edit") and (errors or message.get("errors")):
        return CustomerMessage  # "sent something WhatsApp cannot deliver", with the title
    if mtype == "interactive":
        itype = message.get("interactive", {}).get("type")
        return CustomerButton if itype in ("button_reply", "list_reply") else Ignored
    if mtype == "system":
        changed = message.get("system", {}).get("type") == "user_changed_number"
        return CustomerNumberChanged if changed else Ignored
    return BECOMES.get(mtype, Ignored)


def test_every_whatsapp_conformance_sample_is_here() -> None:
    assert len(SAMPLES) == 104
    provenance = (CONFORMANCE / "PROVENANCE.md").read_text()
    for path in SAMPLES:
        assert f"`whatsapp/{path.name}`" in provenance, path.name


async def test_every_conformance_sample_through_the_signed_webhook(hook: Hook) -> None:
    _, inbox, client = hook
    for n, path in enumerate(SAMPLES):
        data = fresh_ids(json.loads(path.read_text()), n)
        body = json.dumps(data).encode()
        before = len(inbox.events)
        resp = await client.post("/whatsapp/webhook", data=body, headers=signed(body))
        assert resp.status == 200, path.name
        got = inbox.events[before:]
        assert got, f"{path.name}: silently dropped"
        assert inbox.raws[-1] == data
        messages = [
            (m, bool(change["value"].get("errors")))
            for entry in data["entry"]
            for change in entry["changes"]
            if change.get("field") == "messages"
            for m in change["value"].get("messages", [])
        ]
        for (message, errors), event in zip(messages, got, strict=False):
            assert isinstance(event, expected(message, errors)), (path.name, event)
            assert event.external_id == message["id"]
        for event in got:
            if isinstance(event, Ignored):
                assert event.reason and event.reason != "message type unknown", path.name
            if isinstance(event, CustomerMessage):
                assert event.text or event.attachments, path.name
                assert event.chat_id, path.name
