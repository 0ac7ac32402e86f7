"""Supervisors' figures, computed from the tickets' histories (ticket_events and messages).

One function, :func:`report`, serves ``/desk stats`` and ``deskbot report`` so the two can never
disagree. It works in three steps that keep the arithmetic free of I/O:

1. :func:`load_histories` reads the tickets that can matter for a period (created before its
   end and touched since its start, or still active) with their events and messages;
2. :func:`facts` turns each history into small facts ("a human reply 300 s after the customer
   wrote, by U0BOB, on a high-priority billing ticket"), each carrying the dimensions a
   supervisor can group by, as they were *when it happened*;
3. :func:`aggregate` sums facts: ratios are sums of numerators over sums of denominators,
   medians and p90s come from the raw values, and every figure carries its n.

Day buckets are whole days in ``DESK_TZ``; a period is half-open ``[start, end)``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.tickets import ACTIVE, DONE
from storage.models import KbSuggestion, Message, SlaFiring, Ticket, TicketEvent

GROUP_KEYS = ("agent", "channel", "priority", "intent", "team", "language")
ACCEPTED = ("sent", "delivered", "read")  # the customer's platform took the message
LOW_N = 5  # a group with fewer tickets than this is flagged, never hidden
NOT_SET = "none"
CHUNK = 500  # ids per IN (...) list: well under SQLite's and asyncpg's parameter limits
PROMPT_REF = re.compile(r"rating prompt (\d+)")


# -- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Whole days ``first``..``last`` (inclusive) in ``tz``: the instants ``[start, end)``."""

    first: date
    last: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), self.tz).astimezone(UTC)

    def day_of(self, at: datetime) -> date:
        return at.astimezone(self.tz).date()


class PeriodError(ValueError):
    """A period that cannot be read; the message says what is accepted."""


PERIOD_HELP = "today, yesterday, 7d, 30d or YYYY-MM-DD..YYYY-MM-DD"


def parse_period(text: str, now: datetime, tz: ZoneInfo) -> Period:
    """``today``, ``yesterday``, ``Nd`` (the last N days, today included) or ``A..B``."""
    today = now.astimezone(tz).date()
    word = text.strip().lower() or "today"
    if word == "today":
        return Period(today, today, tz)
    if word == "yesterday":
        day = today - timedelta(days=1)
        return Period(day, day, tz)
    days = re.fullmatch(r"(\d{1,3})d", word)
    if days and int(days.group(1)) >= 1:
        return Period(today - timedelta(days=int(days.group(1)) - 1), today, tz)
    if ".." in word:
        a, _, b = word.partition("..")
        return day_range(a, b, tz)
    try:
        day = date.fromisoformat(word)
    except ValueError:
        raise PeriodError(f"unknown period {text.strip()!r}: use {PERIOD_HELP}") from None
    return Period(day, day, tz)


def day_range(first: str, last: str, tz: ZoneInfo) -> Period:
    try:
        a, b = date.fromisoformat(first.strip()), date.fromisoformat(last.strip())
    except ValueError:
        raise PeriodError(f"dates are YYYY-MM-DD, got {first!r} and {last!r}") from None
    if b < a:
        raise PeriodError(f"the period ends ({b}) before it starts ({a})")
    return Period(a, b, tz)


# -- histories -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    kind: str
    actor: str
    old: str | None
    new: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Said:
    id: int
    at: datetime
    direction: str
    author: str
    delivery: str | None
    purpose: str | None

    @property
    def human_reply(self) -> bool:
        """A public agent message the customer's platform accepted (never a desk message)."""
        return (
            self.direction == "out"
            and self.author not in ("desk", "customer")
            and self.purpose is None
            and self.delivery in ACCEPTED
        )


@dataclass(slots=True)
class History:
    id: int
    created_at: datetime
    channel: str
    priority: str  # as it is now: the fallback when the history has no priority event
    team: str
    language: str | None
    intent: str | None
    events: list[Event] = field(default_factory=list)
    said: list[Said] = field(default_factory=list)
    # The first-response target's outcome as the SLA clocks recorded it (sla_firings):
    # ("met", when it was met) or ("breached", when it was due).
    sla: list[tuple[str, datetime]] = field(default_factory=list)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


