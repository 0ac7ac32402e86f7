"""Automations: rules that act on a ticket's events and on time (``automations:`` in rules.yaml).

Pure: no database, no clock, no I/O. The desk (from a domain-event handler, inside the step's
transaction) and ``deskbot automations replay`` call the same functions:

- :func:`on_event`: the event rules that fire for one event on a ticket, in file order, honouring
  ``when``, ``unless``, ``stop``, the chain depth and the per-ticket-per-day limit;
- :func:`advance_anchors`, :func:`timers` and :func:`fire_timer`: the time rules, as anchors that
  start, restart and end with the ticket's events, each (rule, anchor start) due at the anchor's
  start plus the rule's duration on its calendar, checked again when it comes due;
- :func:`apply_actions`: the ticket's facts after a firing's actions, and the events those
  actions cause (which the caller runs one level deeper).

Firing once is the caller's job: :attr:`Timer.key` is the exactly-once key of a time rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from bot.domain.calendars import Calendar, add_business
from bot.domain.routing import SLACK_USER, failing_test
from bot.domain.routing import TicketFacts as RoutingFacts
from bot.domain.routing import When as RoutingWhen
from bot.domain.sla import Duration
from nlp.priority import Priority

Event = Literal[
    "ticket_created",
    "customer_message",
    "agent_reply",
    "status_changed",
    "priority_changed",
    "assigned",
    "resolved",
    "reopened",
    "rated",
]
EVENTS: tuple[Event, ...] = get_args(Event)
Anchor = Literal[
    "created", "pending", "last_customer_message", "last_agent_reply", "resolved", "unassigned"
]
ANCHORS: tuple[Anchor, ...] = get_args(Anchor)
Status = Literal["new", "open", "pending", "resolved", "closed"]
SettableStatus = Literal["open", "pending", "resolved"]
Sentiment = Literal["negative", "neutral", "positive"]
Notify = Literal["assignee", "lead", "channel"]
ACTIONS = (
    "set_status",
    "set_priority",
    "add_tag",
    "remove_tag",
    "transfer",
    "assign",
    "reply",
    "note",
    "notify",
)
DONE = ("resolved", "closed")
DAY = timedelta(days=1)

# -- durations --------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: object) -> Duration:
    """``10s``, ``30m``, ``4h``, ``2d`` or a sum like ``1h30m``: the SLA's durations plus
    seconds (a business day is one open day of the calendar, as for the SLA)."""
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a duration is a string like 10s, 30m, 4h or 2d")
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration like 10s, 30m, 4h or 2d")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    duration = Duration(days, timedelta(hours=hours, minutes=minutes, seconds=seconds))
    if duration == Duration():
        raise ValueError(f"{value!r} is no time at all; a time rule waits at least 1s")
    return duration


def duration_text(duration: Duration) -> str:
    seconds = int(duration.time.total_seconds())
    parts = [(duration.days, "d"), (seconds // 3600, "h"), (seconds % 3600 // 60, "m")]
    parts.append((seconds % 60, "s"))
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


DurationField = Annotated[
    Duration, PlainValidator(parse_duration), PlainSerializer(duration_text, return_type=str)
]

# -- the rules.yaml interface -------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listed(value: object) -> object:
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


class Conditions(_Strict):
    """The tests of ``when:`` and ``unless:``; every one listed must hold. The routing keys
    (channel, language, intent, keywords, vip, priority) mean what they mean in ``routing:``;
    ``keywords`` look at the text of the message that caused the event."""

    channel: tuple[Literal["telegram", "whatsapp", "email"], ...] | None = None
    language: tuple[str, ...] | None = None
    intent: tuple[str, ...] | None = None
    keywords: tuple[str, ...] | None = None
    vip: bool | None = None
    priority: tuple[Priority, ...] | None = None
    status: tuple[Status, ...] | None = None
    team: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None  # any of them is on the ticket
    sentiment: tuple[Sentiment, ...] | None = None  # of the customer's latest message
    rating: tuple[Annotated[int, Field(ge=1, le=5)], ...] | None = None
    assigned: bool | None = None

    @field_validator(
        "channel",
        "language",
        "intent",
        "keywords",
        "priority",
        "status",
        "team",
        "tags",
        "sentiment",
        "rating",
        mode="before",
    )
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _listed(value)


class ReplyWith(_Strict):
    macro: str  # a macro's name from macros:, sent in the customer's language


class Action(_Strict):
    """One action: a mapping with exactly one of the keys below."""

    set_status: SettableStatus | None = None
    set_priority: Priority | None = None
    add_tag: str | None = Field(default=None, min_length=1, max_length=75)
    remove_tag: str | None = Field(default=None, min_length=1, max_length=75)
    transfer: str | None = None  # a team from teams:
    assign: str | None = None  # lead, none, or an agent's Slack user id
    reply: ReplyWith | None = None
    note: str | None = Field(default=None, min_length=1)
    notify: tuple[Notify, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_known_key(cls, data: Any) -> Any:
        if isinstance(data, str) and data in ACTIONS:
            raise ValueError(f"{data!r} needs a value, like {{{data}: …}}")
        if not isinstance(data, dict):
            raise ValueError(f"an action is a mapping with one key: one of {', '.join(ACTIONS)}")
        unknown = [str(key) for key in data if key not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown action {unknown[0]!r} (actions: {', '.join(ACTIONS)})")
        if len(data) != 1:
            raise ValueError(f"one action per list item, not {len(data)}: {', '.join(data)}")
        if "notify" in data:
            return {"notify": _listed(data["notify"])}
        return data

    @field_validator("assign")
    @classmethod
    def _assignee(cls, value: str | None) -> str | None:
        if value is not None and value not in ("lead", "none") and not SLACK_USER.match(value):
            raise ValueError(f"{value!r}: assign to lead, none, or a Slack user id (U0123ABCD)")
        return value

    @property
    def name(self) -> str:
        return next(key for key in ACTIONS if getattr(self, key) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, self.name)

    def as_dict(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return dumped


class Automation(_Strict):
    """One rule. An event rule has ``on:``; a time rule has ``after: {ANCHOR: DURATION}``."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    on: tuple[Event, ...] | None = Field(default=None, min_length=1)
    when: Conditions = Field(default_factory=Conditions)
    unless: Conditions | None = None
    after: dict[Anchor, DurationField] | None = None
    calendar: str | None = None  # a calendar from calendars:, for a time rule; default always
    do: tuple[Action, ...] = Field(min_length=1)
    stop: bool = False  # an event rule that fires ends the list for that event

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML's safe_load) reads a bare ``on:`` key as the boolean true;
        # load_rules keeps it a string, and a mapping read elsewhere is mended here.
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _events(cls, value: object) -> object:
        return _listed(value)

    @property
    def is_time_rule(self) -> bool:
        return self.after is not None

    @property
    def anchor(self) -> Anchor:
        assert self.after, f"{self.id} is not a time rule"
        return next(iter(self.after))

    @property
    def duration(self) -> Duration:
        assert self.after, f"{self.id} is not a time rule"
        return next(iter(self.after.values()))


