"""``deskbot automations replay``: the engine on a ticket's timeline, printed as a user reads it:
event rules firing, time rules scheduled, firing at their due time, cancelled when their anchor
ends or restarts, skipped when a condition no longer holds; chains stopped and rules suspended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main as deskbot
from tests.test_automations import DESK, ISSUE_EXAMPLE


def write(tmp_path: Path, rules: str, timeline: list[dict[str, Any]]) -> tuple[Path, Path]:
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    lines = "\n".join(json.dumps(line) for line in timeline) + "\n"
    (tmp_path / "ticket.jsonl").write_text(lines, encoding="utf-8")
    return tmp_path / "ticket.jsonl", tmp_path / "rules.yaml"


def replay(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    timeline: list[dict[str, Any]],
    rules: str = DESK + ISSUE_EXAMPLE,
) -> list[dict[str, Any]]:
    ticket, rules_file = write(tmp_path, rules, timeline)
    code = deskbot(["automations", "replay", str(ticket), "--rules", str(rules_file)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [json.loads(line) for line in captured.out.splitlines()]


def story(lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(x["at"], x.get("rule", ""), x["what"]) for x in lines if "what" in x]


def test_a_reply_sets_pending_then_one_reminder_then_the_close(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Friday afternoon in Berlin: 24 office hours later is Wednesday, across the weekend.
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-13T16:00:00+01:00", "type": "created", "channel": "whatsapp"},
            {"at": "2026-03-13T16:10:00+01:00", "type": "agent_reply"},
            {"at": "2026-04-01T12:00:00+02:00", "type": "end"},
        ],
    )
    assert story(out) == [
        ("2026-03-13T15:10:00Z", "wait-for-customer", "fired"),
        ("2026-03-13T15:10:00Z", "pending-reminder", "scheduled"),
        ("2026-03-13T15:10:00Z", "pending-autoclose", "scheduled"),
        ("2026-03-18T15:10:00Z", "pending-reminder", "fired"),
        ("2026-03-26T15:10:00Z", "pending-autoclose", "fired"),
    ]
    reminder, close = out[3], out[4]
    assert reminder["do"] == [{"reply": {"macro": "Still there?"}}, {"add_tag": "reminded"}]
    assert reminder["why"] == "24h after pending on calendar office"
    assert reminder["anchor_start"] == "2026-03-13T15:10:00Z"
    assert close["do"] == [{"reply": {"macro": "Closing for now"}}, {"set_status": "resolved"}]
    assert out[-1] == {
        "type": "state",
        "status": "resolved",
        "priority": "normal",
        "team": "support",
        "assignee": None,
        "tags": ["reminded"],
        "scheduled": [],
    }


def test_a_customer_who_answers_cancels_both_and_a_new_reply_starts_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00+01:00", "type": "created", "channel": "telegram"},
            {"at": "2026-03-10T10:05:00+01:00", "type": "agent_reply"},
            {"at": "2026-03-11T10:00:00+01:00", "type": "customer_message", "text": "still no"},
            {"at": "2026-03-11T11:00:00+01:00", "type": "agent_reply"},
            {"at": "2026-03-13T12:00:00+01:00", "type": "end"},
        ],
    )
    cancelled = [x for x in out if x.get("what") == "cancelled"]
    assert cancelled == [
        {
            "at": "2026-03-11T09:00:00Z",
            "rule": "pending-reminder",
            "what": "cancelled",
            "why": "anchor pending ended",
            "due": "2026-03-13T09:05:00Z",
        },
        {
            "at": "2026-03-11T09:00:00Z",
            "rule": "pending-autoclose",
            "what": "cancelled",
            "why": "anchor pending ended",
            "due": "2026-03-23T09:05:00Z",
        },
    ]
    fired = [(x["rule"], x["at"]) for x in out if x.get("what") == "fired"]
    # No reminder on the 13th at 09:05 UTC (the first start); the second cycle's is due 10:00.
    assert fired == [
        ("wait-for-customer", "2026-03-10T09:05:00Z"),
        ("wait-for-customer", "2026-03-11T10:00:00Z"),
    ]
    assert out[-1]["scheduled"] == [
        {"rule": "pending-reminder", "due": "2026-03-16T10:00:00Z"},
        {"rule": "pending-autoclose", "due": "2026-03-24T10:00:00Z"},
    ]


def test_an_answer_at_the_due_moment_comes_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00+01:00", "type": "created"},
            {"at": "2026-03-10T10:00:00+01:00", "type": "agent_reply"},
            {"at": "2026-03-13T10:00:00+01:00", "type": "customer_message"},
        ],
    )
    assert "pending-reminder" not in [x.get("rule") for x in out if x.get("what") == "fired"]
    assert ("2026-03-13T09:00:00Z", "pending-reminder", "cancelled") in story(out)


RESTART = (
    DESK
    + """\
