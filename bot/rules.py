"""``rules.yaml``: the business rules, validated at start-up with errors that name the field."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.calendars import ALWAYS, Calendar
from bot.routing import DEFAULT_TEAM, Availability, Route, Team
from bot.sla import SlaPolicy
from nlp.priority import PriorityRules


class RulesError(ValueError):
    """rules.yaml is missing, unreadable or invalid; the message names the path of the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PLACEHOLDERS = frozenset({"ticket", "rating"})


class Texts(_Strict):
    """What the customer reads. ``{ticket}`` is the ticket number, ``{rating}`` their rating."""

    welcome: str
    ack: str
    resolved: str
    rating_thanks: str
    reopened: str
    # Answers to a rating button pressed again, or pressed on an out-of-date prompt. Optional so
    # that rules files written before they existed keep loading; see CustomerTexts for the
    # built-in translations used when a known language leaves them out.
    rating_already: str = "You already rated ticket #{ticket}, thank you."
    rating_expired: str = "That rating request for ticket #{ticket} is no longer open."

    @field_validator("*")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        for _, name, _, _ in string.Formatter().parse(value):
            if name is not None and name not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{name}}}; use {', '.join(sorted(PLACEHOLDERS))}"
                )
        return value


def _english() -> Texts:
    return Texts(
        welcome="Hi! Tell us what you need and an agent will answer you right here.",
        ack="Thanks, we got your message. Your ticket number is #{ticket}; "
        "an agent will reply here.",
        resolved="Ticket #{ticket} is resolved. How did we do? Rate us from 1 (bad) to 5 (great).",
        rating_thanks="Thank you! You rated us {rating}/5.",
        reopened="Ticket #{ticket} is open again; an agent will be with you shortly.",
        rating_already="You already rated ticket #{ticket}, thank you.",
        rating_expired="That rating request for ticket #{ticket} is no longer open.",
    )


def _chinese() -> Texts:
    return Texts(
        welcome="您好！请告诉我们您需要什么帮助，客服会在这里回复您。",
        ack="我们已收到您的消息，工单号为 #{ticket}，客服会在这里回复您。",
        resolved="工单 #{ticket} 已解决。请为我们的服务评分：1（差）到 5（很好）。",
        rating_thanks="感谢您的评价：{rating}/5。",
        reopened="工单 #{ticket} 已重新打开，客服会尽快回复您。",
        rating_already="您已为工单 #{ticket} 评过分，谢谢！",
        rating_expired="工单 #{ticket} 的这次评分已失效。",
    )


BUILT_IN = {"en": _english, "zh": _chinese}
# Texts added after the first release: a rules file that predates them gets the built-in
# wording in its own language rather than English.
LATER_TEXTS = ("rating_already", "rating_expired")


