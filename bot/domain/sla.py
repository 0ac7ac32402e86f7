"""SLA clocks: from a ticket's timeline to what fires and when.

Pure: the desk (on every change and at each timer) and ``deskbot sla replay`` call the same
``replay(policy, calendars, events, until)`` and get every firing up to ``until`` plus the
clocks' states and the next moment something would fire. Firing once is the desk's job: it keys
each firing (see ``Fired.key``) and records the ones it has not recorded yet.

Each clock counts *business time used* on its calendar. A warning, the breach and each
escalation level are thresholds of that count (``warn_at`` × target, the target, target +
``after``), so pausing a clock delays all of them alike and a priority change only swaps the
target they are measured against.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

from bot.domain.calendars import Calendar, add_business, add_business_days, business_between
from nlp.priority import Priority

Target = Literal["first_response", "next_response", "resolution"]
TARGETS: tuple[Target, ...] = ("first_response", "next_response", "resolution")
What = Literal[
    "started",
    "warning",
    "breached",
    "met",
    "met_late",
    "paused",
    "resumed",
    "retargeted",
    "escalation",
]
EventType = Literal[
    "created", "customer_message", "agent_reply", "note", "auto_reply", "status", "priority", "end"
]
EVENT_TYPES: tuple[EventType, ...] = (
    "created",
    "customer_message",
    "agent_reply",
    "note",
    "auto_reply",
    "status",
    "priority",
    "end",
)
Status = Literal["open", "pending", "resolved"]
STATUSES: tuple[Status, ...] = ("open", "pending", "resolved")
PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


@dataclass(frozen=True)
class Duration:
    """A target length: whole business days plus hours and minutes of open time.

    A business day is one open day of the calendar (``1d`` on a 09:00-17:00 calendar is 8 hours
    of open time, due at the same time of day one open day later), because that is what "we
    answer within 2 days" means to a customer; on a 24 × 7 calendar it is 24 hours.
    """

    days: int = 0
    time: timedelta = timedelta(0)

    def __str__(self) -> str:
        minutes = int(self.time.total_seconds()) // 60
        text = (f"{self.days}d" if self.days else "") + (
            f"{minutes // 60}h" if minutes >= 60 else ""
        )
        text += f"{minutes % 60}m" if minutes % 60 else ""
        return text or "0m"

    def budget(self, cal: Calendar, start: datetime) -> timedelta:
        """The open time this duration gives a clock that starts at ``start``."""
        if not self.days:
            return self.time
        end = add_business_days(cal, start, self.days)
        return business_between(cal, start, end) + self.time


def parse_duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration is a string like 30m, 4h, 2d or 1h30m")
    match = _DURATION.match(value.strip())
    if match is None or not value.strip():
        raise ValueError(f"{value!r} is not a duration like 30m, 4h, 2d or 1h30m")
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    return Duration(days, timedelta(hours=hours, minutes=minutes))


DurationField = Annotated[
    Duration, PlainValidator(parse_duration), PlainSerializer(str, return_type=str)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlaTarget(_Strict):
    first_response: DurationField
    next_response: DurationField
    resolution: DurationField
    calendar: str | None = None  # None: the policy's calendar

    def of(self, target: Target) -> Duration:
        duration: Duration = getattr(self, target)
        return duration


class Escalation(_Strict):
    after: DurationField  # business time after the breach
    notify: list[Literal["assignee", "lead", "channel"]] = Field(default_factory=list)
    reassign_to: Literal["lead"] | None = None
    raise_priority: bool = False


class SlaPolicy(_Strict):
    calendar: str = "always"
    warn_at: float = Field(default=0.75, gt=0, lt=1)
    pause_when_pending: bool = True
    targets: dict[Priority, SlaTarget] = Field(default_factory=dict)
    escalation: list[Escalation] = Field(default_factory=list)

    def calendar_of(self, priority: str) -> str:
        target = self.targets.get(priority)  # type: ignore[call-overload]
        return (target.calendar if target and target.calendar else None) or self.calendar


def policy_for(
    team_sla: SlaPolicy | None, default: SlaPolicy | None, team_calendar: str | None = None
) -> SlaPolicy | None:
    """A team's own ``sla:`` wins over the desk's; a team's ``calendar`` replaces the policy's
    default calendar (targets naming their own calendar keep it)."""
    policy = team_sla if team_sla is not None else default
    if policy is not None and team_calendar is not None:
        policy = policy.model_copy(update={"calendar": team_calendar})
    return policy


@dataclass(frozen=True)
class SlaEvent:
    at: datetime
    type: EventType
    priority: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class Fired:
    at: datetime
    target: Target
    what: What
    due: datetime | None
    level: int | None = None
    started: datetime | None = None  # the start of the clock cycle this belongs to

    @property
    def key(self) -> str:
        """Unique per firing of a ticket: warnings, breaches and each escalation level happen
        once per cycle; paused/resumed/met/retargeted may repeat, so their moment is in it."""
        start = self.started.isoformat() if self.started else "-"
        once = self.what in ("warning", "breached", "escalation", "started")
        tail = "" if once else ":" + self.at.isoformat()
        level = f":{self.level}" if self.level is not None else ""
        return f"{self.target}:{start}:{self.what}{level}{tail}"


ClockStateName = Literal["running", "paused", "met", "met_late", "breached", "stopped", "none"]


@dataclass(frozen=True)
class ClockState:
    state: ClockStateName
    due: datetime | None
    met_at: datetime | None = None  # when a met (or met late) clock stopped


@dataclass(frozen=True)
class Replay:
    fired: list[Fired]
    state: dict[Target, ClockState]
    next_due: datetime | None


@dataclass
class _Clock:
    target: Target
    started: datetime
    cal: Calendar
    budget: timedelta
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)  # ran, then stopped
    since: datetime | None = None  # running from here; None while paused or finished
    state: ClockStateName = "running"
    due: datetime | None = None
    breached_at: datetime | None = None  # the true breach moment, once breached
    breach_used: timedelta | None = None  # the target when it breached: escalations count from it
    met_at: datetime | None = None
    warned: bool = False
    escalated: set[int] = field(default_factory=set)

    @property
    def used(self) -> timedelta:
        return sum((business_between(self.cal, a, b) for a, b in self.spans), timedelta(0))

    def at_threshold(self, threshold: timedelta) -> datetime | None:
        """When the clock, running on from now, will have used ``threshold``."""
        if self.since is None:
            return None
        return add_business(self.cal, self.since, max(threshold - self.used, timedelta(0)))

    def true_moment(self, threshold: timedelta, now: datetime) -> datetime:
        """When the clock used (or will use) ``threshold``, over the spans it really ran."""
        left = threshold
        spans = [*self.spans, *([(self.since, now)] if self.since is not None else [])]
        for a, b in spans:
            ran = business_between(self.cal, a, b)
            if left <= ran:
                return add_business(self.cal, a, left)
            left -= ran
        moment = self.at_threshold(threshold)
        return moment if moment is not None else now

    def stop_running(self, at: datetime) -> None:
        if self.since is not None:
            self.spans.append((self.since, at))
            self.since = None


class _Engine:
    def __init__(self, policy: SlaPolicy, calendars: Mapping[str, Calendar]) -> None:
        self.policy = policy
        self.calendars = calendars
        self.fired: list[Fired] = []
        self.clocks: dict[Target, _Clock] = {}
        self.ended: dict[Target, ClockStateName] = {}
        self.priority: str | None = None
        self.status: Status = "open"
        self.now: datetime | None = None
        self.created: datetime | None = None
        self.replied = False  # an agent has answered at least once

    # -- the clocks --------------------------------------------------------------------------
    def _emit(self, at: datetime, clock: _Clock, what: What, level: int | None = None) -> None:
        due = clock.due.astimezone(UTC) if clock.due is not None else None
        started = clock.started.astimezone(UTC)
        self.fired.append(Fired(at.astimezone(UTC), clock.target, what, due, level, started))

    def _spec(self) -> SlaTarget | None:
        return self.policy.targets.get(self.priority)  # type: ignore[call-overload, no-any-return]

    def _start(self, target: Target, at: datetime, since: datetime | None = None) -> None:
        """Start a clock at ``at``, counting from ``since`` (default: ``at``)."""
        spec = self._spec()
        if spec is None:
            return
        origin = since or at
        cal = self.calendars[spec.calendar or self.policy.calendar]
        clock = _Clock(target, origin, cal, spec.of(target).budget(cal, origin), since=origin)
        clock.due = clock.true_moment(clock.budget, at)
        self.clocks[target] = clock
        self.ended.pop(target, None)
        self._emit(at, clock, "started")

    def _live(self, target: Target) -> _Clock | None:
        clock = self.clocks.get(target)
        if clock is not None and clock.state in ("running", "paused", "breached"):
            return clock
        return None

    def _pause(self, clock: _Clock, at: datetime) -> None:
        clock.stop_running(at)
        clock.state = "paused"
        clock.due = clock.breached_at  # a paused clock has no due time unless it breached
        self._emit(at, clock, "paused")

    def _resume(self, clock: _Clock, at: datetime) -> None:
        clock.since = at
        if clock.breached_at is not None:
            clock.state, clock.due = "breached", clock.breached_at
        else:
            clock.state, clock.due = "running", clock.at_threshold(clock.budget)
        self._emit(at, clock, "resumed")

    def _finish(self, clock: _Clock, at: datetime) -> None:
        clock.stop_running(at)
        clock.met_at = at
        if clock.breached_at is not None:
            clock.state, clock.due = "met_late", clock.breached_at
        else:
            # When it would have run out, counted over the time it really ran: the same as the
            # running clock's due, and defined for one met while paused (a ticket resolved
            # while waiting on the customer), which has no due of its own.
            clock.state = "met"
            left = max(clock.budget - clock.used, timedelta(0))
            clock.due = add_business(clock.cal, at, left)
        self._emit(at, clock, clock.state)

    def _stop(self, target: Target) -> None:
        clock = self._live(target)
        if clock is not None:
            del self.clocks[target]
            self.ended[target] = "stopped"

    # -- timed moments -----------------------------------------------------------------------
    def _pending(self, clock: _Clock) -> list[tuple[datetime, What, int | None]]:
        """What this clock would fire next if nothing else happened: (moment, what, level).

        A threshold the clock has already used up (a priority change made it past due) is
        listed at the moment it was truly passed, so it fires at once, even while paused.
        """
        if clock.state not in ("running", "breached", "paused"):
            return []
        used = clock.used
        now = self.now

        def moment_of(threshold: timedelta) -> datetime | None:
            if threshold <= used and clock.spans:
                return clock.true_moment(threshold, now or clock.started)
            return clock.at_threshold(threshold)

        moments: list[tuple[datetime, What, int | None]] = []
        breach = clock.breached_at or moment_of(clock.budget)
        if clock.breached_at is None:
            warn = moment_of(clock.budget * self.policy.warn_at)
            # A warning due with or after the breach (a priority change made both past due)
            # would say nothing the breach does not.
            if (
                warn is not None
                and breach is not None
                and not clock.warned
                and warn < breach
                and (now is None or breach > now)
            ):
                moments.append((warn, "warning", None))
            if breach is not None:
                moments.append((breach, "breached", None))
        if breach is None:
            return moments
        base = clock.breach_used if clock.breach_used is not None else clock.budget
        for level, step in enumerate(self.policy.escalation, start=1):
            if level not in clock.escalated:
                moment = moment_of(base + step.after.budget(clock.cal, breach))
                if moment is not None:
                    moments.append((moment, "escalation", level))
                break  # levels fire in order; the next is scheduled once this one fired
        return moments

    def next_moment(self) -> tuple[datetime, _Clock, What, int | None] | None:
        best: tuple[datetime, _Clock, What, int | None] | None = None
        for target in TARGETS:
            clock = self.clocks.get(target)
            if clock is None:
                continue
            for moment, what, level in self._pending(clock):
                if best is None or moment < best[0]:
                    best = (moment, clock, what, level)
        return best

    def fire(self, moment: datetime, clock: _Clock, what: What, level: int | None) -> None:
        # A moment already behind us (a priority change made it past due) fires at once; the
        # breach still records the moment it was truly due.
        now = self.now or moment
        at = max(moment, now)
        if what == "warning":
            clock.warned = True
            self._emit(at, clock, "warning")
        elif what == "breached":
            clock.warned = True  # after a breach a warning would say nothing new
            clock.breached_at = clock.true_moment(clock.budget, at)
            clock.breach_used = clock.budget
            clock.due = clock.breached_at
            if (
                clock.since is not None
            ):  # a paused clock that a priority change made late stays paused
                clock.state = "breached"
            self._emit(at, clock, "breached")
        else:
            assert level is not None
            clock.escalated.add(level)
            self._emit(at, clock, "escalation", level)

    # -- events ------------------------------------------------------------------------------
    def apply(self, event: SlaEvent) -> None:
        self.now = at = event.at
        match event.type:
            case "created":
                self.priority = event.priority
                self.created = at
                self._start("first_response", at)
                self._start("resolution", at)
            case "customer_message":
                if self.status in ("pending", "resolved"):
                    self._set_status("open", at)
                first = self.clocks.get("first_response")
                answered = first is not None and first.state in ("met", "met_late")
                if answered and self._live("next_response") is None:
                    self._start("next_response", at)
            case "agent_reply":
                self.replied = True
                for target in TARGETS[:2]:
                    clock = self._live(target)
                    if clock is not None:
                        self._finish(clock, at)
                        break
            case "status":
                if event.status in STATUSES:  # the CLI rejects others; the desk has no others
                    self._set_status(event.status, at)
            case "priority":
                self.priority = event.priority
                self._retarget(at)
            case "note" | "auto_reply" | "end":
                pass  # nothing that answers the customer, or only where the replay stops

    def _set_status(self, status: Status, at: datetime) -> None:
        previous, self.status = self.status, status
        resolution = self.clocks.get("resolution")
        if status == "resolved":
            if resolution is not None and self._live("resolution") is not None:
                self._finish(resolution, at)
            self._stop("first_response")
            self._stop("next_response")
        elif status == "pending":
            if (
                self.policy.pause_when_pending
                and resolution is not None
                and resolution.state in ("running", "breached")
            ):
                self._pause(resolution, at)
        elif (
            previous in ("pending", "resolved")
            and resolution is not None
            and resolution.state in ("paused", "met", "met_late")
        ):
            self._resume(resolution, at)

    def _retarget(self, at: datetime) -> None:
        spec = self._spec()
        fresh: set[Target] = set()
        if spec is not None and self.created is not None:
            # From a priority that had no targets: the clocks it should have had start now,
            # counted from creation, so what is already late fires at once.
            wanted: list[Target] = ["resolution"] if self.status != "resolved" else []
            if not self.replied:
                wanted.insert(0, "first_response")
            for target in wanted:
                if target not in self.clocks and target not in self.ended:
                    self._start(target, at, since=self.created)
                    fresh.add(target)
        for target in TARGETS:
            clock = self._live(target)
            if clock is None or target in fresh:
                continue
            if spec is None:
                self._stop(target)
                continue
            # From the cycle's original start: the spans it ran are re-measured on the new
            # target's calendar, and warnings/escalations are recomputed from the new budget.
            clock.cal = self.calendars[spec.calendar or self.policy.calendar]
            clock.budget = spec.of(target).budget(clock.cal, clock.started)
            if clock.breached_at is None and (
                clock.since is not None or clock.budget <= clock.used
            ):
                clock.due = clock.true_moment(clock.budget, at)  # maybe already behind us
            self._emit(at, clock, "retargeted")

    def result(self) -> Replay:
        state: dict[Target, ClockState] = {}
        for target in TARGETS:
            clock = self.clocks.get(target)
            if clock is not None:
                state[target] = ClockState(clock.state, clock.due, clock.met_at)
            else:
                state[target] = ClockState(self.ended.get(target, "none"), None)
        upcoming = self.next_moment()
        return Replay(list(self.fired), state, upcoming[0] if upcoming else None)


def replay(
    policy: SlaPolicy,
    calendars: Mapping[str, Calendar],
    events: Sequence[SlaEvent],
    until: datetime,
) -> Replay:
    """Everything that fires up to ``until`` (inclusive), the clocks then, and the next moment."""
    engine = _Engine(policy, calendars)
    ordered = sorted(events, key=lambda event: event.at)  # stable: same-moment order is kept
    index = 0
    while True:
        event = ordered[index] if index < len(ordered) and ordered[index].at <= until else None
        upcoming = engine.next_moment()
        # An event at the same moment as a threshold goes first: a reply at the due moment is
        # on time.
        if (
            upcoming is not None
            and upcoming[0] <= until
            and (event is None or upcoming[0] < event.at)
        ):
            engine.fire(*upcoming)
            continue
        if event is None:
            break
        engine.apply(event)
        index += 1
    return engine.result()
