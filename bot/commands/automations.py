"""``deskbot automations``: try the automations of a rules.yaml before deploying them, and ask
a live desk why they did or did not fire on a ticket.

``replay TIMELINE.jsonl --rules rules.yaml`` runs the desk's pure engine
(:mod:`bot.domain.automations`) over one ticket's timeline, in the shape of ``deskbot sla
replay``'s (one JSON object a line, ``at`` and ``type``), and prints one JSON line for each rule
that fires, is scheduled, is cancelled (its anchor ended or restarted), is skipped at its due time
(a condition no longer holds), is suspended (the per-day limit) or is stopped by the chain depth;
then the ticket's state and what is still scheduled.

``explain TICKET`` reads the desk's database (``DESK_DATABASE_URL``) and prints, for that ticket,
which rules match it now and which do not and why, what fired, and what is scheduled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, get_args

from sqlalchemy.exc import SQLAlchemyError

from bot.automations.views import explain, suspended
from bot.commands.sla import TimelineError, _moment, read_timeline, z
from bot.domain.automations import (
    Anchors,
    Automation,
    AutomationLimits,
    Event,
    Facts,
    Firing,
    Past,
    Refused,
    Sentiment,
    Timer,
    advance_anchors,
    apply_actions,
    fire_timer,
    on_event,
    status_events,
    timers,
)
from bot.domain.calendars import Calendar
from bot.domain.rules import Rules, RulesError, load_rules
from bot.domain.sla import EVENT_TYPES, PRIORITIES
from storage.db import create_engine, session_factory

# The SLA replay's line types (the same timeline shape), and three more that automations read.
LINE_TYPES = (*(t for t in EVENT_TYPES if t != "end"), "assigned", "tag", "rated", "end")
STATUSES = ("open", "pending", "resolved", "closed")
SENTIMENTS: tuple[str, ...] = get_args(Sentiment)
# The keys each line type may carry besides at and type.
KEYS: dict[str, tuple[str, ...]] = {
    "created": (
        "channel",
        "priority",
        "vip",
        "sentiment",
        "language",
        "intent",
        "text",
        "team",
        "tags",
        "assignee",
    ),
    "customer_message": ("text", "sentiment", "language", "intent"),
    "agent_reply": (),
    "note": (),
    "auto_reply": (),
    "status": ("status",),
    "priority": ("priority",),
    "assigned": ("agent",),
    "tag": ("add", "remove"),
    "rated": ("rating",),
    "end": (),
}


@dataclass(frozen=True)
class Line:
    at: datetime
    type: str
    data: dict[str, Any] = field(default_factory=dict)


def _line(data: Any) -> Line:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    kind = data.get("type")
    if kind not in LINE_TYPES:
        raise ValueError(f"type {kind!r} is not one of {', '.join(LINE_TYPES)}")
    allowed = KEYS[kind]
    extra = sorted(set(data) - {"at", "type", *allowed})
    if extra:
        keys = ", ".join(("at", "type", *allowed))
        raise ValueError(f"unknown key {extra[0]!r} on {kind} (keys: {keys})")
    at = _moment(data.get("at"), "at")
    rest = {k: v for k, v in data.items() if k not in ("at", "type")}
    if kind == "status" and rest.get("status") not in STATUSES:
        raise ValueError(f"status {rest.get('status')!r} is not one of {', '.join(STATUSES)}")
    if (kind == "priority" or "priority" in rest) and rest.get("priority") not in PRIORITIES:
        raise ValueError(f"priority {rest.get('priority')!r} is not one of {', '.join(PRIORITIES)}")
    if "sentiment" in rest and rest["sentiment"] not in SENTIMENTS:
        raise ValueError(f"sentiment {rest['sentiment']!r} is not one of {', '.join(SENTIMENTS)}")
    if kind == "rated" and rest.get("rating") not in (1, 2, 3, 4, 5):
        raise ValueError(f"rating {rest.get('rating')!r} is not a whole number from 1 to 5")
    if kind == "tag" and len(rest) != 1:
        raise ValueError('a tag line has one of "add" or "remove"')
    if kind == "assigned" and "agent" not in rest:
        raise ValueError('an assigned line names the "agent" (a Slack user id, or null)')
    return Line(at, kind, rest)


def parse_timeline(lines: Iterable[str]) -> tuple[list[Line], datetime]:
    """The lines and the moment to replay up to (the ``end`` line, else the last line)."""
    return read_timeline(lines, _line)


class _Replay:
    """One ticket, its anchors and what is scheduled, moved by lines and due timers."""

    def __init__(self, rules: Rules) -> None:
        self.automations: Sequence[Automation] = rules.automations
        self.limits: AutomationLimits = rules.automation_limits
        self.calendars: dict[str, Calendar] = rules.calendars
        self.leads = {name: team.lead for name, team in rules.all_teams.items()}
        self.default_team = rules.default_team
        self.facts = Facts(channel="telegram")
        self.anchors = Anchors()
        self.history: list[Past] = []
        self.done: set[str] = set()  # timers that came due: each (rule, anchor start) once
        self.scheduled: dict[str, Timer] = {}
        self.out: list[dict[str, Any]] = []

    # -- events ------------------------------------------------------------------------------
    def line(self, line: Line) -> None:
        before, data, at = self.facts, line.data, line.at
        # keywords look at the message that caused the event: only a customer's has text
        self.facts = replace(before, text="")
        events: list[Event] = []
        match line.type:
            case "created":
                self.facts = Facts(
                    channel=data.get("channel", "telegram"),
                    status="new",
                    team=data.get("team", self.default_team),
                    tags=frozenset(data.get("tags", ())),
                    priority=data.get("priority", "normal"),
                    sentiment=data.get("sentiment"),
                    assignee=data.get("assignee"),
                    vip=bool(data.get("vip", False)),
                    language=data.get("language"),
                    intent=data.get("intent"),
                    text=data.get("text", ""),
                )
                self._event("ticket_created", None, self.facts, at, 0)
                self._reschedule(at)
                return
            case "customer_message":
                # As the desk does: a customer's message takes a pending or resolved ticket
                # back to open (from resolved, a reopen).
                status = "open" if before.status in ("pending", "resolved") else before.status
                self.facts = replace(
                    before,
                    status=status,
                    text=data.get("text", ""),
                    sentiment=data.get("sentiment", before.sentiment),
                    language=data.get("language", before.language),
                    intent=data.get("intent", before.intent),
                )
                events = ["customer_message", *status_events(before.status, status)]
            case "agent_reply":
                events = ["agent_reply"]
            case "status":
                self.facts = replace(before, status=data["status"])
                events = status_events(before.status, data["status"])
            case "priority":
                self.facts = replace(before, priority=data["priority"])
                events = ["priority_changed"] if data["priority"] != before.priority else []
            case "assigned":
                self.facts = replace(before, assignee=data["agent"])
                events = ["assigned"] if data["agent"] != before.assignee else []
            case "tag":
                if "add" in data:
                    self.facts = replace(before, tags=before.tags | {data["add"]})
                else:
                    self.facts = replace(before, tags=before.tags - {data["remove"]})
            case "rated":
                self.facts = replace(before, rating=data["rating"])
                events = ["rated"]
            case "note" | "auto_reply" | "end":
                pass
        for event in events:
            self._event(event, before, self.facts, at, 0)
        self._reschedule(at)

    def _event(
        self, event: Event, before: Facts | None, after: Facts, at: datetime, depth: int
    ) -> None:
        self.anchors = advance_anchors(self.anchors, event, before, after, at)
        decision = on_event(
            self.automations,
            event,
            after,
            at,
            depth=depth,
            limits=self.limits,
            history=self.history,
        )
        for refused in decision.refused:
            self._refused(refused, event)
        for firing in decision.firings:
            self._fire(firing)

    def _refused(self, refused: Refused, event: str | None = None) -> None:
        if refused.what == "suspended":
            self.history.append(Past(refused.rule, refused.at, suspended=True))
            self.out.append(
                {"at": z(refused.at), "rule": refused.rule, "what": "suspended", "why": refused.why}
            )
        else:
            self.out.append({"at": z(refused.at), "what": "chain_stopped", "why": refused.why})

    def _fire(self, firing: Firing) -> None:
        self.history.append(Past(firing.rule, firing.at))
        line: dict[str, Any] = {"at": z(firing.at), "rule": firing.rule, "what": "fired"}
        line["why"] = firing.why
        if firing.anchor is not None:
            line["anchor"] = firing.anchor
            line["anchor_start"] = z(firing.anchor_start)
        line["do"] = [action.as_dict() for action in firing.actions]
        if firing.depth:
            line["depth"] = firing.depth
        self.out.append(line)
        before = self.facts
        self.facts, caused = apply_actions(before, firing.actions, leads=self.leads)
        for event in caused:
            self._event(event, before, self.facts, firing.at, firing.depth + 1)

    # -- time ----------------------------------------------------------------------------------
    def _reschedule(self, at: datetime) -> None:
        """Say which timers a moment's events scheduled and which they cancelled."""
        now = {
            timer.key: timer
            for timer in timers(self.automations, self.anchors, self.calendars)
            if timer.key not in self.done
        }
        for key, timer in self.scheduled.items():
            if key not in now:
                start = self.anchors.start_of(timer.anchor)
                how = "ended" if start is None else "restarted"
                self.out.append(
                    {
                        "at": z(at),
                        "rule": timer.rule,
                        "what": "cancelled",
                        "why": f"anchor {timer.anchor} {how}",
                        "due": z(timer.due),
                    }
                )
        for key, timer in now.items():
            if key not in self.scheduled:
                self.out.append(
                    {
                        "at": z(at),
                        "rule": timer.rule,
                        "what": "scheduled",
                        "anchor": timer.anchor,
                        "anchor_start": z(timer.start),
                        "due": z(timer.due),
                    }
                )
        self.scheduled = now

    def next_timer(self) -> Timer | None:
        return min(self.scheduled.values(), key=lambda timer: timer.due, default=None)

    def due(self, timer: Timer) -> None:
        self.done.add(timer.key)
        del self.scheduled[timer.key]
        result = fire_timer(
            self.automations,
            timer,
            self.anchors,
            self.facts,
            timer.due,
            limits=self.limits,
            history=self.history,
        )
        if isinstance(result, Firing):
            self._fire(result)
        elif isinstance(result, Refused):
            self._refused(result)
        else:
            self.out.append(
                {"at": z(timer.due), "rule": timer.rule, "what": "skipped", "why": result}
            )
        self._reschedule(timer.due)

    def state(self) -> dict[str, Any]:
        f = self.facts
        return {
            "type": "state",
            "status": f.status,
            "priority": f.priority,
            "team": f.team,
            "assignee": f.assignee,
            "tags": sorted(f.tags),
            "scheduled": [
                {"rule": t.rule, "due": z(t.due)}
                for t in sorted(self.scheduled.values(), key=lambda t: t.due)
            ],
        }