class CustomerTexts(_Strict):
    default_language: str = "en"
    show_agent_name: bool = False  # prefix relayed replies with the agent's name
    languages: dict[str, Texts] = Field(
        default_factory=lambda: {"en": _english(), "zh": _chinese()}
    )

    @field_validator("languages", mode="before")
    @classmethod
    def _fill_later_texts(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        filled: dict[Any, Any] = {}
        for tag, texts in value.items():
            built_in = BUILT_IN.get(str(tag).lower().split("-")[0])
            if built_in is not None and isinstance(texts, dict):
                defaults = built_in()
                texts = {**{name: getattr(defaults, name) for name in LATER_TEXTS}, **texts}
            filled[tag] = texts
        return filled

    def for_language(self, language: str | None) -> Texts:
        """Exact tag, then its primary subtag ("zh-hans" → "zh"), then the default."""
        if language:
            tag = language.lower()
            if tag in self.languages:
                return self.languages[tag]
            primary = tag.split("-")[0]
            if primary in self.languages:
                return self.languages[primary]
        return self.languages[self.default_language]


class SlackRules(_Strict):
    channel: str = "C0SUPPORT"  # Slack channel id that new tickets are posted to
    note_prefixes: tuple[str, ...] = ("note:", "//", "(note)")  # thread text that stays internal
    relayed_reaction: str = "white_check_mark"  # on an agent message once the customer has it
    note_reaction: str = "memo"  # on an agent message kept internal
    failed_reaction: str = "x"  # on an agent message the customer did not get


class TicketRules(_Strict):
    reopen_window_hours: float = Field(default=72, ge=0)


class Roles(_Strict):
    """Who may read the desk's figures (supervisors) and its audit trail (admins): Slack user
    ids. Admins may do whatever supervisors may."""

    supervisors: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()

    @field_validator("supervisors", "admins")
    @classmethod
    def _user_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # A user-group id (S…) would never match anyone: say so rather than refuse in silence.
        for entry in value:
            if not re.fullmatch(r"[UW][A-Z0-9]{2,}", entry):
                raise ValueError(f"{entry!r} is not a Slack user id (U… or W…)")
        return value


class Rules(_Strict):
    version: int = Field(ge=1, le=1)
    slack: SlackRules = Field(default_factory=SlackRules)
    tickets: TicketRules = Field(default_factory=TicketRules)
    texts: CustomerTexts = Field(default_factory=CustomerTexts)
    priority: PriorityRules = Field(default_factory=PriorityRules)
    # Company intents from a few example phrases each, used by the local model (DESK_MODEL=local).
    intents: dict[str, list[str]] = Field(default_factory=dict)
    # Teams in order (the first is the default), routing rules (first match wins), availability.
    teams: dict[str, Team] = Field(default_factory=dict)
    routing: tuple[Route, ...] = ()
    availability: Availability = Field(default_factory=Availability)
    # Business calendars by name, and the SLA policy; no ``sla:`` means no SLA clocks.
    calendars: dict[str, Calendar] = Field(default_factory=lambda: {"always": ALWAYS})
    sla: SlaPolicy | None = None
    roles: Roles = Field(default_factory=Roles)
    # Labels agents put on tickets with the card's Tags menu. Slack shows at most 100 options in
    # one menu and 75 characters of each, so the file may not hold more.
    tags: tuple[str, ...] = Field(default=(), max_length=100)

    @field_validator("tags")
    @classmethod
    def _tags_fit_a_menu(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not tag.strip() or len(tag) > 75:
                raise ValueError(f"{tag!r}: a tag is 1 to 75 characters (a Slack menu option)")
        if len(set(value)) != len(value):
            raise ValueError("a tag is listed twice")
        return value

    @property
    def all_teams(self) -> dict[str, Team]:
        """The teams; a file without ``teams:`` has one, ``support``, on ``slack.channel``,
        assigning by Claim only (what the desk did before teams existed)."""
        if self.teams:
            return self.teams
        return {DEFAULT_TEAM: Team(channel=self.slack.channel, assignment="manual")}

    @property
    def default_team(self) -> str:
        return next(iter(self.all_teams))

    def team(self, name: str) -> Team:
        """A ticket's team; one no longer in rules.yaml falls back to the default team."""
        return self.all_teams.get(name) or self.all_teams[self.default_team]

    def teams_of(self, agent: str) -> list[str]:
        return [name for name, team in self.all_teams.items() if agent in team.agents]

    @field_validator("calendars")
    @classmethod
    def _always_is_built_in(cls, value: dict[str, Calendar]) -> dict[str, Calendar]:
        return value if "always" in value else {**value, "always": ALWAYS}

    @field_validator("texts")
    @classmethod
    def _default_language_exists(cls, value: CustomerTexts) -> CustomerTexts:
        if value.default_language not in value.languages:
            raise ValueError(
                f"default_language {value.default_language!r} has no entry under languages"
            )
        return value


def _path_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_rules(data: Any, source: str = "rules.yaml") -> Rules:
    if not isinstance(data, dict):
        raise RulesError(f"{source}: expected a mapping at the top level")
    try:
        rules = Rules.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_path_of(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise RulesError(f"{source} is invalid:\n  " + "\n  ".join(problems)) from None
    problems = _cross_references(rules)
    if problems:
        raise RulesError(f"{source} is invalid:\n  " + "\n  ".join(problems))
    return rules


def _cross_references(rules: Rules) -> list[str]:
    """What a field-by-field check cannot see: names that must point at something."""
    problems: list[str] = []
    teams = rules.all_teams
    known = ", ".join(teams)
    for n, route in enumerate(rules.routing):
        if route.team not in teams:
            problems.append(f"routing.{n}.team: unknown team {route.team!r} (teams: {known})")
    everyone = {a for team in teams.values() for a in team.agents}
    for name, team in rules.teams.items():
        if team.lead is not None and team.lead not in everyone:
            problems.append(
                f"teams.{name}.lead: {team.lead} is not an agent of any team "
                "(list them under some team's agents)"
            )
    problems.extend(_sla_references(rules))
    return problems


def _sla_references(rules: Rules) -> list[str]:
    problems: list[str] = []
    known = ", ".join(rules.calendars)

    def check(path: str, name: str | None) -> None:
        if name is not None and name not in rules.calendars:
            problems.append(f"{path}: unknown calendar {name!r} (calendars: {known})")

    policies = [("sla", rules.sla)]
    for team_name, team in rules.teams.items():
        check(f"teams.{team_name}.calendar", team.calendar)
        policies.append((f"teams.{team_name}.sla", team.sla))
    for path, policy in policies:
        if policy is None:
            continue
        check(f"{path}.calendar", policy.calendar)
        for priority, target in policy.targets.items():
            check(f"{path}.targets.{priority}.calendar", target.calendar)
    return problems


def load_rules(path: Path) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: file not found (set DESK_RULES to its path)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(data, str(path))