automations:
  - id: nudge
    after: {last_agent_reply: 1h}
    unless: {status: [resolved, closed]}
    do: [{note: "No answer for an hour"}]
"""
)


def test_an_anchor_restarted_moves_the_due_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00Z", "type": "created"},
            {"at": "2026-03-10T10:10:00Z", "type": "agent_reply"},
            {"at": "2026-03-10T10:40:00Z", "type": "agent_reply"},
            {"at": "2026-03-10T12:00:00Z", "type": "end"},
        ],
        RESTART,
    )
    assert story(out) == [
        ("2026-03-10T10:10:00Z", "nudge", "scheduled"),
        ("2026-03-10T10:40:00Z", "nudge", "cancelled"),
        ("2026-03-10T10:40:00Z", "nudge", "scheduled"),
        ("2026-03-10T11:40:00Z", "nudge", "fired"),
    ]
    assert out[1]["why"] == "anchor last_agent_reply restarted"
    assert out[3]["anchor_start"] == "2026-03-10T10:40:00Z"


def test_a_time_rule_whose_condition_no_longer_holds_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00+01:00", "type": "created"},
            {"at": "2026-03-10T10:05:00+01:00", "type": "agent_reply"},
            {"at": "2026-03-11T10:00:00+01:00", "type": "tag", "add": "no-reminders"},
            {"at": "2026-03-13T12:00:00+01:00", "type": "end"},
        ],
    )
    assert {
        "at": "2026-03-13T09:05:00Z",
        "rule": "pending-reminder",
        "what": "skipped",
        "why": "unless: tags matches",
    } in out


LOOP = (
    DESK
    + """\
automations:
  - {id: to-open, on: status_changed, when: {status: pending}, do: [{set_status: open}]}
  - {id: to-pending, on: status_changed, when: {status: open}, do: [{set_status: pending}]}
automation_limits: {chain_depth: 3}
"""
)


def test_a_loop_between_rules_stops_at_the_chain_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00Z", "type": "created"},
            {"at": "2026-03-10T10:01:00Z", "type": "status", "status": "pending"},
        ],
        LOOP,
    )
    assert [(x.get("rule"), x["what"], x.get("depth", 0)) for x in out[:-1]] == [
        ("to-open", "fired", 0),
        ("to-pending", "fired", 1),
        ("to-open", "fired", 2),
        ("to-pending", "fired", 3),
        (None, "chain_stopped", 0),
    ]
    assert out[4]["why"] == (
        "status_changed at chain depth 4 is past chain_depth 3: not run for to-open"
    )
    assert out[-1]["status"] == "pending"


PER_DAY = (
    DESK
    + """\
automations:
  - {id: echo, on: customer_message, do: [{note: "The customer wrote again"}]}
