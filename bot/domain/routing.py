"""Teams, routing rules and the choice of an agent: pure decisions, no database, no clock.

``rules.yaml`` names teams (a Slack channel, its agents, a strategy, a capacity) and an ordered
list of routing rules. :func:`choose_team` picks the team of a new ticket (first matching rule,
else the default team); :func:`choose_agent` picks who in that team gets it, from a snapshot of
the agents' availability and load that the caller read under lock. Both return their reason in
words, because every decision becomes a ticket event and a line in the card's thread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.domain.sla import SlaPolicy
from nlp.priority import LEVELS, Priority

Strategy = Literal["round_robin", "balanced", "manual"]
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
DEFAULT_TEAM = "support"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Team(_Strict):
    channel: str  # Slack channel id where this team's cards go
    agents: tuple[str, ...] = ()  # Slack user ids, in rotation order
    lead: str | None = None
    assignment: Strategy = "round_robin"
    capacity: int = Field(default=3, ge=1)  # open tickets per agent auto-assignment may give
    sla: SlaPolicy | None = None  # the team's own SLA policy, instead of the desk's
    calendar: str | None = None  # the team's business hours, instead of the policy's default
    # Who may claim its tickets: "team" (its agents, its lead, supervisors; everyone in the
    # channel when it lists no agents) or "channel" (anyone who sees the card).
    claim: Literal["team", "channel"] = "team"

    @field_validator("channel")
    @classmethod
    def _channel_id(cls, value: str) -> str:
        if not SLACK_CHANNEL.match(value):
            raise ValueError(f"{value!r} is not a Slack channel id (like C0123ABCD)")
        return value

    @field_validator("agents")
    @classmethod
    def _agent_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for agent in value:
            if not SLACK_USER.match(agent):
                raise ValueError(f"{agent!r} is not a Slack user id (like U0123ABCD)")
        if len(set(value)) != len(value):
            raise ValueError("an agent is listed twice")
        return value


class When(_Strict):
    """The tests of one routing rule; every one listed must hold."""

    channel: tuple[Literal["telegram", "whatsapp", "email"], ...] | None = None
    language: tuple[str, ...] | None = None  # primary subtags: "zh" matches "zh-hans"
    intent: tuple[str, ...] | None = None  # the local model's intent
    keywords: tuple[str, ...] | None = None  # any of them, case-insensitive, at a word start
    vip: bool | None = None
    priority: tuple[Priority, ...] | None = None

    @field_validator("channel", "language", "intent", "keywords", "priority", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Route(_Strict):
    when: When
    team: str


class Availability(_Strict):
    """How agents' availability works (the ``availability:`` section of rules.yaml)."""

    away_grace_minutes: float = Field(default=5, ge=0)  # before an away agent's tickets move
    reassign_when_away: bool = True  # false: an away agent keeps their open tickets
    # "slack": also poll users.getPresence and treat Slack's "away" as away; "none": only what
    # the agent says with /desk available and /desk away.
    assignment_presence: Literal["none", "slack"] = "none"
    presence_poll_seconds: float = Field(default=60, ge=10)


# -- choosing a team ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What routing may look at when a ticket is created."""

    channel: str
    text: str = ""
    language: str | None = None
    intent: str | None = None
    vip: bool = False
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class TeamChoice:
    team: str
    reason: str


def _phrase(phrase: str) -> re.Pattern[str]:
    # The same matching as the priority keywords: case-insensitive, at a word start.
    return re.compile(r"(?<!\w)" + re.escape(phrase.casefold()))


def _primary(tag: str | None) -> str | None:
    return tag.lower().split("-")[0] if tag else None


def _fails(when: When, f: TicketFacts) -> str | None:
    """The first test of ``when`` that does not hold for ``f``, or None when all hold."""
    if when.channel is not None and f.channel not in when.channel:
        return "channel"
    if when.language is not None and _primary(f.language) not in {
        _primary(x) for x in when.language
    }:
        return "language"
    if when.intent is not None and f.intent not in when.intent:
        return "intent"
    if when.keywords is not None:
        folded = f.text.casefold()
        if not any(_phrase(k).search(folded) for k in when.keywords):
            return "keywords"
    if when.vip is not None and f.vip != when.vip:
        return "vip"
    if when.priority is not None and f.priority not in when.priority:
        return "priority"
    return None


