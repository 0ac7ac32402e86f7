"""``deskbot sla``: check an SLA policy before deploying it, with the desk's own engine.

``replay TIMELINE.jsonl`` prints what would fire for a ticket's timeline; ``due`` prints the due
times of a ticket created at a given moment. Both read the ``sla:`` and ``calendars:`` of
rules.yaml, so what they print is what the desk will do with that file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from bot.domain.calendars import Calendar, add_business, next_open
from bot.domain.rules import Rules, RulesError, load_rules
from bot.domain.sla import (
    EVENT_TYPES,
    PRIORITIES,
    STATUSES,
    TARGETS,
    Fired,
    Replay,
    SlaEvent,
    SlaPolicy,
    policy_for,
    replay,
)


class TimelineError(ValueError):
    """A line of a timeline that cannot be replayed; the message starts with its number."""


def z(at: datetime | None) -> str | None:
    """UTC with ``Z``, to the second (or finer when the input was finer)."""
    if at is None:
        return None
    text = at.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _moment(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(
            f"{what} must be an ISO 8601 time with an offset, like 2026-03-10T10:00+01:00"
        )
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no offset (add +01:00, Z, …)")
    return at


def _event(data: Any) -> SlaEvent:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    extra = set(data) - {"at", "type", "priority", "status"}
    if extra:
        raise ValueError(f"unknown key {sorted(extra)[0]!r} (keys: at, type, priority, status)")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError(f"type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
    at = _moment(data.get("at"), "at")
    priority, status = data.get("priority"), data.get("status")
    if kind in ("created", "priority"):
        if priority not in PRIORITIES:
            raise ValueError(f"{kind} needs a priority: one of {', '.join(PRIORITIES)}")
    elif priority is not None:
        raise ValueError(f"priority belongs only on created or priority, not on {kind}")
    if kind == "status":
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    elif status is not None:
        raise ValueError(f"status belongs only on a status line, not on {kind}")
    return SlaEvent(at=at, type=kind, priority=priority, status=status)


class _TimelineLine(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def at(self) -> datetime: ...


L = TypeVar("L", bound=_TimelineLine)


def read_timeline(lines: Iterable[str], parse: Callable[[Any], L]) -> tuple[list[L], datetime]:
    """A JSON Lines timeline of one ticket, each line read by ``parse``, checked the same way
    for the SLA's and the automations' replay: it starts with ``created``, once, goes forward in
    time, and may end with an ``end`` line; returns the lines and the moment to replay up to."""
    parsed: list[L] = []
    end: datetime | None = None
    number = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TimelineError(f"line {number}: not JSON: {exc.msg}") from None
        try:
            line = parse(data)
        except ValueError as exc:
            raise TimelineError(f"line {number}: {exc}") from None
        if end is not None:
            raise TimelineError(f"line {number}: comes after the end line")
        if not parsed and line.type != "created":
            raise TimelineError(
                f"line {number}: the first event must be 'created', not {line.type!r}"
            )
        if parsed and line.type == "created":
            raise TimelineError(f"line {number}: a ticket is created only once")
        if parsed and line.at < parsed[-1].at:
            raise TimelineError(
                f"line {number}: {z(line.at)} is earlier than the line before ({z(parsed[-1].at)})"
            )
        parsed.append(line)
        if line.type == "end":
            end = line.at
    if not parsed:
        raise TimelineError(f"line {number + 1}: the timeline is empty (start with a created line)")
    return parsed, end or parsed[-1].at


def parse_timeline(lines: Iterable[str]) -> tuple[list[SlaEvent], datetime]:
    """The events and the moment to replay up to (the ``end`` line, else the last event)."""
    return read_timeline(lines, _event)


def fired_json(fired: Fired) -> dict[str, Any]:
    line: dict[str, Any] = {
        "at": z(fired.at),
        "target": fired.target,
        "what": fired.what,
        "due": z(fired.due),
    }
    if fired.level is not None:
        line["level"] = fired.level
    return line


def state_json(result: Replay) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "state"}
    for target in TARGETS:
        clock = result.state[target]
        line[target] = {"state": clock.state, "due": z(clock.due)}
    return line


def replay_lines(
    policy: SlaPolicy, calendars: dict[str, Calendar], lines: Iterable[str]
) -> list[str]:
    """The printed output of ``deskbot sla replay`` for a timeline's lines."""
    events, until = parse_timeline(lines)
    result = replay(policy, calendars, events, until)
    out = [json.dumps(fired_json(fired), ensure_ascii=False) for fired in result.fired]
    out.append(json.dumps(state_json(result), ensure_ascii=False))
    return out


def due_lines(
    policy: SlaPolicy, calendars: dict[str, Calendar], priority: str, at: datetime
) -> list[str]:
    """Due times for a ticket created at ``at``; next response as if a customer wrote then."""
    target = policy.targets.get(priority)  # type: ignore[call-overload]
    if target is None:
        return [json.dumps({"priority": priority, "sla": None})]
    name = target.calendar or policy.calendar
    cal = calendars[name]
    out = []
    for kind in TARGETS:
        budget = target.of(kind).budget(cal, at)
        due = add_business(cal, at, budget)
        line = {
            "target": kind,
            "calendar": name,
            "counting_from": z(next_open(cal, at)),
            "warning": z(add_business(cal, at, budget * policy.warn_at)),
            "due": z(due),
            "escalations": [
                z(add_business(cal, due, step.after.budget(cal, due))) for step in policy.escalation
            ],
        }
        out.append(json.dumps(line))
    return out


def _policy(rules: Rules, team: str | None) -> SlaPolicy:
    if team is None:
        policy = rules.sla
    else:
        if team not in rules.all_teams:
            raise RulesError(f"unknown team {team!r} (teams: {', '.join(rules.all_teams)})")
        chosen = rules.all_teams[team]
        # Teams gain ``sla`` and ``calendar`` with the desk wiring; until then they have neither.
        policy = policy_for(
            getattr(chosen, "sla", None), rules.sla, getattr(chosen, "calendar", None)
        )
    if policy is None:
        raise RulesError("rules.yaml has no sla: section, so there are no SLA clocks to replay")
    return policy


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskbot sla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rules_default = os.environ.get("DESK_RULES") or "rules.yaml"
    r = sub.add_parser("replay", help="print what fires for a ticket timeline (JSON Lines)")
    r.add_argument("timeline", help="a JSON Lines file, or - for standard input")
    d = sub.add_parser("due", help="print the due times of a ticket created at a moment")
    d.add_argument("--priority", required=True, choices=PRIORITIES)
    d.add_argument("--at", required=True, help="ISO 8601 with offset, e.g. 2026-03-13T16:30+01:00")
    for p in (r, d):
        p.add_argument("--rules", type=Path, default=Path(rules_default))
        p.add_argument("--team", default=None, help="use this team's SLA and calendar")
    return parser


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        rules = load_rules(args.rules)
        policy = _policy(rules, args.team)
        if args.command == "replay":
            if args.timeline == "-":
                lines = replay_lines(policy, rules.calendars, sys.stdin)
            else:
                with open(args.timeline, encoding="utf-8") as handle:
                    lines = replay_lines(policy, rules.calendars, handle)
        else:
            try:
                at = _moment(args.at, "--at")
            except ValueError as exc:
                raise TimelineError(str(exc)) from None
            lines = due_lines(policy, rules.calendars, args.priority, at)
    except (RulesError, TimelineError, OSError) as exc:
        print(f"deskbot sla: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=out)
    return 0
