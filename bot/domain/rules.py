"""``rules.yaml``: the business rules, validated at start-up with errors that name the field."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.domain.automations import Automation, AutomationLimits, check_automations
from bot.domain.calendars import ALWAYS, Calendar
from bot.domain.macros import MAX_MACROS, Macro
from bot.domain.routing import DEFAULT_TEAM, Availability, Route, Team
from bot.domain.sla import SlaPolicy
from bot.domain.surge import Surges
from bot.domain.window import WhatsAppRules
from nlp.priority import PriorityRules


class RulesError(ValueError):
    """rules.yaml is missing, unreadable or invalid; the message names the path of the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PLACEHOLDERS = frozenset(
    {"ticket", "rating", "tickets", "state", "updated", "title", "extract", "link", "limit"}
)


class Texts(_Strict):
    """What the customer reads. ``{ticket}`` is the ticket number, ``{rating}`` their rating;
    in the status answers ``{state}`` is one of the ``state_*`` texts, ``{updated}`` the time
    of the ticket's last change and ``{tickets}`` the ``status_line`` of each ticket."""

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
    # The acknowledgement of a ticket attached to an incident (many customers, one problem).
    incident_ack: str = (
        "Thanks, we got your message (ticket #{ticket}). We know about this problem and our "
        "team is working on it; we will write to you here as soon as we know more."
    )
    # Status lookups (README, "Customers help themselves"): the word customers may write before
    # a ticket number ("status 123"), the button under the acknowledgement, and the answers.
    status_word: str = "status"
    my_tickets: str = "My tickets"  # a WhatsApp button title: at most 20 characters
    status_list: str = "Your tickets:\n{tickets}"
    status_line: str = "#{ticket}: {state} (last update {updated})"
    status_one: str = "Ticket #{ticket}: {state}. Last update {updated}."
    status_none: str = "You have no tickets with us yet. Write here and we will open one."
    status_unknown: str = (
        'We found no ticket #{ticket} of yours. Send "status" to list your tickets.'
    )
    status_limited: str = (
        "You have looked up many tickets just now. Please try again in a few minutes."
    )
    state_new: str = "received, waiting for an agent"
    state_open: str = "an agent is working on it"
    state_pending: str = "waiting for your reply"
    state_resolved: str = "resolved"
    state_closed: str = "closed"
    # The knowledge base's answer before a ticket (README, "Answers from the knowledge base"):
    # {title}, {extract} and {link} (the article's url on a line of its own, or nothing).
    kb_answer: str = "This may answer your question:\n\n{title}\n{extract}{link}"
    kb_solved: str = "That solved it"  # button titles: at most 20 characters (WhatsApp)
    kb_person: str = "Talk to a person"
    kb_thanks: str = "Glad it helped! Write here any time if you need anything else."
    kb_spent: str = "Thanks, we already have your answer to that suggestion."
    # A file the customer sent that the desk cannot pass on (over the platform's limit for
    # bots); ``{limit}`` is the limit, e.g. "20 MB".
    file_too_big: str = (
        "We could not receive your file: files can be at most {limit} here. Please send a"
        " smaller one, or a link to it."
    )

    @field_validator("my_tickets", "kb_solved", "kb_person")
    @classmethod
    def _fits_a_button(cls, value: str) -> str:
        if not 1 <= len(value) <= 20:
            raise ValueError("a button title: 1 to 20 characters (WhatsApp's limit)")
        return value

    @model_validator(mode="after")
    def _buttons_differ(self) -> Texts:
        # WhatsApp refuses two reply buttons with the same title in one message.
        if self.kb_solved == self.kb_person:
            raise ValueError("kb_solved and kb_person must differ (two buttons of one message)")
        return self

    @field_validator("status_word")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not re.fullmatch(r"[^\W\d_]+", value):
            raise ValueError("one word of letters, e.g. status")
        return value

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
    )  # the status texts: the field defaults