class AutomationLimits(_Strict):
    chain_depth: int = Field(default=3, ge=0, le=10)
    per_ticket_per_day: int = Field(default=20, ge=1)


def check_automations(
    rules: Sequence[Automation],
    *,
    macros: Sequence[str],
    teams: Sequence[str],
    calendars: Sequence[str],
    agents: Sequence[str],
) -> list[str]:
    """What a field-by-field check cannot see, as ``automations.N.FIELD: problem`` lines."""
    problems: list[str] = []
    seen: set[str] = set()
    for n, rule in enumerate(rules):
        at = f"automations.{n}"
        if rule.id in seen:
            problems.append(f"{at}.id: {rule.id!r} is the id of another rule")
        seen.add(rule.id)
        if rule.on is not None and rule.after is not None:
            problems.append(
                f"{at}: a rule has on: (events) or after: (time), not both; split it in two"
            )
        elif rule.on is None and rule.after is None:
            problems.append(f"{at}.on: an event rule needs on: (events: {', '.join(EVENTS)})")
        if rule.after is not None and len(rule.after) != 1:
            problems.append(
                f"{at}.after: a time rule has exactly one anchor and its duration, like "
                f"{{pending: 24h}}, not {len(rule.after)} (anchors: {', '.join(ANCHORS)})"
            )
        if rule.after is None and rule.calendar is not None:
            problems.append(f"{at}.calendar: only a time rule (after:) counts on a calendar")
        if rule.after is not None and rule.stop:
            problems.append(f"{at}.stop: only event rules (on:) run in a list that stop ends")
        if rule.calendar is not None and rule.calendar not in calendars:
            problems.append(
                f"{at}.calendar: unknown calendar {rule.calendar!r} "
                f"(calendars: {', '.join(calendars)})"
            )
        for m, action in enumerate(rule.do):
            path = f"{at}.do.{m}.{action.name}"
            if action.reply is not None and action.reply.macro not in macros:
                known = ", ".join(repr(name) for name in macros) or "none in macros:"
                problems.append(f"{path}.macro: unknown macro {action.reply.macro!r} ({known})")
            if action.transfer is not None and action.transfer not in teams:
                problems.append(
                    f"{path}: unknown team {action.transfer!r} (teams: {', '.join(teams)})"
                )
            assignee = action.assign
            if assignee and SLACK_USER.match(assignee) and assignee not in agents:
                problems.append(
                    f"{path}: {assignee} is not an agent of any team "
                    "(list them under some team's agents)"
                )
        for part in ("when", "unless"):
            conditions: Conditions | None = getattr(rule, part)
            for team in (conditions.team or ()) if conditions is not None else ():
                if team not in teams:
                    problems.append(
                        f"{at}.{part}.team: unknown team {team!r} (teams: {', '.join(teams)})"
                    )
    return problems


