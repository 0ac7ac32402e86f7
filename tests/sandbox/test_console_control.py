"""The sandbox page's agent console through the control API, as the page drives it: the Home tab
(open it, claim from it), the Reply modal (pick a macro, type, send) and the "Send to customer"
shortcut, against a real desk; and the control API's own errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.domain.rules import parse_rules
from sandbox import StandIns
from tests.e2e.conftest import eventually
from tests.sandbox.running import running_sandbox

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
async def console(database_url: str) -> AsyncIterator[tuple[StandIns, aiohttp.ClientSession]]:
    data = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data["slack"]["relay"] = "composer"
    async with (
        running_sandbox(database_url, parse_rules(data)) as (standins, _desk),
        aiohttp.ClientSession() as http,
    ):
        yield standins, http


async def call(
    s: StandIns, http: aiohttp.ClientSession, path: str, body: Any = None
) -> tuple[int, Any]:
    method = "GET" if body is None else "POST"
    data = None if body is None else json.dumps(body)
    async with http.request(method, s.url + path, data=data) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def state_has(s: StandIns, http: aiohttp.ClientSession, probe: Any, what: str) -> Any:
    async def look() -> Any:
        _, state = await call(s, http, "/control/state")
        return probe(state)

    return await eventually(look, what)


def home_text(state: dict[str, Any], user: str) -> str:
    return json.dumps(state.get("slack_home", {}).get(user, {}), ensure_ascii=False)


async def test_home_reply_and_shortcut_from_the_page(
    console: tuple[StandIns, aiohttp.ClientSession],
) -> None:
    s, http = console
    assert (await call(s, http, "/control/slack/opens_home", {"user": "U0BOB"}))[0] == 200
    await state_has(
        s, http, lambda st: "Waiting in your teams* (0)" in home_text(st, "U0BOB"), "Home"
    )
    await call(
        s,
        http,
        "/control/telegram/customer_says",
        {"chat_id": 42, "text": "My parcel never came", "first_name": "Ann"},
    )
    await state_has(
        s, http, lambda st: "Waiting in your teams* (1)" in home_text(st, "U0BOB"), "waiting"
    )
    status, out = await call(
        s,
        http,
        "/control/slack/clicks_home",
        {"user": "U0BOB", "action_id": "home_claim", "value": "1"},
    )
    assert (status, out) == (200, {"desk_status": 200})
    await state_has(s, http, lambda st: "My open tickets* (1)" in home_text(st, "U0BOB"), "claimed")

    card = (await call(s, http, "/control/state"))[1]["slack"]["C0SUPPORT"][0]
    await call(
        s,
        http,
        "/control/slack/agent_clicks",
        {
            "channel": "C0SUPPORT",
            "message_ts": card["ts"],
            "action_id": "ticket_reply",
            "user": "U0BOB",
        },
    )
    modal = await state_has(
        s,
        http,
        lambda st: (m := st.get("slack_modal", {}).get("U0BOB")) and m.get("submit") and m,
        "the Reply modal",
    )
    await call(
        s,
        http,
        "/control/slack/modal_picks",
        {"view_id": modal["id"], "action_id": "reply_macro", "value": "Need order number"},
    )
    wanted = "Hi Ann, could you send us your order number so we can look into it?"
    modal = await state_has(
        s,
        http,
        lambda st: (
            wanted in json.dumps(st["slack_modal"]["U0BOB"]["values"])
            and st["slack_modal"]["U0BOB"]
        ),
        "the macro",
    )
    await call(
        s, http, "/control/slack/modal_types", {"view_id": modal["id"], "text": wanted + " :)"}
    )
    status, out = await call(s, http, "/control/slack/modal_submits", {"view_id": modal["id"]})
    assert status == 200 and out["desk_status"] == 200
    sent = await s.telegram.wait_for_sent(42, 2)
    assert sent[-1]["text"] == wanted + " :)"
    _, state = await call(s, http, "/control/state")
    assert "U0BOB" not in state["slack_modal"]  # sent: the modal closed

    ts = await s.slack.agent_replies("C0SUPPORT", card["ts"], "U0BOB", "Found it, ships today")
    await call(
        s,
        http,
        "/control/slack/message_shortcut",
        {"channel": "C0SUPPORT", "ts": ts, "user": "U0BOB"},
    )
    sent = await s.telegram.wait_for_sent(42, 3)
    assert sent[-1]["text"] == "Found it, ships today"

    # What the control API refuses, it says.
    status, text = await call(s, http, "/control/slack/modal_submits", {"view_id": modal["id"]})
    assert status == 400 and "closed" in text
    status, text = await call(
        s, http, "/control/slack/clicks_home", {"user": "U0BOB", "action_id": "nope"}
    )
    assert status == 400 and "no button 'nope'" in text