def _chinese() -> Texts:
    return Texts(
        welcome="您好！请告诉我们您需要什么帮助，客服会在这里回复您。",
        ack="我们已收到您的消息，工单号为 #{ticket}，客服会在这里回复您。",
        resolved="工单 #{ticket} 已解决。请为我们的服务评分：1（差）到 5（很好）。",
        rating_thanks="感谢您的评价：{rating}/5。",
        reopened="工单 #{ticket} 已重新打开，客服会尽快回复您。",
        rating_already="您已为工单 #{ticket} 评过分，谢谢！",
        rating_expired="工单 #{ticket} 的这次评分已失效。",
        incident_ack="我们已收到您的消息（工单 #{ticket}）。我们已知晓这个问题，团队正在处理；"
        "一有进展会在这里通知您。",
        status_word="状态",
        kb_answer="这篇文章也许能解答您的问题：\n\n{title}\n{extract}{link}",
        kb_solved="问题已解决",
        kb_person="联系人工客服",
        kb_thanks="很高兴能帮到您！如需其他帮助，随时在这里留言。",
        kb_spent="谢谢，我们已经收到您对这条建议的回复。",
        my_tickets="我的工单",
        status_list="您的工单：\n{tickets}",
        status_line="#{ticket}：{state}（最后更新 {updated}）",
        status_one="工单 #{ticket}：{state}。最后更新 {updated}。",
        status_none="您还没有工单。直接在这里留言，我们会为您创建。",
        status_unknown="没有找到您的工单 #{ticket}。发送“状态”查看您的所有工单。",
        status_limited="您刚才查询得太频繁了，请几分钟后再试。",
        file_too_big="我们无法接收您的文件：这里的文件最大为 {limit}。请发送较小的文件或文件链接。",
        state_new="已收到，等待客服处理",
        state_open="客服正在处理",
        state_pending="等待您的回复",
        state_resolved="已解决",
        state_closed="已关闭",
    )


def _spanish() -> Texts:
    return Texts(
        welcome="¡Hola! Cuéntenos qué necesita y un agente le responderá aquí mismo.",
        ack="Gracias, hemos recibido su mensaje. Su número de ticket es #{ticket}; "
        "un agente le responderá aquí.",
        resolved="El ticket #{ticket} está resuelto. ¿Qué tal lo hicimos? Valórenos de 1 (mal) "
        "a 5 (excelente).",
        rating_thanks="¡Gracias! Nos ha dado un {rating}/5.",
        reopened="El ticket #{ticket} vuelve a estar abierto; un agente le atenderá en breve.",
        rating_already="Ya valoró el ticket #{ticket}, gracias.",
        rating_expired="Esa solicitud de valoración del ticket #{ticket} ya no está abierta.",
        incident_ack="Gracias, hemos recibido su mensaje (ticket #{ticket}). Conocemos este "
        "problema y nuestro equipo está trabajando en él; le escribiremos aquí en cuanto sepamos "
        "más.",
        status_word="estado",
        kb_answer="Esto puede responder a su pregunta:\n\n{title}\n{extract}{link}",
        kb_solved="Resuelto, gracias",
        kb_person="Hablar con alguien",
        kb_thanks="¡Nos alegra haberle ayudado! Escríbanos aquí cuando lo necesite.",
        kb_spent="Gracias, ya tenemos su respuesta a esa sugerencia.",
        my_tickets="Mis tickets",
        status_list="Sus tickets:\n{tickets}",
        status_line="#{ticket}: {state} (última actualización {updated})",
        status_one="Ticket #{ticket}: {state}. Última actualización {updated}.",
        status_none="Todavía no tiene tickets con nosotros. Escríbanos aquí y abriremos uno.",
        status_unknown='No encontramos ningún ticket #{ticket} suyo. Envíe "estado" para ver '
        "sus tickets.",
        status_limited="Ha consultado muchos tickets en poco tiempo. Inténtelo de nuevo en unos "
        "minutos.",
        file_too_big="No pudimos recibir su archivo: aquí los archivos pueden tener como máximo"
        " {limit}. Envíe uno más pequeño o un enlace.",
        state_new="recibido, esperando a un agente",
        state_open="un agente lo está atendiendo",
        state_pending="esperando su respuesta",
        state_resolved="resuelto",
        state_closed="cerrado",
    )


