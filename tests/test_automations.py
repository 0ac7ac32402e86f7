"""Automations (issue 24): the rules.yaml interface as a user writes it, the validation errors
with their field paths, and the pure engine: event rules with when/unless/stop, time rules on
a business calendar across a weekend and a DST switch, anchors, chain depth, the per-day limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.automations import (
    Anchors,
    AutomationLimits,
    Facts,
    Firing,
    Past,
    Refused,
    Timer,
    advance_anchors,
    apply_actions,
    due_at,
    fire_timer,
    fired_today,
    on_event,
    over_limit,
    timers,
    within_chain,
)
from bot.domain.rules import Rules, RulesError, load_rules, parse_rules, read_yaml

# The issue's example, exactly as a user writes it (bare `on:`, the issue's comments), on a
# desk with the macros, the calendar and the lead it names.
HERE = Path(__file__).parent / "automations"
ISSUE_EXAMPLE = (HERE / "issue_example.yaml").read_text(encoding="utf-8")

DESK = """\
version: 1
teams:
  support: {channel: C0SUPPORT, agents: [U0ALICE, U0CAROL], lead: U0CAROL}
  billing: {channel: C0BILLING, agents: [U0BOB]}
macros:
  - name: Still there?
    text: {en: "Are you still there?"}
  - name: Closing for now
    text: {en: "We are closing this for now."}
calendars:
  office:
    timezone: Europe/Berlin
    hours: &week
      mon: "09:00-17:00"
      tue: "09:00-17:00"
      wed: "09:00-17:00"
      thu: "09:00-17:00"
      fri: "09:00-17:00"
  newyork:
    timezone: America/New_York
    hours: *week