async def load_histories(session: AsyncSession, start: datetime, end: datetime) -> list[History]:
    """Every ticket created before ``end`` that something in ``[start, ∞)`` touched, or that is
    still active (it may be in the backlog at ``end``), with its whole history."""
    touched = (
        select(Ticket.id)
        .where(
            Ticket.created_at < end,
            or_(
                Ticket.created_at >= start,
                Ticket.status.in_(ACTIVE),
                Ticket.id.in_(select(TicketEvent.ticket_id).where(TicketEvent.at >= start)),
                Ticket.id.in_(select(Message.ticket_id).where(Message.created_at >= start)),
            ),
        )
        .order_by(Ticket.id)
    )
    ids = list((await session.scalars(touched)).all())
    out: dict[int, History] = {}
    for part in _chunks(ids):
        for t in (await session.scalars(select(Ticket).where(Ticket.id.in_(part)))).all():
            intent = (t.classification or {}).get("intent")
            out[t.id] = History(
                id=t.id,
                created_at=t.created_at,
                channel=t.channel,
                priority=t.priority,
                team=t.team,
                language=t.language,
                intent=str(intent) if intent else None,
            )
        events = await session.execute(
            select(
                TicketEvent.ticket_id,
                TicketEvent.id,
                TicketEvent.at,
                TicketEvent.kind,
                TicketEvent.actor,
                TicketEvent.from_value,
                TicketEvent.to_value,
                TicketEvent.reason,
            )
            .where(TicketEvent.ticket_id.in_(part))
            .order_by(TicketEvent.at, TicketEvent.id)
        )
        for tid, eid, at, kind, actor, old, new, reason in events.all():
            out[tid].events.append(Event(eid, at, kind, actor, old, new, reason or ""))
        said = await session.execute(
            select(
                Message.ticket_id,
                Message.id,
                Message.created_at,
                Message.direction,
                Message.author,
                Message.delivery,
                Message.purpose,
            )
            .where(Message.ticket_id.in_(part))
            .order_by(Message.created_at, Message.id)
        )
        for tid, mid, at, direction, author, delivery, purpose in said.all():
            out[tid].said.append(Said(mid, at, direction, author, delivery, purpose))
        marks = await session.execute(
            select(SlaFiring.ticket_id, SlaFiring.what, SlaFiring.due_at, SlaFiring.fired_at)
            .where(
                SlaFiring.ticket_id.in_(part),
                SlaFiring.target == "first_response",
                SlaFiring.what.in_(("met", "breached")),
            )
            .order_by(SlaFiring.id)
        )
        for tid, what, due, fired in marks.all():
            out[tid].sla.append((what, fired if what == "met" or due is None else due))
    return [out[i] for i in ids]


# -- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str  # created|resolution|resolved|backlog|first_response|unanswered|reply|rating|prompt
    ticket: int
    dims: dict[str, str]
    value: float | None = None  # seconds, or the rating
    reopened: bool = False
    one_touch: bool = False
    answered: bool = False
    still_open: bool = False
    at: datetime | None = None  # when it happened, for per-day charts


@dataclass(frozen=True, slots=True)
class State:
    status: str
    assignee: str | None
    priority: str
    team: str


def state_at(h: History, t: datetime, *, inclusive: bool) -> State:
    """The ticket as its history says it was at ``t`` (just after ``t`` when inclusive)."""
    status, assignee, priority, team = "new", None, None, None
    for e in h.events:
        if e.at > t or (e.at == t and not inclusive):
            break
        if e.kind == "status" and e.new:
            status = e.new
        elif e.kind == "assignee":
            assignee = e.new
        elif e.kind == "priority" and e.new:
            priority = e.new
        elif e.kind == "team" and e.new:
            team = e.new
    return State(status, assignee, priority or h.priority, team or h.team or NOT_SET)


def _dims(h: History, st: State, agent: str | None) -> dict[str, str]:
    return {
        "agent": agent or "unassigned",
        "channel": h.channel,
        "priority": st.priority,
        "intent": h.intent or NOT_SET,
        "team": st.team,
        "language": h.language or NOT_SET,
    }


def _at(
    h: History, t: datetime, agent: str | None = None, *, inclusive: bool = True
) -> dict[str, str]:
    st = state_at(h, t, inclusive=inclusive)
    return _dims(h, st, agent if agent is not None else st.assignee)