def _russian() -> Texts:
    return Texts(
        welcome="Здравствуйте! Напишите, чем мы можем помочь, и оператор ответит вам здесь.",
        ack="Спасибо, мы получили ваше сообщение. Номер вашего обращения — #{ticket}; "
        "оператор ответит здесь.",
        resolved="Обращение #{ticket} решено. Оцените нашу работу от 1 (плохо) до 5 (отлично).",
        rating_thanks="Спасибо! Ваша оценка: {rating}/5.",
        reopened="Обращение #{ticket} снова открыто; оператор скоро ответит вам.",
        rating_already="Вы уже оценили обращение #{ticket}, спасибо.",
        rating_expired="Этот запрос оценки обращения #{ticket} больше не действует.",
        incident_ack="Спасибо, мы получили ваше сообщение (обращение #{ticket}). Мы знаем об этой "
        "проблеме, команда уже работает над ней; мы напишем вам здесь, как только узнаем больше.",
        status_word="статус",
        kb_answer="Возможно, это ответ на ваш вопрос:\n\n{title}\n{extract}{link}",
        kb_solved="Вопрос решён",
        kb_person="Позвать оператора",
        kb_thanks="Рады, что помогли! Пишите сюда, если понадобится что-то ещё.",
        kb_spent="Спасибо, ваш ответ на эту подсказку уже получен.",
        my_tickets="Мои обращения",
        status_list="Ваши обращения:\n{tickets}",
        status_line="#{ticket}: {state} (обновлено {updated})",
        status_one="Обращение #{ticket}: {state}. Обновлено {updated}.",
        status_none="У вас пока нет обращений. Просто напишите здесь, и мы его создадим.",
        status_unknown="Мы не нашли у вас обращения #{ticket}. Отправьте «статус», чтобы увидеть "
        "свои обращения.",
        status_limited="Вы сделали слишком много запросов. Попробуйте снова через несколько минут.",
        file_too_big="Мы не смогли получить ваш файл: здесь файлы не больше {limit}. Пришлите"
        " файл поменьше или ссылку на него.",
        state_new="получено, ждёт оператора",
        state_open="оператор работает над ним",
        state_pending="ждём вашего ответа",
        state_resolved="решено",
        state_closed="закрыто",
    )


BUILT_IN = {"en": _english, "zh": _chinese, "es": _spanish, "ru": _russian}
# Texts added after the first release: a rules file that predates them gets the built-in
# wording in its own language rather than English.
LATER_TEXTS = (
    "incident_ack",
    "rating_already",
    "rating_expired",
    "status_word",
    "my_tickets",
    "status_list",
    "status_line",
    "status_one",
    "status_none",
    "status_unknown",
    "status_limited",
    "file_too_big",
    "state_new",
    "state_open",
    "state_pending",
    "state_resolved",
    "state_closed",
    "kb_answer",
    "kb_solved",
    "kb_person",
    "kb_thanks",
    "kb_spent",
)