automation_limits: {per_ticket_per_day: 2}
"""
)


def test_a_rule_that_keeps_firing_is_suspended_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timeline = [{"at": "2026-03-10T10:00:00Z", "type": "created"}]
    for hour in (11, 12, 13, 14):
        timeline.append({"at": f"2026-03-10T{hour}:00:00Z", "type": "customer_message"})
    timeline.append({"at": "2026-03-12T10:00:00Z", "type": "customer_message"})
    out = replay(tmp_path, capsys, timeline, PER_DAY)
    assert story(out) == [
        ("2026-03-10T11:00:00Z", "echo", "fired"),
        ("2026-03-10T12:00:00Z", "echo", "fired"),
        ("2026-03-10T13:00:00Z", "echo", "suspended"),
    ]
    assert out[2]["why"] == "fired 2 times on this ticket within a day"


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        (['{"at": "2026-03-10T10:00:00Z", "type": "agent_reply"}'], "line 1: the first event"),
        (
            ['{"at": "2026-03-10T10:00:00Z", "type": "created", "mood": "x"}'],
            "line 1: unknown key 'mood' on created",
        ),
        (
            [
                '{"at": "2026-03-10T10:00:00Z", "type": "created"}',
                '{"at": "2026-03-10T10:00:00Z", "type": "status", "status": "waiting"}',
            ],
            "line 2: status 'waiting' is not one of open, pending, resolved, closed",
        ),
        (
            [
                '{"at": "2026-03-10T10:00:00Z", "type": "created"}',
                '{"at": "2026-03-10T09:00:00Z", "type": "agent_reply"}',
            ],
            "line 2: 2026-03-10T09:00:00Z is earlier than the line before",
        ),
        (['{"at": "2026-03-10T10:00:00", "type": "created"}'], "line 1: at '2026-03-10T10:00:00'"),
    ],
)
def test_bad_timelines_exit_2_with_the_line_number(
    lines: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket, rules_file = write(tmp_path, DESK + ISSUE_EXAMPLE, [])
    ticket.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert deskbot(["automations", "replay", str(ticket), "--rules", str(rules_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deskbot automations: ") and said in err, err


def test_rules_without_automations_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket, rules_file = write(tmp_path, DESK, [{"at": "2026-03-10T10:00:00Z", "type": "created"}])
    assert deskbot(["automations", "replay", str(ticket), "--rules", str(rules_file)]) == 2
    assert "has no automations: section" in capsys.readouterr().err


def test_an_sla_timeline_replays_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sla = Path(__file__).parent / "sla_timelines" / "11_pending_pauses_resolution.jsonl"
    (tmp_path / "rules.yaml").write_text(DESK + ISSUE_EXAMPLE, encoding="utf-8")
    assert (
        deskbot(["automations", "replay", str(sla), "--rules", str(tmp_path / "rules.yaml")]) == 0
    )
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[-1]["status"] == "resolved"


def test_the_documented_replay_is_what_the_command_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/automations.md shows this timeline and its output: both are checked here.
    here = Path(__file__).parent / "automations"
    (tmp_path / "rules.yaml").write_text(DESK + ISSUE_EXAMPLE, encoding="utf-8")
    timeline = here / "reminder.jsonl"
    assert (
        deskbot(["automations", "replay", str(timeline), "--rules", str(tmp_path / "rules.yaml")])
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed == (here / "reminder.out").read_text(encoding="utf-8").splitlines()
    docs = (Path(__file__).parent.parent / "docs" / "automations.md").read_text(encoding="utf-8")
    for line in [*timeline.read_text(encoding="utf-8").splitlines(), *printed]:
        assert line in docs, line


KEYWORDS = (
    DESK
    + """\
automations:
  - id: refund-words
    on: [customer_message, agent_reply]
    when: {keywords: refund}
    do: [{transfer: billing}]
"""
)


def test_keywords_read_only_the_message_that_caused_the_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = replay(
        tmp_path,
        capsys,
        [
            {"at": "2026-03-10T10:00:00Z", "type": "created", "text": "hello"},
            {"at": "2026-03-10T10:01:00Z", "type": "customer_message", "text": "My Refund?"},
            {"at": "2026-03-10T10:02:00Z", "type": "agent_reply"},
        ],
        KEYWORDS,
    )
    assert story(out) == [("2026-03-10T10:01:00Z", "refund-words", "fired")]
    assert out[-1]["team"] == "billing"