def failing_test(when: When, facts: TicketFacts) -> str | None:
    """The name of the first test of ``when`` that ``facts`` fail, or None when all hold."""
    return _fails(when, facts)


def _describe(when: When, f: TicketFacts) -> str:
    parts: list[str] = []
    if when.channel is not None:
        parts.append(f"channel {f.channel}")
    if when.language is not None:
        parts.append(f"language {f.language}")
    if when.intent is not None:
        parts.append(f"intent {f.intent}")
    if when.keywords is not None:
        folded = f.text.casefold()
        hit = next(k for k in when.keywords if _phrase(k).search(folded))
        parts.append(f"keyword '{hit}'")
    if when.vip is not None:
        parts.append("VIP" if when.vip else "not VIP")
    if when.priority is not None:
        parts.append(f"priority {f.priority}")
    return ", ".join(parts) or "always"


def choose_team(facts: TicketFacts, routes: Sequence[Route], default: str) -> TeamChoice:
    """First rule whose tests all hold wins; no match → the default team."""
    for n, route in enumerate(routes, start=1):
        if _fails(route.when, facts) is None:
            return TeamChoice(route.team, f"routing rule {n} ({_describe(route.when, facts)})")
    return TeamChoice(default, "no routing rule matched: default team")


# Scripts that name a language on their own. Used only when the platform gives no language
# (WhatsApp never does); a full detector comes with the self-service work.
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana: Japanese even when kanji are mixed in
    ("ko", re.compile(r"[\uac00-\ud7af]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
)


def language_from_script(text: str) -> str | None:
    for language, pattern in _SCRIPTS:
        if pattern.search(text):
            return language
    return None


# -- choosing an agent ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """One team member as the assigner sees them at the moment of choosing."""

    agent: str
    available: bool
    open_tickets: int  # assigned and open (or new); waiting on the customer does not count
    last_assigned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AgentChoice:
    agent: str | None  # None: nobody eligible, the ticket waits
    reason: str


def choose_agent(
    team_name: str, team: Team, loads: Mapping[str, AgentLoad], pointer: str | None
) -> AgentChoice:
    """Who in ``team`` gets the next ticket; ``pointer`` is the last agent given one."""
    if team.assignment == "manual":
        return AgentChoice(None, f"waiting: {team_name} assigns by Claim only")
    members = [loads.get(a, AgentLoad(a, False, 0)) for a in team.agents]
    if not members:
        return AgentChoice(None, f"waiting: {team_name} has no agents")
    available = [m for m in members if m.available]
    if not available:
        return AgentChoice(None, f"waiting: no available agent in {team_name}")
    eligible = [m for m in available if m.open_tickets < team.capacity]
    if not eligible:
        return AgentChoice(
            None,
            f"waiting: every available agent in {team_name} is at capacity ({team.capacity})",
        )
    if team.assignment == "round_robin":
        order = list(team.agents)
        start = order.index(pointer) + 1 if pointer in order else 0
        rotation = order[start:] + order[:start]
        ok = {m.agent for m in eligible}
        agent = next(a for a in rotation if a in ok)
        load = next(m for m in eligible if m.agent == agent)
        how = "round robin"
    else:
        never = datetime.min

        def key(m: AgentLoad) -> tuple[int, datetime, int]:
            # Fewest open first; a tie goes to whoever has waited longest for a ticket.
            return (
                m.open_tickets,
                m.last_assigned_at.replace(tzinfo=None) if m.last_assigned_at else never,
                team.agents.index(m.agent),
            )

        load = min(eligible, key=key)
        agent = load.agent
        how = "balanced"
    return AgentChoice(
        agent, f"assigned to <@{agent}>: {how}, {load.open_tickets + 1}/{team.capacity} open"
    )


def waiting_order(priority: str, created_at: datetime, ticket_id: int) -> tuple[int, datetime, int]:
    """Sort key of tickets waiting for an agent: urgent first, then oldest first."""
    return (-LEVELS.get(priority, 0), created_at, ticket_id)