class CustomerTexts(_Strict):
    default_language: str = "en"
    show_agent_name: bool = False  # prefix relayed replies with the agent's name
    # Languages the detector may name besides the desk's own (those of ``languages``, the macros
    # and ``kb.languages``): ISO 639-1 codes it knows (fr, de, pt, it, ar, hi, ja, ko). A message
    # in one is stored and routed on, and answered in the default language.
    also_detect: tuple[str, ...] = ()
    languages: dict[str, Texts] = Field(
        default_factory=lambda: {tag: make() for tag, make in BUILT_IN.items()}
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
    # thread: the assignee's thread replies go to the customer (notes by prefix stay inside).
    # composer: every thread message stays inside; the customer gets only what an agent sends
    # with the card's Reply button or the "Send to customer" message shortcut.
    relay: Literal["thread", "composer"] = "thread"


class StatusLookupRules(_Strict):
    """Customers look up their tickets by number (README, "Customers help themselves")."""

    enabled: bool = True
    button: bool = True  # a "My tickets" button under the acknowledgement
    max_lookups: int = Field(default=10, ge=1)  # per customer within window_minutes...
    window_minutes: float = Field(default=15, gt=0)  # ...then "try again later"
    list_limit: int = Field(default=10, ge=1, le=50)  # the most recent tickets listed


class KbRules(_Strict):
    """Answers from the knowledge base before a ticket (README, "Answers from the knowledge
    base"). ``suggest_at`` is the cosine similarity a question needs with an article; measured
    with ``deskbot kb eval``."""

    enabled: bool = True
    dir: str = "kb"  # the articles' folder, relative to rules.yaml
    suggest_at: float = Field(default=0.45, ge=0, le=1)
    # The languages whose questions are answered before a ticket: those the encoder reads well.
    # The shipped all-MiniLM-L6-v2 is English (the model's heads are gated the same way); other
    # languages' articles still serve agents through "Suggest articles", where a person judges.
    languages: tuple[str, ...] = ("en",)
    agent_suggestions: int = Field(default=3, ge=1, le=10)  # "Suggest articles" on the card

    @field_validator("languages")
    @classmethod
    def _primary_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Articles and messages are compared by primary subtag ("zh-hans" → "zh").
        return tuple(tag.lower().split("-")[0] for tag in value)


class TicketRules(_Strict):
    reopen_window_hours: float = Field(default=72, ge=0)


USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


class Roles(_Strict):
    """Who may read the desk's figures (supervisors) and its audit trail (admins): Slack user
    ids (U…/W…) and user-group ids (S…, whose members are read with usergroups.users.list and
    refreshed; see :mod:`bot.core.roles`). Admins may do whatever supervisors may."""

    supervisors: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()

    @field_validator("supervisors", "admins")
    @classmethod
    def _ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not (USER_ID.fullmatch(entry) or GROUP_ID.fullmatch(entry)):
                raise ValueError(
                    f"{entry!r} is neither a Slack user id (U… or W…) nor a user-group id (S…)"
                )
        return value

    @property
    def groups(self) -> tuple[str, ...]:
        """The user groups named in either role, in order, each once."""
        return tuple(dict.fromkeys(e for e in (*self.supervisors, *self.admins) if e[0] == "S"))


class Digest(_Strict):
    """The daily digest: posted once a day at ``at`` (HH:MM in ``DESK_TZ``) into ``channel``."""

    channel: str = Field(pattern=r"^[CG][A-Z0-9]{2,}$")
    at: str = Field(default="09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

    @property
    def minutes(self) -> int:
        hours, minutes = self.at.split(":")
        return int(hours) * 60 + int(minutes)


class Reports(_Strict):
    digest: Digest | None = None


class Retention(_Strict):
    """How long the platforms' raw payloads stay in the inbox; None keeps them."""

    raw_days: int | None = Field(default=None, ge=1, le=3650)


class Rules(_Strict):
    version: int = Field(ge=1, le=1)
    slack: SlackRules = Field(default_factory=SlackRules)
    tickets: TicketRules = Field(default_factory=TicketRules)
    status_lookup: StatusLookupRules = Field(default_factory=StatusLookupRules)
    kb: KbRules = Field(default_factory=KbRules)
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
    reports: Reports = Field(default_factory=Reports)
    retention: Retention = Field(default_factory=Retention)
    # Labels agents put on tickets with the card's Tags menu. Slack shows at most 100 options in
    # one menu and 75 characters of each, so the file may not hold more.
    tags: tuple[str, ...] = Field(default=(), max_length=100)
    # Canned replies for the Reply modal (bot/domain/macros.py).
    macros: tuple[Macro, ...] = Field(default=(), max_length=MAX_MACROS)
    # Incidents: many alike new tickets at once become one incident card (bot/incidents/desk.py).
    surges: Surges = Field(default_factory=Surges)
    # WhatsApp's 24-hour window and the approved templates that pass outside it.
    whatsapp: WhatsAppRules = Field(default_factory=WhatsAppRules)
    # Rules that act on events and on time (bot/domain/automations.py, docs/automations.md).
    automations: tuple[Automation, ...] = ()
    automation_limits: AutomationLimits = Field(default_factory=AutomationLimits)

    def spoken_languages(self) -> frozenset[str]:
        """The languages the detector may name (primary subtags): those the desk has texts,
        macros or knowledge-base answers in, its default, and ``texts.also_detect``."""
        tags = [
            self.texts.default_language,
            *self.texts.languages,
            *self.texts.also_detect,
            *self.kb.languages,
            *(tag for macro in self.macros for tag in macro.text),
        ]
        return frozenset(tag.lower().split("-")[0] for tag in tags)

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
    problems.extend(_macro_references(rules))
    problems.extend(
        check_automations(
            rules.automations,
            macros=[macro.name for macro in rules.macros],
            teams=list(teams),
            calendars=list(rules.calendars),
            agents=sorted(everyone),
        )
    )
    return problems


def _macro_references(rules: Rules) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for n, macro in enumerate(rules.macros):
        if macro.name in seen:
            problems.append(f"macros.{n}.name: {macro.name!r} is used by another macro")
        seen.add(macro.name)
        for tag in macro.actions.add_tags:
            if tag not in rules.tags:
                problems.append(
                    f"macros.{n}.actions.add_tags: unknown tag {tag!r} (list it under tags:)"
                )
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


class _RulesLoader(yaml.SafeLoader):
    """YAML as written by people: only true and false are booleans. PyYAML follows YAML 1.1,
    where a bare on, off, yes or no is one too, which would turn an automation's ``on:`` key
    into ``True`` (and the language tag ``no:`` into ``False``)."""


_RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RulesLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def read_yaml(text: str) -> Any:
    """rules.yaml's text as data, with only true and false read as booleans."""
    return yaml.load(text, Loader=_RulesLoader)  # a SafeLoader: no Python objects


def load_rules(path: Path) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: file not found (set DESK_RULES to its path)") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(data, str(path))
