"""SLA clocks: each timeline under tests/sla_timelines/ replays to its checked-by-hand output.

A timeline is ``NAME.jsonl`` (the input of ``deskbot sla replay``) beside ``NAME.out`` (what it
prints). They run through the engine and through the CLI, so the command a team uses to check a
policy is the code the desk runs. The policy is the issue's example (tests/sla_timelines/
rules.yaml: office hours in Berlin, Easter holidays, ``low`` on the 24 × 7 calendar); timelines
named ``*nopause*`` use the same with ``pause_when_pending: false``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands.sla import parse_timeline, replay_lines
from bot.domain.calendars import ALWAYS, Calendar
from bot.domain.rules import RulesError, load_rules, parse_rules
from bot.domain.sla import (
    ClockState,
    Duration,
    SlaEvent,
    SlaPolicy,
    parse_duration,
    policy_for,
    replay,
)

HERE = Path(__file__).parent / "sla_timelines"
TIMELINES = sorted(HERE.glob("*.jsonl"))
ROOT = Path(__file__).parent.parent


def _rules_for(timeline: Path) -> Path:
    return HERE / ("rules_nopause.yaml" if "nopause" in timeline.name else "rules.yaml")


def test_there_are_at_least_twenty_timelines() -> None:
    assert len(TIMELINES) >= 20
    assert all(path.with_suffix(".out").exists() for path in TIMELINES)


@pytest.mark.parametrize("timeline", TIMELINES, ids=lambda path: path.stem)
def test_timeline_replays_to_its_output(timeline: Path) -> None:
    rules = load_rules(_rules_for(timeline))
    assert rules.sla is not None
    lines = timeline.read_text().splitlines()
    expected = timeline.with_suffix(".out").read_text().splitlines()
    assert replay_lines(rules.sla, rules.calendars, lines) == expected


@pytest.mark.parametrize("timeline", TIMELINES, ids=lambda path: path.stem)
def test_the_cli_prints_the_same(timeline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sla", "replay", str(timeline), "--rules", str(_rules_for(timeline))])
    out = capsys.readouterr().out
    assert code == 0
    assert out == timeline.with_suffix(".out").read_text()


@pytest.mark.parametrize("timeline", TIMELINES, ids=lambda path: path.stem)
def test_replaying_to_any_moment_is_a_prefix_of_the_whole(timeline: Path) -> None:
    # The desk calls replay(…, until=now) on every change and at each timer and records what it
    # has not recorded: that is exactly-once only if an earlier replay never fires something a
    # later one does not, at the same moment with the same key.
    rules = load_rules(_rules_for(timeline))
    assert rules.sla is not None
    events, until = parse_timeline(timeline.read_text().splitlines())
    whole = replay(rules.sla, rules.calendars, events, until)
    keys = [fired.key for fired in whole.fired]
    assert len(keys) == len(set(keys)), "a firing key repeats"
    moments = sorted({e.at for e in events} | {f.at for f in whole.fired} | {until})
    for moment in moments:
        part = replay(rules.sla, rules.calendars, [e for e in events if e.at <= moment], moment)
        assert part.fired == [f for f in whole.fired if f.at <= moment]
        if part.next_due is not None:
            assert part.next_due > moment


def _policy() -> tuple[SlaPolicy, dict[str, Calendar]]:
    rules = load_rules(HERE / "rules.yaml")
    assert rules.sla is not None
    return rules.sla, rules.calendars


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_next_due_is_the_next_warning_breach_or_escalation() -> None:
    policy, calendars = _policy()
    created = SlaEvent(_at("2026-03-13T16:30:00+01:00"), "created", priority="high")
    # Friday 16:30, 2 h first response: the warning (1.5 h) is Monday 10:00 Berlin.
    result = replay(policy, calendars, [created], _at("2026-03-13T18:00:00+01:00"))
    assert result.next_due == _at("2026-03-16T10:00:00+01:00")
    assert result.state["first_response"].state == "running"
    # Nothing pending once everything is met and resolved.
    done = [
        created,
        SlaEvent(_at("2026-03-16T09:05:00+01:00"), "agent_reply"),
        SlaEvent(_at("2026-03-16T09:10:00+01:00"), "status", status="resolved"),
    ]
    end = replay(policy, calendars, done, _at("2026-03-20T00:00:00+01:00"))
    assert end.next_due is None
    assert {t: s.state for t, s in end.state.items()} == {
        "first_response": "met",
        "next_response": "none",
        "resolution": "met",
    }


def test_each_next_response_cycle_has_its_own_start() -> None:
    policy, calendars = _policy()
    events = [
        SlaEvent(_at("2026-03-10T09:00:00+01:00"), "created", priority="urgent"),
        SlaEvent(_at("2026-03-10T09:05:00+01:00"), "agent_reply"),
        SlaEvent(_at("2026-03-10T10:00:00+01:00"), "customer_message"),
        SlaEvent(_at("2026-03-10T11:30:00+01:00"), "agent_reply"),
        SlaEvent(_at("2026-03-10T12:00:00+01:00"), "customer_message"),
        SlaEvent(_at("2026-03-10T14:00:00+01:00"), "agent_reply"),
    ]
    result = replay(policy, calendars, events, _at("2026-03-10T15:00:00+01:00"))
    breaches = [f for f in result.fired if f.target == "next_response" and f.what == "breached"]
    assert [f.started for f in breaches] == [
        _at("2026-03-10T10:00:00+01:00"),
        _at("2026-03-10T12:00:00+01:00"),
    ]
    assert breaches[0].key != breaches[1].key


def test_a_priority_without_a_target_has_no_clocks() -> None:
    policy = SlaPolicy.model_validate(
        {"targets": {"urgent": {"first_response": "1h", "next_response": "1h", "resolution": "4h"}}}
    )
    events = [SlaEvent(_at("2026-03-10T09:00:00+00:00"), "created", priority="low")]
    result = replay(policy, {"always": ALWAYS}, events, _at("2026-03-11T09:00:00+00:00"))
    assert result.fired == []
    assert all(state.state == "none" for state in result.state.values())
    # Raised to urgent an hour and a half later: the clocks start then, counted from creation,
    # so the first response (1 h) is already late and breaches at once.
    raised = [*events, SlaEvent(_at("2026-03-10T10:30:00+00:00"), "priority", priority="urgent")]
    result = replay(policy, {"always": ALWAYS}, raised, _at("2026-03-10T10:30:00+00:00"))
    firsts = [(f.what, f.at, f.due) for f in result.fired if f.target == "first_response"]
    assert firsts[:2] == [
        ("started", _at("2026-03-10T10:30:00+00:00"), _at("2026-03-10T10:00:00+00:00")),
        ("breached", _at("2026-03-10T10:30:00+00:00"), _at("2026-03-10T10:00:00+00:00")),
    ]
    assert result.state["resolution"] == ClockState("running", _at("2026-03-10T13:00:00+00:00"))


@pytest.mark.parametrize(
    ("text", "days", "time"),
    [
        ("30m", 0, timedelta(minutes=30)),
        ("4h", 0, timedelta(hours=4)),
        ("2d", 2, timedelta(0)),
        ("1h30m", 0, timedelta(hours=1, minutes=30)),
        ("1d4h", 1, timedelta(hours=4)),
    ],
)
def test_durations(text: str, days: int, time: timedelta) -> None:
    assert parse_duration(text) == Duration(days, time)
    assert str(parse_duration(text)) == text


@pytest.mark.parametrize("text", ["", "4", "1.5h", "h", "4 hours", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_business_day_is_one_open_day_of_the_calendar() -> None:
    _, calendars = _policy()
    office = calendars["office"]
    two_days = parse_duration("2d")
    # Tuesday 11:00 → Thursday 11:00: two open days, 16 h of open time.
    assert two_days.budget(office, _at("2026-03-10T11:00:00+01:00")) == timedelta(hours=16)
    assert two_days.budget(ALWAYS, _at("2026-03-10T11:00:00+01:00")) == timedelta(hours=48)


def test_a_team_policy_and_calendar_override_the_desks() -> None:
    desk, _ = _policy()
    team = desk.model_copy(update={"warn_at": 0.5})
    assert policy_for(None, desk) is desk
    assert policy_for(team, desk) is team
    assert policy_for(None, None) is None
    moved = policy_for(None, desk, team_calendar="always")
    assert moved is not None and moved.calendar == "always"
    assert moved.targets["low"].calendar == "always"  # a target's own calendar is kept


def test_unknown_calendar_names_the_path() -> None:
    data = {
        "version": 1,
        "calendars": {"office": {"timezone": "Europe/Berlin", "hours": {"mon": "09:00-17:00"}}},
        "sla": {
            "calendar": "office",
            "targets": {
                "low": {
                    "first_response": "8h",
                    "next_response": "8h",
                    "resolution": "2d",
                    "calendar": "offic",
                }
            },
        },
    }
    with pytest.raises(RulesError) as err:
        parse_rules(data)
    assert "sla.targets.low.calendar: unknown calendar 'offic' (calendars: office, always)" in str(
        err.value
    )


@pytest.mark.parametrize(
    ("sla", "path"),
    [
        ({"warn_at": 1.5}, "sla.warn_at"),
        ({"targets": {"asap": {}}}, "sla.targets.asap"),
        (
            {
                "targets": {
                    "low": {"first_response": "soon", "next_response": "1h", "resolution": "1h"}
                }
            },
            "sla.targets.low.first_response: Value error, 'soon' is not a duration",
        ),
        ({"escalation": [{"after": "1h", "notify": ["boss"]}]}, "sla.escalation.0.notify.0"),
    ],
)
def test_bad_policies_name_the_field(sla: dict[str, object], path: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules({"version": 1, "sla": sla})
    assert path in str(err.value)


def test_rules_without_sla_keep_working_and_have_always() -> None:
    rules = parse_rules({"version": 1})
    assert rules.sla is None
    assert rules.calendars == {"always": ALWAYS}


# -- the command ------------------------------------------------------------------------------


def _run(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    timeline = tmp_path / "t.jsonl"
    timeline.write_text(text)
    code = main(["sla", "replay", str(timeline), "--rules", str(HERE / "rules.yaml"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


CREATED = '{"at": "2026-03-10T10:00:00+01:00", "type": "created", "priority": "normal"}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CREATED + "{not json\n", "line 2: not JSON"),
        (CREATED + '{"at": "2026-03-10T11:00:00", "type": "note"}\n', "line 2: at "),
        (CREATED + '{"at": "2026-03-10T11:00:00Z", "type": "reply"}\n', "line 2: type 'reply'"),
        (
            CREATED + '\n{"at": "2026-03-10T11:00:00Z", "type": "status", "status": "closed"}\n',
            "line 3: status 'closed' is not one of open, pending, resolved",
        ),
        (
            CREATED + '{"at": "2026-03-10T11:00:00Z", "type": "priority", "priority": "asap"}\n',
            "line 2: priority needs a priority",
        ),
        (
            CREATED + '{"at": "2026-03-10T08:00:00Z", "type": "note"}\n',
            "line 2: 2026-03-10T08:00:00Z is earlier than the line before (2026-03-10T09:00:00Z)",
        ),
        ('{"at": "2026-03-10T08:00:00Z", "type": "note"}\n', "line 1: the first event must be"),
        (CREATED + CREATED, "line 2: a ticket is created only once"),
        (
            CREATED + '{"at": "2026-03-10T11:00:00Z", "type": "end"}\n'
            '{"at": "2026-03-10T12:00:00Z", "type": "note"}\n',
            "line 3: comes after the end line",
        ),
        (CREATED + '{"at": "2026-03-10T11:00:00Z", "type": "note", "by": "U1"}\n', "unknown key"),
        ("", "the timeline is empty"),
    ],
)
def test_bad_timeline_lines_exit_2_with_the_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    code, out, err = _run(tmp_path, text, capsys)
    assert code == 2
    assert out == ""
    assert message in err


def test_rules_without_sla_are_refused_by_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\n")
    timeline = tmp_path / "t.jsonl"
    timeline.write_text(CREATED)
    assert main(["sla", "replay", str(timeline), "--rules", str(rules)]) == 2
    assert "no sla: section" in capsys.readouterr().err


def test_replay_for_a_team(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(tmp_path, CREATED, capsys, "--team", "support")
    assert code == 0 and '"what": "started"' in out
    code, _, err = _run(tmp_path, CREATED, capsys, "--team", "sales")
    assert code == 2 and "unknown team 'sales' (teams: support)" in err


def test_due_prints_the_due_times_of_a_new_ticket(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--priority", "high", "--at", "2026-03-13T16:30:00+01:00"]
    assert main(["sla", "due", *args, "--rules", str(HERE / "rules.yaml")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = lines[0]
    # Friday 16:30 in Berlin, 2 h: half an hour on Friday, 1.5 h on Monday.
    assert first == {
        "target": "first_response",
        "calendar": "office",
        "counting_from": "2026-03-13T15:30:00Z",
        "warning": "2026-03-16T09:00:00Z",
        "due": "2026-03-16T09:30:00Z",
        "escalations": ["2026-03-16T09:30:00Z", "2026-03-16T10:30:00Z"],
    }
    assert [line["target"] for line in lines] == ["first_response", "next_response", "resolution"]
    assert lines[2]["due"] == "2026-03-16T15:30:00Z"


def test_due_refuses_a_time_without_offset(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--priority",
        "high",
        "--at",
        "2026-03-13T16:30:00",
        "--rules",
        str(HERE / "rules.yaml"),
    ]
    assert main(["sla", "due", *args]) == 2
    assert "has no offset" in capsys.readouterr().err


def test_the_shipped_rules_have_a_visible_sla(capsys: pytest.CaptureFixture[str]) -> None:
    # The sandbox runs with rules.yaml: an urgent ticket warns within minutes.
    rules = load_rules(ROOT / "rules.yaml")
    assert rules.sla is not None
    events = [SlaEvent(datetime(2026, 3, 10, 3, 0, tzinfo=UTC), "created", priority="urgent")]
    result = replay(rules.sla, rules.calendars, events, datetime(2026, 3, 10, 3, 20, tzinfo=UTC))
    whats = [(f.target, f.what) for f in result.fired]
    assert ("first_response", "warning") in whats and ("first_response", "breached") in whats