def replay_lines(rules: Rules, lines: Iterable[str]) -> list[str]:
    """The printed output of ``deskbot automations replay`` for a timeline's lines."""
    timeline, until = parse_timeline(lines)
    engine = _Replay(rules)
    index = 0
    while True:
        line = timeline[index] if index < len(timeline) else None
        upcoming = engine.next_timer()
        # A line at the same moment as a due timer goes first: a customer who answers at the
        # due moment cancels it.
        due = upcoming is not None and upcoming.due <= until
        if upcoming is not None and due and (line is None or upcoming.due < line.at):
            engine.due(upcoming)
            continue
        if line is None:
            break
        engine.line(line)
        index += 1
    return [json.dumps(x, ensure_ascii=False) for x in [*engine.out, engine.state()]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskbot automations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="print what the automations do on a ticket timeline")
    r.add_argument("timeline", help="a JSON Lines file, or - for standard input")
    r.add_argument("--rules", type=Path, default=Path(os.environ.get("DESK_RULES") or "rules.yaml"))
    e = sub.add_parser("explain", help="on a live desk: why each rule did or did not fire")
    e.add_argument("ticket", type=lambda v: int(v.lstrip("#")), help="the ticket's number")
    return parser


async def explain_ticket(database_url: str, rules: Rules, ticket: int) -> list[str]:
    """``deskbot automations explain``: read only; the desk need not be stopped."""
    from bot import wiring

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            desk = wiring.desks(rules)(session, datetime.now(UTC))
            return await explain(desk, ticket)
    finally:
        await engine.dispose()