def facts(h: History, start: datetime, end: datetime, now: datetime) -> list[Fact]:
    """What one ticket contributes to the period ``[start, end)``, seen from ``now``."""
    out: list[Fact] = []

    def within(at: datetime) -> bool:
        return start <= at < end

    said = [m for m in h.said if m.at < end]
    replies = [m for m in said if m.human_reply]
    # SLA first response: met when it was met, breached when it was due (a ticket still open
    # past its due time was recorded as breached at that moment).
    for what, at in h.sla:
        if within(at):
            out.append(Fact(f"sla_{what}", h.id, _at(h, at), at=at))
    events = [e for e in h.events if e.at < end]
    at_end = state_at(h, end, inclusive=False)

    if within(h.created_at):
        out.append(Fact("created", h.id, _at(h, h.created_at), at=h.created_at))
        if replies:
            first = replies[0]
            out.append(
                Fact(
                    "first_response",
                    h.id,
                    _at(h, first.at, first.author),
                    (first.at - h.created_at).total_seconds(),
                )
            )
        else:
            as_of = min(end, now)
            out.append(
                Fact(
                    "unanswered",
                    h.id,
                    _dims(h, at_end, at_end.assignee),
                    max(0.0, (as_of - h.created_at).total_seconds()),
                    still_open=at_end.status not in DONE,
                )
            )

    resolves = [e for e in events if e.kind == "status" and e.new == "resolved"]
    for e in resolves:
        if within(e.at):
            out.append(Fact("resolution", h.id, _at(h, e.at), at=e.at))
    if resolves and within(resolves[-1].at) and at_end.status in DONE:
        latest = resolves[-1]
        reopened = any(e.kind == "status" and e.old in DONE and e.new in ACTIVE for e in events)
        out.append(
            Fact(
                "resolved",
                h.id,
                _at(h, latest.at),
                (latest.at - h.created_at).total_seconds(),
                reopened=reopened,
                one_touch=len(replies) == 1 and not reopened,
            )
        )
    if at_end.status not in DONE:
        out.append(Fact("backlog", h.id, _dims(h, at_end, at_end.assignee)))

    # A later reply answers the customer messages since the reply before it; a reply that
    # follows another with nothing from the customer in between answers nothing new.
    if replies:
        waiting: Said | None = None
        for m in said[said.index(replies[0]) + 1 :]:
            if m.direction == "in" and waiting is None:
                waiting = m
            elif m.human_reply:
                if waiting is not None and within(m.at):
                    seconds = (m.at - waiting.at).total_seconds()
                    out.append(Fact("reply", h.id, _at(h, m.at, m.author), seconds))
                waiting = None

    prompts = [m for m in said if m.purpose == "rating_prompt"]
    ratings = [e for e in events if e.kind == "rating" and e.new is not None]
    answered: set[int] = set()
    for e in ratings:
        prompt = _prompt_of(e, prompts)
        if prompt is not None:
            answered.add(prompt.id)
        if within(e.at):
            when = prompt.at if prompt is not None else e.at
            out.append(Fact("rating", h.id, _at(h, when), float(e.new or 0), at=e.at))
    for p in prompts:
        if within(p.at) and p.delivery in ACCEPTED:
            out.append(Fact("prompt", h.id, _at(h, p.at), answered=p.id in answered))
    return out


def _prompt_of(rating: Event, prompts: list[Said]) -> Said | None:
    """The prompt a rating answered: the one its history names, else the latest before it."""
    ref = PROMPT_REF.search(rating.reason)
    if ref:
        for p in prompts:
            if p.id == int(ref.group(1)):
                return p
    before = [p for p in prompts if p.at <= rating.at]
    return before[-1] if before else None


# -- aggregation -----------------------------------------------------------------------------


def _seconds(value: float) -> int:
    return round(value)


def distribution(values: Sequence[float], *, mean: bool = True) -> dict[str, Any]:
    """Median and p90 (nearest rank) of the raw values, in whole seconds, with n."""
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, Any] = {"median": None, "p90": None}
    if mean:
        out["mean"] = None
    out["n"] = n
    if n:
        out["median"] = _seconds(statistics.median(ordered))
        out["p90"] = _seconds(ordered[max(0, math.ceil(0.9 * n) - 1)])
        if mean:
            out["mean"] = _seconds(statistics.fmean(ordered))
    return out


def ratio(num: int, den: int) -> dict[str, Any]:
    return {"value": round(100 * num / den, 1) if den else None, "num": num, "n": den}