"""


def rules_from(text: str, tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path)


@pytest.fixture
def example(tmp_path: Path) -> Rules:
    return rules_from(DESK + ISSUE_EXAMPLE, tmp_path)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the interface ------------------------------------------------------------------------------


def test_the_issues_example_loads_with_a_bare_on(example: Rules) -> None:
    ids = [rule.id for rule in example.automations]
    assert ids == ["wait-for-customer", "pending-reminder", "pending-autoclose", "angry-vip"]
    wait, reminder, autoclose, vip = example.automations
    assert wait.on == ("agent_reply",) and wait.when.channel == ("telegram", "whatsapp")
    assert [a.as_dict() for a in wait.do] == [{"set_status": "pending"}]
    assert reminder.on is None and reminder.anchor == "pending" and reminder.calendar == "office"
    assert str(reminder.duration) == "24h" and reminder.unless is not None
    assert reminder.unless.tags == ("no-reminders",)
    assert [a.as_dict() for a in reminder.do] == [
        {"reply": {"macro": "Still there?"}},
        {"add_tag": "reminded"},
    ]
    assert autoclose.duration.time == timedelta(hours=72)
    assert vip.on == ("ticket_created", "customer_message") and vip.stop
    assert vip.when.vip is True and vip.when.sentiment == ("negative",)
    assert [a.name for a in vip.do] == ["set_priority", "note", "notify"]
    assert vip.do[2].notify == ("lead",)
    assert example.automation_limits.chain_depth == 3
    assert example.automation_limits.per_ticket_per_day == 20


def test_a_mapping_read_with_yaml_1_1_mends_the_true_key_too() -> None:
    # Tests and tools that read rules.yaml with yaml.safe_load get {True: [...]}: still "on".
    import yaml

    data = yaml.safe_load(DESK + ISSUE_EXAMPLE)
    assert True in data["automations"][0]
    rules = parse_rules(data)
    assert rules.automations[0].on == ("agent_reply",)


def test_only_true_and_false_are_booleans_in_rules_yaml() -> None:
    data = read_yaml("a: yes\nb: no\non: off\nc: true\nd: False\n")
    assert data == {"a": "yes", "b": "no", "on": "off", "c": True, "d": False}


def test_yes_and_no_still_set_a_switch(tmp_path: Path) -> None:
    rules = rules_from("version: 1\nkb: {enabled: no}\nstatus_lookup: {button: off}\n", tmp_path)
    assert rules.kb.enabled is False and rules.status_lookup.button is False


def test_without_automations_nothing_changes() -> None:
    rules = parse_rules({"version": 1})
    assert rules.automations == ()
    assert rules.automation_limits == AutomationLimits(chain_depth=3, per_ticket_per_day=20)


def problems_of(automations: list[dict[str, Any]], tmp_path: Path, **extra: Any) -> str:
    base = read_yaml(DESK)
    base["automations"] = automations
    base.update(extra)
    with pytest.raises(RulesError) as err:
        parse_rules(base)
    return str(err.value)


REPLY = {"reply": {"macro": "Still there?"}}
BAD: dict[str, tuple[list[dict[str, Any]], str]] = {
    "unknown macro": (
        [{"id": "r", "on": ["agent_reply"], "do": [{"reply": {"macro": "Stil there?"}}]}],
        "automations.0.do.0.reply.macro: unknown macro 'Stil there?' "
        "('Still there?', 'Closing for now')",
    ),
    "unknown team in transfer": (
        [{"id": "r", "on": "agent_reply", "do": [{"transfer": "sales"}]}],
        "automations.0.do.0.transfer: unknown team 'sales' (teams: support, billing)",
    ),
    "unknown team in when": (
        [{"id": "r", "on": "agent_reply", "when": {"team": "sales"}, "do": [REPLY]}],
        "automations.0.when.team: unknown team 'sales' (teams: support, billing)",
    ),
    "unknown agent": (
        [{"id": "r", "on": "agent_reply", "do": [{"assign": "U0NOBODY"}]}],
        "automations.0.do.0.assign: U0NOBODY is not an agent of any team",
    ),
    "unknown calendar": (
        [{"id": "r", "after": {"pending": "4h"}, "calendar": "ofice", "do": [REPLY]}],
        "automations.0.calendar: unknown calendar 'ofice' (calendars: office, newyork, always)",
    ),
    "unknown anchor": (
        [{"id": "r", "after": {"pendng": "4h"}, "do": [REPLY]}],
        "automations.0.after.pendng.[key]: Input should be 'created', 'pending', "
        "'last_customer_message', 'last_agent_reply', 'resolved' or 'unassigned'",
    ),
    "unknown action": (
        [{"id": "r", "on": "agent_reply", "do": [{"set_stauts": "pending"}]}],
        "automations.0.do.0: Value error, unknown action 'set_stauts' (actions: set_status,",
    ),
    "two actions in one item": (
        [{"id": "r", "on": "agent_reply", "do": [{"add_tag": "a", "remove_tag": "b"}]}],
        "automations.0.do.0: Value error, one action per list item, not 2: add_tag, remove_tag",
    ),
    "unknown event": (
        [{"id": "r", "on": ["agent_replied"], "do": [REPLY]}],
        "automations.0.on.0: Input should be 'ticket_created', 'customer_message',",
    ),
    "bad status": (
        [{"id": "r", "on": "agent_reply", "do": [{"set_status": "waiting"}]}],
        "automations.0.do.0.set_status: Input should be 'open', 'pending' or 'resolved'",
    ),
    "time rule without a duration": (
        [{"id": "r", "after": {"pending": None}, "do": [REPLY]}],
        "automations.0.after.pending: Value error, a duration is a string like 10s, 30m, 4h or 2d",
    ),
    "bad duration": (
        [{"id": "r", "after": {"pending": "1 day"}, "do": [REPLY]}],
        "automations.0.after.pending: Value error, '1 day' is not a duration like 10s, 30m, 4h",
    ),
    "two anchors": (
        [{"id": "r", "after": {"pending": "4h", "created": "1d"}, "do": [REPLY]}],
        "automations.0.after: a time rule has exactly one anchor and its duration",
    ),
    "no anchor": (
        [{"id": "r", "after": {}, "do": [REPLY]}],
        "automations.0.after: a time rule has exactly one anchor and its duration",
    ),
    "event rule without on": (
        [{"id": "r", "when": {"vip": True}, "do": [REPLY]}],
        "automations.0.on: an event rule needs on: (events: ticket_created,",
    ),
    "both on and after": (
        [{"id": "r", "on": "agent_reply", "after": {"pending": "4h"}, "do": [REPLY]}],
        "automations.0: a rule has on: (events) or after: (time), not both",
    ),
    "duplicate id": (
        [
            {"id": "r", "on": "agent_reply", "do": [REPLY]},
            {"id": "r", "on": "customer_message", "do": [REPLY]},
        ],
        "automations.1.id: 'r' is the id of another rule",
    ),
    "no actions": (
        [{"id": "r", "on": "agent_reply", "do": []}],
        "automations.0.do: Tuple should have at least 1 item",
    ),
    "stop on a time rule": (
        [{"id": "r", "after": {"pending": "4h"}, "stop": True, "do": [REPLY]}],
        "automations.0.stop: only event rules (on:) run in a list that stop ends",
    ),
    "calendar on an event rule": (
        [{"id": "r", "on": "agent_reply", "calendar": "office", "do": [REPLY]}],
        "automations.0.calendar: only a time rule (after:) counts on a calendar",
    ),
    "unknown condition": (
        [{"id": "r", "on": "agent_reply", "when": {"mood": "bad"}, "do": [REPLY]}],
        "automations.0.when.mood: Extra inputs are not permitted",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_each_mistake_names_its_field(case: str, tmp_path: Path) -> None:
    automations, said = BAD[case]
    assert said in problems_of(automations, tmp_path)


def test_bad_limits_name_the_field(tmp_path: Path) -> None:
    said = problems_of([], tmp_path, automation_limits={"per_ticket_per_day": 0})
    assert "automation_limits.per_ticket_per_day: Input should be greater than or equal to 1" in (
        said
    )


def test_a_bare_on_key_elsewhere_is_still_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as err:
        rules_from("version: 1\nslack:\n  on: true\n", tmp_path)
    assert "slack.on: Extra inputs are not permitted" in str(err.value)


# -- event rules ------------------------------------------------------------------------------

NOW = t("2026-03-10T10:00:00+01:00")


def test_an_agent_reply_sets_a_chat_ticket_pending(example: Rules) -> None:
    facts = Facts(channel="telegram", status="open", assignee="U0ALICE")
    decision = on_event(example.automations, "agent_reply", facts, NOW)
    assert [(f.rule, f.why) for f in decision.firings] == [("wait-for-customer", "on agent_reply")]
    after, caused = apply_actions(facts, decision.firings[0].actions)
    assert after.status == "pending" and caused == ["status_changed"]
    assert on_event(example.automations, "customer_message", facts, NOW).firings == ()


def test_when_unless_and_stop(tmp_path: Path) -> None:
    rules = rules_from(
        DESK
        + """\
