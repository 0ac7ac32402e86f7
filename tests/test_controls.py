"""The card's controls within Slack's limits, and what the adapter accepts from their menus."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.slack import parse_block_actions
from bot.domain.events import AgentAction, Ignored
from bot.domain.rules import RulesError, parse_rules
from bot.workspace.cards import CardView, card_blocks
from bot.workspace.controls import known_intents, may_act
from storage.db import session_factory

from .e2e.conftest import RULES


def _view(**kw: Any) -> CardView:
    base: dict[str, Any] = {
        "ticket_id": 7,
        "customer_name": "Ann",
        "channel": "telegram",
        "status": "open",
        "priority": "high",
        "reasons": (),
        "first_message": "hi",
        "assignee_id": "U0BOB",
    }
    return CardView(**{**base, **kw})


def _menu(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any]:
    return next(e for b in blocks for e in b.get("elements", []) if e.get("action_id") == action_id)


def test_the_menus_show_the_ticket_and_stay_within_slacks_limits() -> None:
    many = tuple(f"intent_{n:03}" for n in range(150))
    blocks = card_blocks(
        _view(tags=("vip",), tag_choices=("bug", "vip"), intent_choices=many, revision="a1")
    )
    assert len(blocks) <= 50
    assert _menu(blocks, "ticket_priority")["initial_option"]["value"] == "7:high"
    assert _menu(blocks, "ticket_status")["initial_option"]["value"] == "7:open"
    assert _menu(blocks, "ticket_reassign")["initial_user"] == "U0BOB"
    assert [o["value"] for o in _menu(blocks, "ticket_tags")["initial_options"]] == ["7:vip"]
    assert len(_menu(blocks, "ticket_intent")["options"]) == 100  # one Slack menu's worth
    assert {b["block_id"] for b in blocks} >= {"actions.a1", "controls.7.a1"}
    resolved = json.dumps(card_blocks(_view(status="resolved", resolved_by="U0BOB")))
    assert "ticket_priority" not in resolved


def test_tags_in_rules_yaml_must_fit_one_menu() -> None:
    with pytest.raises(RulesError, match="tags"):
        parse_rules({"version": 1, "tags": [f"t{n}" for n in range(101)]})
    with pytest.raises(RulesError, match="75 characters"):
        parse_rules({"version": 1, "tags": ["x" * 76]})
    with pytest.raises(RulesError, match="twice"):
        parse_rules({"version": 1, "tags": ["a", "a"]})
    assert "refund" in RULES.tags


async def test_who_may_use_the_controls(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as s:
        assert await may_act(s, RULES, "support", "U0ALICE")
        assert not await may_act(s, RULES, "support", "U0DAN")  # billing only
        assert await may_act(s, RULES, "billing", "U0CAROL")  # a lead and supervisor: any team
        anyone = parse_rules({"version": 1})
        assert await may_act(s, anyone, "support", "U0ANYONE")  # no teams: everyone's
    assert "get_refund" in known_intents(RULES, None)
    assert "from_model" in known_intents(RULES, "from_model")


def _payload(action: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice"},
        "channel": {"id": "C0SUPPORT"},
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": "C0SUPPORT"},
        "response_url": "https://hooks.slack.test/r/1",
        "actions": [{"action_ts": "2.5", "block_id": "controls.7.a1", **action}],
    }


def test_the_adapter_reads_each_menu_and_drops_forged_values() -> None:
    pick = {"action_id": "ticket_priority", "selected_option": {"value": "7:urgent"}}
    event = parse_block_actions(_payload(pick))
    assert isinstance(event, AgentAction)
    assert (event.action, event.ticket_id, event.value) == ("priority", 7, "urgent")
    assert event.response_url == "https://hooks.slack.test/r/1"
    user = parse_block_actions(_payload({"action_id": "ticket_reassign", "selected_user": "U0B"}))
    assert isinstance(user, AgentAction) and (user.ticket_id, user.value) == (7, "U0B")
    tags = {"action_id": "ticket_tags", "selected_options": [{"value": "7:a"}, {"value": "7:b"}]}
    event = parse_block_actions(_payload(tags))
    assert isinstance(event, AgentAction) and event.values == ("a", "b")
    cleared = parse_block_actions(_payload({"action_id": "ticket_tags", "selected_options": []}))
    assert isinstance(cleared, AgentAction) and cleared.values == ()
    # An option naming another ticket than its menu's block: not acted on.
    forged = {"action_id": "ticket_tags", "selected_options": [{"value": "8:a"}]}
    assert isinstance(parse_block_actions(_payload(forged)), Ignored)
    no_ticket = {**_payload(pick)}
    no_ticket["actions"] = [{"action_id": "ticket_reassign", "block_id": "x", "action_ts": "3"}]
    assert isinstance(parse_block_actions(no_ticket), Ignored)