# -- a ticket's facts and the conditions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What a rule may look at: the ticket as it is after the event."""

    channel: str
    status: str = "new"
    team: str = ""
    tags: frozenset[str] = frozenset()
    priority: str = "normal"
    sentiment: str | None = None
    rating: int | None = None
    assignee: str | None = None
    vip: bool = False
    language: str | None = None
    intent: str | None = None
    text: str = ""  # the message that caused the event, for keywords

    @property
    def assigned(self) -> bool:
        return self.assignee is not None


def failing(conditions: Conditions, facts: Facts) -> str | None:
    """The first test of ``conditions`` that does not hold for ``facts``, or None."""
    routing = RoutingWhen(
        channel=conditions.channel,
        language=conditions.language,
        intent=conditions.intent,
        keywords=conditions.keywords,
        vip=conditions.vip,
        priority=conditions.priority,
    )
    as_routed = RoutingFacts(
        channel=facts.channel,
        text=facts.text,
        language=facts.language,
        intent=facts.intent,
        vip=facts.vip,
        priority=facts.priority,
    )
    failed = failing_test(routing, as_routed)
    if failed is not None:
        return failed
    if conditions.status is not None and facts.status not in conditions.status:
        return "status"
    if conditions.team is not None and facts.team not in conditions.team:
        return "team"
    if conditions.tags is not None and not facts.tags.intersection(conditions.tags):
        return "tags"
    if conditions.sentiment is not None and facts.sentiment not in conditions.sentiment:
        return "sentiment"
    if conditions.rating is not None and facts.rating not in conditions.rating:
        return "rating"
    if conditions.assigned is not None and facts.assigned != conditions.assigned:
        return "assigned"
    return None


def why_not(rule: Automation, facts: Facts) -> str | None:
    """Why ``rule``'s conditions keep it from firing on ``facts`` in words, or None."""
    failed = failing(rule.when, facts)
    if failed is not None:
        return f"when: {failed} does not match"
    if rule.unless is not None and failing(rule.unless, facts) is None:
        listed = ", ".join(k for k, v in rule.unless.model_dump(exclude_none=True).items() if v)
        return f"unless: {listed or 'always'} matches"
    return None


# -- the limits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Past:
    """One earlier firing of a rule on this ticket (or its suspension), from the ticket's story."""

    rule: str
    at: datetime
    suspended: bool = False


def within_chain(depth: int, limits: AutomationLimits) -> bool:
    """An event at ``depth`` (0: not caused by an automation; 1: caused by a firing on a depth-0
    event; …) may still run rules."""
    return depth <= limits.chain_depth


def is_suspended(history: Sequence[Past], rule: str) -> bool:
    return any(past.rule == rule and past.suspended for past in history)


def fired_today(history: Sequence[Past], rule: str, now: datetime) -> int:
    """How often ``rule`` fired on this ticket in the 24 hours up to ``now``."""
    return sum(1 for p in history if p.rule == rule and not p.suspended and now - DAY < p.at <= now)


def over_limit(history: Sequence[Past], rule: str, now: datetime, limits: AutomationLimits) -> bool:
    """Firing once more at ``now`` would pass ``per_ticket_per_day``."""
    return fired_today(history, rule, now) >= limits.per_ticket_per_day


