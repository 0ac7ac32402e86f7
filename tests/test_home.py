"""The App Home view within Slack's limits, and what the adapter accepts from the Home tab."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.slack import is_home_action, parse_home_action, parse_home_opened
from bot.domain.events import HomeEvent, Ignored
from bot.workspace.home import MAX_BLOCKS, MAX_MINE, MAX_WAITING, home_view
from storage.db import session_factory
from storage.models import Customer, Ticket

from .e2e.conftest import RULES

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _ticket(n: int, customer: int, **kw: Any) -> Ticket:
    base: dict[str, Any] = {
        "customer_id": customer,
        "channel": "telegram",
        "chat_id": str(n),
        "status": "open",
        "priority": "normal",
        "team": "support",
        "slack_channel": "C0SUPPORT",
        "slack_ts": f"1700000000.{n:06d}",
        "subject": f"question {n}",
        "created_at": NOW - timedelta(minutes=n),
        "updated_at": NOW,
    }
    return Ticket(**{**base, **kw})


async def test_long_lists_are_cut_with_a_count_and_the_most_urgent_come_first(
    engine: AsyncEngine,
) -> None:
    async with session_factory(engine).begin() as s:
        customer = Customer(name="Ann <script>", created_at=NOW)
        s.add(customer)
        await s.flush()
        due = (NOW + timedelta(minutes=5)).isoformat()
        for n in range(1, 41):
            s.add(_ticket(n, customer.id, assignee_id="U0BOB"))
        s.add(_ticket(41, customer.id, assignee_id="U0BOB", priority="urgent"))
        s.add(
            _ticket(
                42,
                customer.id,
                assignee_id="U0BOB",
                sla={"first_response": {"state": "running", "due": due}},
            )
        )
        for n in range(43, 73):
            s.add(_ticket(n, customer.id))  # unassigned in support
        s.add(_ticket(73, customer.id, team="billing"))  # not Bob's... he is in billing too
        s.add(_ticket(74, customer.id, team="zh"))  # not one of Bob's teams
        s.add(_ticket(75, customer.id, status="resolved", assignee_id="U0BOB"))
    async with session_factory(engine)() as s:
        view = await home_view(s, RULES, "U0BOB", NOW, "acme")
    blocks = view["blocks"]
    text = json.dumps(blocks, ensure_ascii=False)
    assert view["type"] == "home" and len(blocks) <= MAX_BLOCKS
    assert "*My open tickets* (42)" in text
    assert f"… and {42 - MAX_MINE} more" in text
    assert "*Waiting in your teams* (31)" in text
    assert f"… and {31 - MAX_WAITING} more waiting" in text
    assert "#74>" not in text and "#75>" not in text
    mine = [b["text"]["text"] for b in blocks if "|#" in b.get("text", {}).get("text", "")]
    assert mine[0].startswith("*<https://acme.slack.com/archives/C0SUPPORT/p1700000000000041|#41>*")
    assert "SLA due <!date^" in mine[1] and "|#42>" in mine[1]  # the nearest SLA next
    assert "Ann &lt;script&gt;" in mine[0]  # a customer's name cannot inject mrkdwn
    claims = [
        b["accessory"]["value"]
        for b in blocks
        if b.get("accessory", {}).get("text", {}).get("text") == "Claim"
    ]
    assert len(claims) == MAX_WAITING
    assert "*The desk*" not in text  # Bob is no supervisor
    async with session_factory(engine)() as s:
        carol = json.dumps(await home_view(s, RULES, "U0CAROL", NOW), ensure_ascii=False)
    assert (
        "*The desk* · 0 new · 74 open · 0 waiting on customers · 32 unassigned · 1 urgent" in carol
    )


def _action(action_id: str, value: str, user: str = "U0BOB") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "bob"},
        "container": {"type": "view", "view_id": "V1"},
        "view": {"id": "V1", "type": "home"},
        "actions": [{"action_id": action_id, "value": value, "action_ts": "5.1"}],
    }


def test_the_adapter_reads_the_home_and_drops_forged_values() -> None:
    opened = parse_home_opened(
        {
            "type": "event_callback",
            "event_id": "Ev1",
            "event": {"type": "app_home_opened", "user": "U0BOB", "tab": "home"},
        }
    )
    assert isinstance(opened, HomeEvent) and (opened.action, opened.user_id) == ("opened", "U0BOB")
    messages_tab = parse_home_opened(
        {
            "event_id": "Ev2",
            "event": {"type": "app_home_opened", "user": "U0BOB", "tab": "messages"},
        }
    )
    assert isinstance(messages_tab, Ignored)
    assert is_home_action(_action("home_claim", "7"))
    claim = parse_home_action(_action("home_claim", "7"))
    assert isinstance(claim, HomeEvent) and (claim.action, claim.ticket_id) == ("claim", 7)
    away = parse_home_action(_action("home_availability", "away"))
    assert isinstance(away, HomeEvent) and away.action == "away"
    for forged in (("home_claim", "7; drop"), ("home_claim", "9" * 40), ("home_availability", "x")):
        assert isinstance(parse_home_action(_action(*forged)), Ignored)
    assert isinstance(parse_home_action(_action("home_claim", "7", user="")), Ignored)