automations:
  - id: vip-angry
    on: customer_message
    when: {vip: true, sentiment: negative}
    unless: {tags: [calm-down-sent]}
    do: [{add_tag: calm-down-sent}]
    stop: true
  - id: any-negative
    on: customer_message
    when: {sentiment: [negative]}
    do: [{set_priority: high}]
  - id: whatsapp-english
    on: customer_message
    when: {channel: whatsapp, language: en, keywords: [refund]}
    do: [{transfer: billing}]
""",
        tmp_path,
    ).automations
    angry_vip = Facts(channel="telegram", vip=True, sentiment="negative", text="hello")
    fired = on_event(rules, "customer_message", angry_vip, NOW).firings
    assert [f.rule for f in fired] == ["vip-angry"]  # stop: the next rules do not run
    tagged = Facts(
        channel="telegram", vip=True, sentiment="negative", tags=frozenset({"calm-down-sent"})
    )
    fired = on_event(rules, "customer_message", tagged, NOW).firings
    assert [f.rule for f in fired] == ["any-negative"]  # unless held: skipped, so no stop
    english = Facts(
        channel="whatsapp", sentiment="negative", language="en-GB", text="My REFUND please"
    )
    fired = on_event(rules, "customer_message", english, NOW).firings
    assert [f.rule for f in fired] == ["any-negative", "whatsapp-english"]  # file order
    assert on_event(rules, "agent_reply", english, NOW).firings == ()
    german = Facts(channel="whatsapp", language="de", text="refund")
    assert on_event(rules, "customer_message", german, NOW).firings == ()


def test_conditions_on_status_team_rating_assigned_and_priority(tmp_path: Path) -> None:
    rules = rules_from(
        DESK
        + """\
