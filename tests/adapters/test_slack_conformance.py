"""Slack conformance: every real request body in ``tests/payloads/slack/conformance`` (collected
by Bolt's and the SDK's own tests) is answered 200 and recorded, posted to ``/slack/events``
signed as Slack signs it, and handed over by Socket Mode. Nothing is dropped without a trace: a
kind the desk does not use becomes an ``Ignored`` row in the inbox that says what it was, and
Slack is not answered 404 (it would show the person an error, and retry an event)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.slack import SlackAdapter
from bot.base.settings import SlackSettings
from bot.domain.events import AgentMessage, Event, Ignored

from .adapter_fakes import PAYLOADS, FakeAPI, FakeInbox
from .test_slack import SECRET, TOKEN, signed, slack_default

SAMPLES = sorted((PAYLOADS / "slack" / "conformance").glob("*.json"))
EVENTS = ("event_callback", "url_verification", "app_rate_limited")
# Slack's handshakes: answered, nothing to record.
HANDSHAKES = ("bolt__events_url_verification.event_body", "bolt__ssl_check")
# The kinds Bolt has no listener for in the desk (it answered 404 "unhandled request").
UNHANDLED = {
    "bolt__attachment_actions.body": "interactivity interactive_message",
    "bolt__block_suggestion.body": "interactivity block_suggestion",
    "bolt__dialogs.cancellation_body": "interactivity dialog_cancellation",
    "bolt__dialogs.submission_body": "interactivity dialog_submission",
    "bolt__dialogs.suggestion_body": "interactivity dialog_suggestion",
    "bolt__view_closed.body": "interactivity view_closed",
    "bolt__workflow_steps.edit_payload": "interactivity workflow_step_edit",
}

Desk = tuple[SlackAdapter, FakeInbox, TestClient[Any, Any]]


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    """The adapter as ``deskbot run`` makes it (the default 1 MiB body limit: one sample, a
    message with many blocks, is 97 KB)."""
    api = FakeAPI(slack_default)
    base = await api.start()
    inbox = FakeInbox()
    adapter = SlackAdapter(
        SlackSettings(bot_token=TOKEN, signing_secret=SECRET, api_base=f"{base}/api/"),
        inbox,
        max_body_bytes=1_048_576,  # deskbot run's default (DESK_MAX_BODY_BYTES)
    )
    app = web.Application()
    adapter.install(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield adapter, inbox, client
    await client.close()
    await adapter.stop()
    await api.close()


def sample(path: Path) -> dict[str, Any]:
    """The sample with ids of its own, as a new delivery would have (the shared PROVENANCE.md
    lists what may change)."""
    n = SAMPLES.index(path)
    body: dict[str, Any] = copy.deepcopy(json.loads(path.read_text()))
    if "event_id" in body:
        body["event_id"] = f"EvCONF{n:04d}"
    if "trigger_id" in body:
        body["trigger_id"] = f"{n}.111.conf"
    for action in body.get("actions") or []:
        if isinstance(action, dict) and "action_ts" in action:
            action["action_ts"] = f"{1700000000 + n}.000001"
    return body


def http_request(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """How Slack posts it: events as JSON, slash commands as a form, interactivity as a form
    with one field, ``payload``."""
    if "form" in body:
        text = str(body["form"])
        kind = "application/x-www-form-urlencoded"
    elif body.get("type") in EVENTS:
        text, kind = json.dumps(body), "application/json"
    else:
        text = urlencode({"payload": json.dumps(body)})
        kind = "application/x-www-form-urlencoded"
    return text, {**signed(text), "Content-Type": kind}


def check_recorded(name: str, events: list[Event]) -> None:
    if name in HANDSHAKES:
        assert events == []
        return
    [event] = events
    if name in UNHANDLED:
        assert isinstance(event, Ignored) and event.reason == UNHANDLED[name]
    elif isinstance(event, Ignored):
        assert event.reason  # says what it was: "event reaction_added", "command /hello-world"
    else:
        assert isinstance(event, AgentMessage)  # a person's message in a channel


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
async def test_every_sample_over_http_is_answered_200_and_recorded(desk: Desk, path: Path) -> None:
    _, inbox, client = desk
    text, headers = http_request(sample(path))
    resp = await client.post("/slack/events", data=text, headers=headers)
    assert resp.status == 200, await resp.text()
    check_recorded(path.stem, inbox.events)
    # Slack's retry of the same delivery is acknowledged and recorded once.
    again = await client.post(
        "/slack/events", data=text, headers={**headers, "X-Slack-Retry-Num": "1"}
    )
    assert again.status == 200
    check_recorded(path.stem, inbox.events)


@pytest.mark.parametrize(
    "path", [p for p in SAMPLES if p.stem not in HANDSHAKES], ids=lambda p: p.stem
)
async def test_every_sample_over_socket_mode_is_acknowledged_and_recorded(
    desk: Desk, path: Path
) -> None:
    adapter, inbox, _ = desk
    body = sample(path)
    if "form" in body:  # Socket Mode hands a slash command over as the form's fields
        body = dict(parse_qsl(str(body["form"])))
    response = await adapter.dispatch_socket(body, None)
    assert response.status == 200
    check_recorded(path.stem, inbox.events)


async def test_an_external_select_gets_an_empty_list_of_options(desk: Desk) -> None:
    _, _, client = desk
    text, headers = http_request(
        sample(PAYLOADS / "slack/conformance/bolt__block_suggestion.body.json")
    )
    resp = await client.post("/slack/events", data=text, headers=headers)
    assert (resp.status, await resp.json()) == (200, {"options": []})


async def test_an_unhandled_kind_the_inbox_cannot_store_is_a_503_so_slack_retries(
    desk: Desk,
) -> None:
    _, inbox, client = desk
    inbox.fail = RuntimeError("database is locked")
    text, headers = http_request(sample(PAYLOADS / "slack/conformance/bolt__view_closed.body.json"))
    resp = await client.post("/slack/events", data=text, headers=headers)
    assert resp.status == 503
    inbox.fail = None
    retry = await client.post(
        "/slack/events", data=text, headers={**headers, "X-Slack-Retry-Num": "1"}
    )
    assert retry.status == 200
    check_recorded("bolt__view_closed.body", inbox.events)