# -- event rules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Firing:
    rule: str
    at: datetime
    actions: tuple[Action, ...]
    why: str  # in words, for the ticket's story
    depth: int = 0  # of the event it answered; its actions' events are one deeper
    anchor: Anchor | None = None  # a time rule's anchor...
    anchor_start: datetime | None = None  # ...and the start it fired for


@dataclass(frozen=True, slots=True)
class Refused:
    """A rule that matched and did not fire: ``suspended`` (the per-day limit, said once) or
    ``chain`` (the event was too deep; ``rule`` is empty then)."""

    rule: str
    at: datetime
    what: Literal["suspended", "chain"]
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    firings: tuple[Firing, ...] = ()
    refused: tuple[Refused, ...] = ()


def on_event(
    rules: Sequence[Automation],
    event: Event,
    facts: Facts,
    at: datetime,
    *,
    depth: int = 0,
    limits: AutomationLimits | None = None,
    history: Sequence[Past] = (),
) -> Decision:
    """The event rules that fire for ``event`` on a ticket whose facts (after the event) are
    ``facts``: file order, ``when`` holds, ``unless`` does not, ``stop`` ends the list; a rule
    already suspended on this ticket is skipped and one that would pass the per-day limit is
    suspended instead of firing."""
    limits = limits or AutomationLimits()
    matching = [
        rule
        for rule in rules
        if rule.on is not None and event in rule.on and why_not(rule, facts) is None
    ]
    if matching and not within_chain(depth, limits):
        why = (
            f"{event} at chain depth {depth} is past chain_depth {limits.chain_depth}:"
            f" not run for {', '.join(rule.id for rule in matching)}"
        )
        return Decision(refused=(Refused("", at, "chain", why),))
    firings: list[Firing] = []
    refused: list[Refused] = []
    for rule in matching:
        if is_suspended(history, rule.id):
            continue
        seen = [*history, *(Past(f.rule, f.at) for f in firings)]
        if over_limit(seen, rule.id, at, limits):
            why = f"fired {limits.per_ticket_per_day} times on this ticket within a day"
            refused.append(Refused(rule.id, at, "suspended", why))
            continue
        firings.append(Firing(rule.id, at, rule.do, f"on {event}", depth))
        if rule.stop:
            break
    return Decision(tuple(firings), tuple(refused))


# -- the effect of actions --------------------------------------------------------------------


def apply_actions(
    facts: Facts, actions: Sequence[Action], *, leads: Mapping[str, str | None] | None = None
) -> tuple[Facts, list[Event]]:
    """The ticket's facts after ``actions`` and the events they cause, in order. ``leads``
    maps a team to its lead (for ``assign: lead``). A reply, a note and a notification change
    no fact and cause no event: an automation's reply is not an agent's reply."""
    events: list[Event] = []
    for action in actions:
        if action.set_status is not None and action.set_status != facts.status:
            before = facts.status
            facts = replace(facts, status=action.set_status)
            events.extend(status_events(before, action.set_status))
        elif action.set_priority is not None and action.set_priority != facts.priority:
            facts = replace(facts, priority=action.set_priority)
            events.append("priority_changed")
        elif action.add_tag is not None:
            facts = replace(facts, tags=facts.tags | {action.add_tag})
        elif action.remove_tag is not None:
            facts = replace(facts, tags=facts.tags - {action.remove_tag})
        elif action.transfer is not None and action.transfer != facts.team:
            facts = replace(facts, team=action.transfer)
        elif action.assign is not None:
            if action.assign == "none":
                agent = None
            elif action.assign == "lead":
                agent = (leads or {}).get(facts.team)
            else:
                agent = action.assign
            if agent != facts.assignee:
                facts = replace(facts, assignee=agent)
                events.append("assigned")
    return facts, events


def status_events(before: str, after: str) -> list[Event]:
    """The events of a status change: status_changed, then resolved or reopened."""
    if before == after:
        return []
    events: list[Event] = ["status_changed"]
    if after == "resolved":
        events.append("resolved")
    elif before in DONE and after not in DONE:
        events.append("reopened")
    return events


# -- time rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchors:
    """When each anchor last started, for those running (ended anchors are absent)."""

    started: Mapping[Anchor, datetime] = field(default_factory=dict)

    def start_of(self, anchor: Anchor) -> datetime | None:
        return self.started.get(anchor)