automations:
  - id: low-rating
    on: rated
    when:
      {rating: [1, 2], team: support, assigned: true, status: [resolved, closed], priority: low}
    do: [{note: "Low rating: call them back"}, {notify: lead}]
""",
        tmp_path,
    ).automations
    good = Facts(
        "telegram", status="resolved", team="support", rating=2, assignee="U0ALICE", priority="low"
    )
    assert [f.rule for f in on_event(rules, "rated", good, NOW).firings] == ["low-rating"]
    for spoiled in (
        {"rating": 3},
        {"team": "billing"},
        {"assignee": None},
        {"status": "open"},
        {"priority": "urgent"},
    ):
        facts = replace(good, **spoiled)
        assert on_event(rules, "rated", facts, NOW).firings == (), spoiled
    assert rules[0].do[1].notify == ("lead",)  # one value or a list


def test_each_action_changes_the_facts_and_says_its_events() -> None:
    from bot.domain.automations import Action

    facts = Facts("telegram", status="open", team="support", tags=frozenset({"a"}))

    def act(**action: Any) -> tuple[Facts, list[str]]:
        after, events = apply_actions(
            facts, [Action.model_validate(action)], leads={"support": "U0CAROL"}
        )
        return after, list(events)

    assert act(set_status="resolved") == (
        Facts("telegram", status="resolved", team="support", tags=frozenset({"a"})),
        ["status_changed", "resolved"],
    )
    assert act(set_status="open")[1] == []  # no change, no event
    assert act(set_priority="urgent")[0].priority == "urgent"
    assert act(set_priority="urgent")[1] == ["priority_changed"]
    assert act(add_tag="b")[0].tags == {"a", "b"}
    assert act(remove_tag="a")[0].tags == frozenset()
    assert act(transfer="billing")[0].team == "billing"
    assert act(assign="lead") == (
        Facts("telegram", status="open", team="support", tags=frozenset({"a"}), assignee="U0CAROL"),
        ["assigned"],
    )
    assert act(assign="U0ALICE")[0].assignee == "U0ALICE"
    assert act(assign="none") == (facts, [])  # already unassigned
    for quiet in ({"note": "x"}, {"notify": ["channel"]}, {"reply": {"macro": "m"}}):
        assert act(**quiet) == (facts, [])
    reopened, events = apply_actions(
        Facts("telegram", status="resolved"), [Action(set_status="open")]
    )
    assert reopened.status == "open" and events == ["status_changed", "reopened"]


# -- the limits ---------------------------------------------------------------------------------


def test_chain_depth() -> None:
    limits = AutomationLimits(chain_depth=2)
    assert [within_chain(d, limits) for d in range(4)] == [True, True, True, False]


def test_a_chain_past_its_depth_stops_with_a_reason(example: Rules) -> None:
    facts = Facts(channel="telegram", status="open")
    limits = AutomationLimits(chain_depth=1)
    assert on_event(example.automations, "agent_reply", facts, NOW, depth=1, limits=limits).firings
    stopped = on_event(example.automations, "agent_reply", facts, NOW, depth=2, limits=limits)
    assert stopped.firings == ()
    assert stopped.refused == (
        Refused(
            "",
            NOW,
            "chain",
            "agent_reply at chain depth 2 is past chain_depth 1: not run for wait-for-customer",
        ),
    )
    # An event no rule answers says nothing, however deep.
    quiet = on_event(example.automations, "rated", facts, NOW, depth=5, limits=limits)
    assert quiet == on_event([], "rated", facts, NOW)


def test_the_per_day_limit_counts_a_rolling_day() -> None:
    limits = AutomationLimits(per_ticket_per_day=3)
    history = [Past("r", NOW - timedelta(hours=h)) for h in (25, 20, 10)] + [Past("other", NOW)]
    assert fired_today(history, "r", NOW) == 2  # 25 hours ago is outside the day
    assert not over_limit(history, "r", NOW, limits)
    assert over_limit([*history, Past("r", NOW)], "r", NOW, limits)
    assert not over_limit(
        [*history, Past("r", NOW)], "r", NOW + timedelta(hours=4, seconds=1), limits
    )


def test_a_rule_past_its_limit_is_suspended_once_then_skipped(example: Rules) -> None:
    limits = AutomationLimits(per_ticket_per_day=2)
    facts = Facts(channel="telegram", status="open")
    history = [Past("wait-for-customer", NOW - timedelta(hours=1))] * 2
    decision = on_event(
        example.automations, "agent_reply", facts, NOW, limits=limits, history=history
    )
    assert decision.firings == ()
    assert decision.refused == (
        Refused("wait-for-customer", NOW, "suspended", "fired 2 times on this ticket within a day"),
    )
    history.append(Past("wait-for-customer", NOW, suspended=True))
    later = NOW + timedelta(days=3)  # suspended stays suspended, and is not reported again
    assert on_event(
        example.automations, "agent_reply", facts, later, limits=limits, history=history
    ) == (on_event([], "agent_reply", facts, later))


# -- time rules ---------------------------------------------------------------------------------


def test_due_on_office_hours_across_a_weekend(example: Rules) -> None:
    reminder = example.automations[1]  # 24h of office time: three 8-hour days
    friday = t("2026-03-13T16:00:00+01:00")
    assert due_at(reminder, friday, example.calendars) == t("2026-03-18T16:00:00+01:00")
    saturday = t("2026-03-14T11:00:00+01:00")  # counted from Monday's opening
    assert due_at(reminder, saturday, example.calendars) == t("2026-03-18T17:00:00+01:00")


def test_due_across_the_spring_dst_switch(tmp_path: Path) -> None:
    rules = rules_from(
        DESK
        + """\