async def suspended_lines(database_url: str) -> list[str]:
    """For ``deskbot check``: the rules suspended on a ticket (none on a new database)."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            held = await suspended(session)
    except SQLAlchemyError:
        return []  # not migrated yet: nothing can be suspended
    finally:
        await engine.dispose()
    return [
        f"automation {rule} suspended on ticket #{ticket} since {at:%Y-%m-%d %H:%M} UTC: {why}"
        for rule, ticket, at, why in held
    ]


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    if args.command == "explain":
        from dotenv import load_dotenv

        from bot.base.settings import load_settings

        load_dotenv(Path.cwd() / ".env")
        try:
            settings = load_settings()
            rules = load_rules(settings.rules_path)
            lines = asyncio.run(explain_ticket(settings.database_url, rules, args.ticket))
        except (RulesError, SQLAlchemyError, ValueError) as exc:
            print(f"deskbot automations: {exc}", file=sys.stderr)
            return 2
        for line in lines:
            print(line, file=out)
        return 0
    try:
        rules = load_rules(args.rules)
        if not rules.automations:
            raise RulesError(f"{args.rules} has no automations: section, so nothing to replay")
        if args.timeline == "-":
            lines = replay_lines(rules, sys.stdin)
        else:
            with open(args.timeline, encoding="utf-8") as handle:
                lines = replay_lines(rules, handle)
    except (RulesError, TimelineError, OSError) as exc:
        print(f"deskbot automations: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=out)
    return 0