def aggregate(fs: Sequence[Fact]) -> dict[str, Any]:
    by: dict[str, list[Fact]] = {}
    for f in fs:
        by.setdefault(f.kind, []).append(f)

    def kind(name: str) -> list[Fact]:
        return by.get(name, [])

    first = distribution([f.value or 0.0 for f in kind("first_response")])
    open_unanswered = [f.value or 0.0 for f in kind("unanswered") if f.still_open]
    first["unanswered"] = len(kind("unanswered"))
    first["oldest_unanswered"] = _seconds(max(open_unanswered)) if open_unanswered else None
    resolved = kind("resolved")
    ratings = [int(f.value or 0) for f in kind("rating")]
    counts = {str(n): ratings.count(n) for n in range(1, 6)}
    csat = ratio(sum(1 for r in ratings if r >= 4), len(ratings))
    csat["mean"] = round(statistics.fmean(ratings), 2) if ratings else None
    csat["counts"] = counts
    prompts = kind("prompt")
    return {
        "tickets_created": len(kind("created")),
        "resolutions": len(kind("resolution")),
        "tickets_resolved": len(resolved),
        "backlog": len(kind("backlog")),
        "first_response": first,
        "reply_time": distribution([f.value or 0.0 for f in kind("reply")], mean=False),
        "resolution_time": distribution([f.value or 0.0 for f in resolved], mean=False),
        "csat": csat,
        "csat_response_rate": ratio(sum(1 for f in prompts if f.answered), len(prompts)),
        "sla_first_response": (
            ratio(len(kind("sla_met")), len(kind("sla_met")) + len(kind("sla_breached")))
            if kind("sla_met") or kind("sla_breached")
            else None
        ),
        "reopen_rate": ratio(sum(1 for f in resolved if f.reopened), len(resolved)),
        "one_touch": ratio(sum(1 for f in resolved if f.one_touch), len(resolved)),
    }


def _group_entry(key: str, fs: Sequence[Fact], former: bool | None) -> dict[str, Any]:
    n = len({f.ticket for f in fs})
    entry: dict[str, Any] = {"key": key, "n": n, "low_n": n < LOW_N}
    if former is not None:
        entry["former"] = former
    entry["metrics"] = aggregate(fs)
    return entry


def period_facts(histories: Sequence[History], period: Period, now: datetime) -> list[Fact]:
    return [f for h in histories for f in facts(h, period.start, period.end, now)]


def build(
    histories: Sequence[History],
    period: Period,
    now: datetime,
    by: str | None = None,
    agents: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report's JSON shape. ``agents`` are today's team members: others are *former*.
    ``names``: agents' display names by Slack id (:func:`agent_names`), given to agent groups."""
    if by is not None and by not in GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUP_KEYS)}")
    all_facts = period_facts(histories, period, now)
    metrics = aggregate(all_facts)
    current = set(agents)
    groups: list[dict[str, Any]] = []
    if by is not None:
        split: dict[str, list[Fact]] = {}
        for f in all_facts:
            split.setdefault(f.dims[by], []).append(f)
        for key in sorted(split):
            entry = _group_entry(key, split[key], None)
            if by == "agent":
                entry["former"] = key != "unassigned" and key not in current
                if names and key in names:
                    entry["name"] = names[key]
            groups.append(entry)
    return {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "tz": period.tz.key,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "by": by,
        "n": len({f.ticket for f in all_facts}),
        "metrics": metrics,
        "groups": groups,
        "notes": (
            []
            if metrics["sla_first_response"] is not None
            else ["sla_first_response: no first-response target met or breached in the period"]
        ),
    }


async def agent_names(session: AsyncSession) -> dict[str, str]:
    """Each agent's display name as the desk last learnt it (the assignee's name on tickets),
    by Slack user id; an agent the desk never learnt the name of is not in it."""
    rows = await session.execute(
        select(Ticket.assignee_id, Ticket.assignee_name)
        .where(Ticket.assignee_id.is_not(None), Ticket.assignee_name.is_not(None))
        .order_by(Ticket.updated_at)
    )
    return {str(agent): str(name) for agent, name in rows.all() if name}


async def report(
    session: AsyncSession,
    period: Period,
    now: datetime,
    by: str | None = None,
    agents: Iterable[str] = (),
) -> dict[str, Any]:
    histories = await load_histories(session, period.start, period.end)
    names = await agent_names(session) if by == "agent" else None
    figures = build(histories, period, now, by, agents, names)
    figures["self_service"] = await self_service(session, period.start, period.end)
    return figures


async def self_service(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Knowledge-base suggestions made in [start, end) and what came of them: ``deflected``
    (the customer pressed "That solved it": no ticket), ``to_a_person`` (they asked for a
    person or wrote again: a ticket), ``unanswered`` (still pending)."""
    rows = (
        await session.execute(
            select(KbSuggestion.outcome, func.count())
            .where(KbSuggestion.created_at >= start, KbSuggestion.created_at < end)
            .group_by(KbSuggestion.outcome)
        )
    ).all()
    counts = {str(outcome): int(n) for outcome, n in rows}
    return {
        "kb_suggested": sum(counts.values()),
        "deflected": counts.get("solved", 0),
        "to_a_person": counts.get("person", 0) + counts.get("wrote_again", 0),
        "unanswered": counts.get("pending", 0),
    }