automations:
  - {id: berlin, after: {pending: 4h}, calendar: office, do: [{note: x}]}
  - {id: newyork, after: {pending: 2d}, calendar: newyork, do: [{note: x}]}
  - {id: real-time, after: {pending: 24h}, do: [{note: x}]}
""",
        tmp_path,
    )
    berlin, newyork, real = rules.automations
    # Berlin moves to summer time on Sunday 29 March 2026: Friday 15:00 CET + 4 open hours is
    # Monday 11:00 CEST, 09:00 UTC (not 10:00).
    friday = t("2026-03-27T15:00:00+01:00")
    assert due_at(berlin, friday, rules.calendars) == t("2026-03-30T09:00:00+00:00")
    # New York moves on Sunday 8 March 2026: two business days from Friday 10:00 EST are
    # Tuesday 10:00 EDT.
    ny_friday = t("2026-03-06T10:00:00-05:00")
    assert due_at(newyork, ny_friday, rules.calendars) == t("2026-03-10T10:00:00-04:00")
    # Without a calendar a duration is real elapsed time.
    assert due_at(real, friday, rules.calendars) == friday + timedelta(hours=24)


def test_seconds_are_durations_too(tmp_path: Path) -> None:
    rules = rules_from(
        DESK + "automations:\n  - {id: s, after: {created: 10s}, do: [{note: x}]}\n", tmp_path
    )
    assert due_at(rules.automations[0], NOW, rules.calendars) == NOW + timedelta(seconds=10)


def test_anchors_start_restart_and_end() -> None:
    at = [NOW + timedelta(minutes=m) for m in range(10)]
    new = Facts("telegram", status="new")
    anchors = advance_anchors(Anchors(), "ticket_created", None, new, at[0])
    assert dict(anchors.started) == {
        "created": at[0],
        "last_customer_message": at[0],
        "unassigned": at[0],
    }
    assigned = Facts("telegram", status="open", assignee="U0ALICE")
    anchors = advance_anchors(anchors, "assigned", new, assigned, at[1])
    assert "unassigned" not in anchors.started
    anchors = advance_anchors(anchors, "agent_reply", assigned, assigned, at[2])
    assert anchors.start_of("last_agent_reply") == at[2]
    assert anchors.start_of("last_customer_message") is None  # answered
    pending = Facts("telegram", status="pending", assignee="U0ALICE")
    anchors = advance_anchors(anchors, "status_changed", assigned, pending, at[3])
    assert anchors.start_of("pending") == at[3]
    anchors = advance_anchors(anchors, "customer_message", pending, assigned, at[4])
    assert anchors.start_of("pending") is None and anchors.start_of("last_agent_reply") is None
    assert anchors.start_of("last_customer_message") == at[4]
    anchors = advance_anchors(anchors, "status_changed", assigned, pending, at[5])
    assert anchors.start_of("pending") == at[5]  # restarted
    resolved = Facts("telegram", status="resolved", assignee="U0ALICE")
    anchors = advance_anchors(anchors, "resolved", pending, resolved, at[6])
    assert dict(anchors.started) == {"resolved": at[6]}
    reopened = Facts("telegram", status="open")
    anchors = advance_anchors(anchors, "reopened", resolved, reopened, at[7])
    assert dict(anchors.started) == {"unassigned": at[7]}


def test_a_due_timer_fires_once_for_its_anchor_start(example: Rules) -> None:
    rules, cals = example.automations, example.calendars
    pending = Facts("telegram", status="pending")
    start = t("2026-03-10T10:00:00+01:00")
    anchors = Anchors({"pending": start})
    scheduled = timers(rules, anchors, cals)
    assert [(x.rule, x.due) for x in scheduled] == [
        ("pending-reminder", t("2026-03-13T10:00:00+01:00")),
        # 72 open hours of 8-hour days: 7 on Tuesday, then eight days and one hour.
        ("pending-autoclose", t("2026-03-23T10:00:00+01:00")),
    ]
    reminder = scheduled[0]
    assert reminder.key == "pending-reminder:pending:2026-03-10T10:00:00+01:00"
    fired = fire_timer(rules, reminder, anchors, pending, reminder.due)
    assert isinstance(fired, Firing)
    assert (fired.rule, fired.anchor, fired.anchor_start) == ("pending-reminder", "pending", start)
    assert fired.why == "24h after pending on calendar office"
    assert fire_timer(rules, reminder, Anchors(), pending, reminder.due) == "anchor pending ended"
    later = Anchors({"pending": start + timedelta(hours=1)})
    assert fire_timer(rules, reminder, later, pending, reminder.due) == "anchor pending restarted"
    opted_out = Facts("telegram", status="pending", tags=frozenset({"no-reminders"}))
    assert fire_timer(rules, reminder, anchors, opted_out, reminder.due) == "unless: tags matches"
    gone = Timer("no-such-rule", "pending", start, reminder.due)
    assert fire_timer(rules, gone, anchors, pending, reminder.due) == (
        "the rule is no longer in rules.yaml"
    )
    limits = AutomationLimits(per_ticket_per_day=1)
    history = [Past("pending-reminder", reminder.due - timedelta(hours=1))]
    assert isinstance(
        fire_timer(rules, reminder, anchors, pending, reminder.due, limits=limits, history=history),
        Refused,
    )


def _uncomment_from(text: str, marker: str) -> str:
    """The commented block that starts at the line ``marker`` (stripped), uncommented."""
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if line.strip() == marker)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    n = start
    while n < len(lines) and lines[n].startswith(indent + "# "):
        lines[n] = indent + lines[n][len(indent) + 2 :]
        n += 1
    return "\n".join(lines) + "\n"


def test_the_shipped_examples_are_commented_out_and_valid_once_uncommented(
    tmp_path: Path,
) -> None:
    root = Path(__file__).parent.parent
    shipped = (root / "rules.yaml").read_text(encoding="utf-8")
    assert load_rules(root / "rules.yaml").automations == ()  # the live desk gets none
    text = _uncomment_from(shipped, "# - name: Still there?")
    text = _uncomment_from(text, "# automations:")
    rules = rules_from(text, tmp_path)
    assert [rule.id for rule in rules.automations] == [
        "wait-for-customer",
        "pending-reminder",
        "pending-autoclose",
        "angry-vip",
    ]
    assert {m.name for m in rules.macros} >= {"Still there?", "Closing for now"}
    assert rules.automation_limits == AutomationLimits(chain_depth=3, per_ticket_per_day=20)