def advance_anchors(
    anchors: Anchors, event: Event | None, before: Facts | None, after: Facts, at: datetime
) -> Anchors:
    """The anchors after ``event`` (``before`` is None for ticket_created; ``event`` is None for
    a change that is no event of the rules, like an unassignment or a transfer):

    - created: starts with the ticket;
    - pending: starts each time the status becomes pending, ends when it leaves pending;
    - last_customer_message: restarts with each customer message, ends at an agent's reply;
    - last_agent_reply: restarts with each agent's reply, ends at a customer message;
    - resolved: starts when the ticket is resolved, ends when it is reopened;
    - unassigned: starts when the ticket has no assignee, ends when it gets one.

    A resolved or closed ticket ends every anchor but ``resolved``.
    """
    started = dict(anchors.started)
    if event == "ticket_created":
        started["created"] = at
        started["last_customer_message"] = at
    elif event == "customer_message":
        started["last_customer_message"] = at
        started.pop("last_agent_reply", None)
    elif event == "agent_reply":
        started["last_agent_reply"] = at
        started.pop("last_customer_message", None)
    old_status = before.status if before is not None else None
    if after.status != old_status:
        if after.status == "pending":
            started["pending"] = at
        else:
            started.pop("pending", None)
        if after.status == "resolved":
            started["resolved"] = at
        elif after.status not in DONE:
            started.pop("resolved", None)
    was_assigned = before.assigned if before is not None else None
    if after.assigned:
        started.pop("unassigned", None)
    elif was_assigned is not False or (old_status in DONE and after.status not in DONE):
        started["unassigned"] = at  # a new ticket, an unassignment or a reopen without anyone
    if after.status in DONE:
        for anchor in ANCHORS:
            if anchor != "resolved":
                started.pop(anchor, None)
    return Anchors(started)


def due_at(rule: Automation, start: datetime, calendars: Mapping[str, Calendar]) -> datetime:
    """When ``rule`` comes due for an anchor that started at ``start``: the duration counted in
    open time of the rule's calendar (the SLA's arithmetic; without a calendar, real time)."""
    cal = calendars[rule.calendar or "always"]
    duration = rule.duration
    return add_business(cal, start, duration.budget(cal, start))


@dataclass(frozen=True, slots=True)
class Timer:
    rule: str
    anchor: Anchor
    start: datetime
    due: datetime

    @property
    def key(self) -> str:
        """Exactly-once key of the firing on one ticket: (rule, anchor start)."""
        return f"{self.rule}:{self.anchor}:{self.start.isoformat()}"


def timers(
    rules: Sequence[Automation], anchors: Anchors, calendars: Mapping[str, Calendar]
) -> list[Timer]:
    """The time rules scheduled for a ticket with these anchors, earliest first."""
    scheduled = []
    for rule in rules:
        if rule.after is None:
            continue
        start = anchors.start_of(rule.anchor)
        if start is not None:
            scheduled.append(Timer(rule.id, rule.anchor, start, due_at(rule, start, calendars)))
    return sorted(scheduled, key=lambda timer: timer.due)


def fire_timer(
    rules: Sequence[Automation],
    timer: Timer,
    anchors: Anchors,
    facts: Facts,
    at: datetime,
    *,
    limits: AutomationLimits | None = None,
    history: Sequence[Past] = (),
) -> Firing | Refused | str:
    """What a due ``timer`` does at ``at``: a Firing, a Refused (the per-day limit), or in
    words why it does not fire (the rule is gone, its anchor ended or restarted, a condition
    no longer holds, the rule is suspended)."""
    limits = limits or AutomationLimits()
    rule = next((r for r in rules if r.id == timer.rule and r.after is not None), None)
    if rule is None:
        return "the rule is no longer in rules.yaml"
    if rule.anchor != timer.anchor:
        return f"the rule's anchor is now {rule.anchor}"
    start = anchors.start_of(timer.anchor)
    if start is None:
        return f"anchor {timer.anchor} ended"
    if start != timer.start:
        return f"anchor {timer.anchor} restarted"
    blocked = why_not(rule, facts)
    if blocked is not None:
        return blocked
    if is_suspended(history, rule.id):
        return "suspended on this ticket"
    if over_limit(history, rule.id, at, limits):
        why = f"fired {limits.per_ticket_per_day} times on this ticket within a day"
        return Refused(rule.id, at, "suspended", why)
    why = f"{duration_text(rule.duration)} after {timer.anchor}"
    if rule.calendar:
        why += f" on calendar {rule.calendar}"
    return Firing(rule.id, at, rule.do, why, 0, timer.anchor, timer.start)
