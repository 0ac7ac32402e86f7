"""Routing rules and the choice of an agent: pure functions, many cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.routing import (
    AgentLoad,
    Route,
    Team,
    TicketFacts,
    When,
    choose_agent,
    choose_team,
    language_from_script,
    waiting_order,
)
from bot.domain.rules import RulesError, parse_rules

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TEAM = Team(channel="C0SUPPORT", agents=("U0ALICE", "U0BOB", "U0CAROL"), capacity=3)


def loads(**kw: tuple[bool, int]) -> dict[str, AgentLoad]:
    return {f"U0{k}": AgentLoad(f"U0{k}", avail, n) for k, (avail, n) in kw.items()}


def everyone_free() -> dict[str, AgentLoad]:
    return loads(ALICE=(True, 0), BOB=(True, 0), CAROL=(True, 0))


ROUTES = (
    Route(when=When(intent=("payment_issue", "get_refund")), team="billing"),
    Route(when=When(language=("zh",)), team="zh"),
    Route(when=When(vip=True), team="vip"),
    Route(when=When(channel=("whatsapp",), keywords=("warranty",)), team="support"),
    Route(when=When(priority=("urgent",)), team="vip"),
)


@pytest.mark.parametrize(
    ("facts", "team", "reason"),
    [
        (TicketFacts("telegram", intent="get_refund"), "billing", "rule 1 (intent get_refund)"),
        (TicketFacts("telegram", language="zh-hans"), "zh", "rule 2 (language zh-hans)"),
        (TicketFacts("whatsapp", vip=True, language="zh"), "zh", "rule 2"),  # first match wins
        (TicketFacts("telegram", vip=True), "vip", "rule 3 (VIP)"),
        (
            TicketFacts("whatsapp", text="Is this under WARRANTY?"),
            "support",
            "rule 4 (channel whatsapp, keyword 'warranty')",
        ),
        (TicketFacts("telegram", text="warranty"), "general", "no routing rule matched"),
        (TicketFacts("telegram", priority="urgent"), "vip", "rule 5 (priority urgent)"),
        (TicketFacts("telegram", intent="cancel_order"), "general", "default team"),
        (TicketFacts("telegram", language="en"), "general", "default team"),
    ],
)
def test_first_matching_rule_wins(facts: TicketFacts, team: str, reason: str) -> None:
    choice = choose_team(facts, ROUTES, "general")
    assert choice.team == team
    assert reason in choice.reason


def test_rotation_goes_round_the_available_agents_in_order() -> None:
    got, pointer = [], None
    for _ in range(5):
        choice = choose_agent("support", TEAM, everyone_free(), pointer)
        pointer = choice.agent
        got.append(pointer)
    assert got == ["U0ALICE", "U0BOB", "U0CAROL", "U0ALICE", "U0BOB"]


def test_rotation_skips_an_agent_who_is_away() -> None:
    state = loads(ALICE=(True, 0), BOB=(False, 0), CAROL=(True, 0))
    first = choose_agent("support", TEAM, state, "U0ALICE")
    assert first.agent == "U0CAROL"
    assert choose_agent("support", TEAM, state, "U0CAROL").agent == "U0ALICE"


def test_reason_says_strategy_and_load() -> None:
    state = loads(ALICE=(True, 0), BOB=(True, 0), CAROL=(True, 0))
    choice = choose_agent("support", TEAM, state, "U0ALICE")
    assert choice.reason == "assigned to <@U0BOB>: round robin, 1/3 open"


def test_everyone_away_means_the_ticket_waits() -> None:
    state = loads(ALICE=(False, 0), BOB=(False, 0), CAROL=(False, 0))
    choice = choose_agent("support", TEAM, state, None)
    assert choice.agent is None
    assert choice.reason == "waiting: no available agent in support"


def test_full_capacity_means_the_ticket_waits_and_a_free_slot_is_used() -> None:
    full = loads(ALICE=(True, 3), BOB=(True, 3), CAROL=(False, 0))
    choice = choose_agent("support", TEAM, full, None)
    assert choice.agent is None
    assert "at capacity (3)" in choice.reason
    one_free = loads(ALICE=(True, 3), BOB=(True, 2), CAROL=(False, 0))
    assert choose_agent("support", TEAM, one_free, "U0BOB").agent == "U0BOB"


def test_unknown_agents_count_as_away() -> None:
    assert choose_agent("support", TEAM, {}, None).agent is None


def test_balanced_takes_the_least_loaded_and_ties_go_to_the_longest_waiting() -> None:
    team = TEAM.model_copy(update={"assignment": "balanced"})
    state = {
        "U0ALICE": AgentLoad("U0ALICE", True, 2, T0),
        "U0BOB": AgentLoad("U0BOB", True, 1, T0 - timedelta(minutes=1)),
        "U0CAROL": AgentLoad("U0CAROL", True, 1, T0 - timedelta(minutes=5)),
    }
    choice = choose_agent("support", team, state, None)
    assert choice.agent == "U0CAROL"
    assert choice.reason == "assigned to <@U0CAROL>: balanced, 2/3 open"
    state["U0CAROL"] = AgentLoad("U0CAROL", True, 2, T0)
    assert choose_agent("support", team, state, None).agent == "U0BOB"
    never = {
        "U0ALICE": AgentLoad("U0ALICE", True, 0, T0),
        "U0BOB": AgentLoad("U0BOB", True, 0, None),
    }
    assert choose_agent("support", team, never, None).agent == "U0BOB"


def test_manual_assigns_nobody() -> None:
    team = TEAM.model_copy(update={"assignment": "manual"})
    choice = choose_agent("support", team, everyone_free(), None)
    assert choice.agent is None
    assert "Claim only" in choice.reason


def test_a_pointer_to_someone_no_longer_in_the_team_starts_again_at_the_top() -> None:
    assert choose_agent("support", TEAM, everyone_free(), "U0GONE").agent == "U0ALICE"


def test_waiting_order_is_urgent_first_then_oldest() -> None:
    tickets = [
        ("normal", T0, 1),
        ("urgent", T0 + timedelta(hours=1), 2),
        ("high", T0 + timedelta(minutes=1), 3),
        ("urgent", T0 + timedelta(minutes=30), 4),
    ]
    ordered = sorted(tickets, key=lambda t: waiting_order(*t))
    assert [t[2] for t in ordered] == [4, 2, 3, 1]


def test_script_gives_a_language_only_where_it_is_unambiguous() -> None:
    assert language_from_script("我的订单三天了还没到") == "zh"
    assert language_from_script("注文はまだですか") == "ja"
    assert language_from_script("주문이 안 왔어요") == "ko"
    assert language_from_script("Where is my order?") is None


# -- rules.yaml --------------------------------------------------------------------------------


def test_a_file_without_teams_has_one_default_team_on_slack_channel() -> None:
    rules = parse_rules({"version": 1, "slack": {"channel": "C0HELP"}})
    assert rules.default_team == "support"
    team = rules.team("support")
    assert team.channel == "C0HELP"
    assert team.assignment == "manual"
    assert rules.team("gone") == team


def test_teams_and_routing_parse_with_one_or_many_values() -> None:
    rules = parse_rules(
        {
            "version": 1,
            "teams": {
                "support": {"channel": "C0SUPPORT", "agents": ["U0ALICE", "U0BOB"]},
                "billing": {"channel": "C0BILLING", "agents": ["U0BOB"], "assignment": "balanced"},
            },
            "routing": [
                {"when": {"channel": "whatsapp", "intent": "get_refund"}, "team": "billing"}
            ],
            "availability": {"away_grace_minutes": 2, "reassign_when_away": False},
        }
    )
    assert rules.default_team == "support"
    assert rules.routing[0].when.channel == ("whatsapp",)
    assert rules.teams_of("U0BOB") == ["support", "billing"]
    assert rules.availability.away_grace_minutes == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"routing": [{"when": {"vip": True}, "team": "nope"}]},
            "routing.0.team: unknown team 'nope' (teams: support)",
        ),
        (
            {"routing": [{"when": {"mood": "bad"}, "team": "support"}]},
            "routing.0.when.mood: Extra inputs are not permitted",
        ),
        (
            {"teams": {"support": {"channel": "C0SUPPORT", "lead": "U0ZED"}}},
            "teams.support.lead: U0ZED is not an agent of any team",
        ),
        (
            {"teams": {"support": {"channel": "support"}}},
            "teams.support.channel: Value error, 'support' is not a Slack channel id",
        ),
        (
            {"teams": {"support": {"channel": "C0S", "agents": ["alice"]}}},
            "teams.support.agents: Value error, 'alice' is not a Slack user id",
        ),
        (
            {"teams": {"support": {"channel": "C0S", "assignment": "random"}}},
            "teams.support.assignment: Input should be 'round_robin', 'balanced' or 'manual'",
        ),
        (
            {"teams": {"support": {"channel": "C0S", "capacity": 0}}},
            "teams.support.capacity: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_teams_and_routes_are_start_up_errors_naming_the_path(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules({"version": 1, **data})
    assert message in str(err.value)


def test_the_shipped_rules_yaml_routes_to_its_teams() -> None:
    from pathlib import Path

    from bot.domain.rules import load_rules

    rules = load_rules(Path(__file__).parent.parent / "rules.yaml")
    assert set(rules.all_teams) >= {"support", "billing"}
    for route in rules.routing:
        assert route.team in rules.all_teams


def test_a_team_may_carry_its_own_sla_and_calendar_and_unknown_calendars_are_named() -> None:
    team = {"channel": "C0VIP", "calendar": "always", "sla": {"calendar": "always"}}
    rules = parse_rules({"version": 1, "teams": {"vip": team}})
    assert rules.team("vip").calendar == "always"
    assert rules.team("vip").sla is not None
    bad = {"channel": "C0VIP", "calendar": "ofice"}
    with pytest.raises(RulesError, match=r"teams\.vip\.calendar: unknown calendar 'ofice'"):
        parse_rules({"version": 1, "teams": {"vip": bad}})
