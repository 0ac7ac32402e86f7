"""``/desk``: the state of the desk and its tickets, counted from the tables (never from a cache).

Each subcommand is one entry in :data:`SUBCOMMANDS` (its name, one line of help, the function
that answers it); ``/desk help`` and the answer to an unknown subcommand are made from that
table, so adding a subcommand is adding an entry.

Answers go back through the slash command's ``response_url`` as mrkdwn text. Slack truncates
text past 40,000 characters and advises staying under 4,000, so lists are clipped to
:data:`MAX_CHARS` with "… and N more".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.base.settings import desk_tz
from bot.core.assignment import Assigner
from bot.core.roles import has_role
from bot.core.tickets import Desk
from bot.customers import linking as customers
from bot.customers import privacy
from bot.domain.events import SlashCommand
from bot.domain.mrkdwn import PRIORITY_ICON, escape
from bot.domain.outbound import Outbound
from bot.domain.tickets import ACTIVE
from bot.incidents.command import INCIDENT_HELP, incident_command
from bot.reports.charts import chart_data
from bot.reports.command import current_agents
from bot.reports.export import tickets_csv
from bot.reports.metrics import (
    GROUP_KEYS,
    PeriodError,
    build,
    load_histories,
    parse_period,
    self_service,
)
from bot.reports.render import metric_lines, self_service_line, slack_blocks, title
from bot.workspace.cards import card_link
from storage.models import AuditEntry, Customer, Ticket
from storage.queues import inbox_lag_seconds, outbox_backlog

log = logging.getLogger("deskbot.supervisor")

ORDER = ("urgent", "high", "normal", "low")
STATUS_NAME = {"new": "unclaimed", "open": "open", "pending": "waiting on the customer"}
MAX_CHARS = 3500  # under Slack's advised 4,000, with room for the "… and N more" line
MAX_ITEMS = 30  # a list longer than this is not read anyway; /desk status has the counts


@dataclass(frozen=True, slots=True)
class Invocation:
    """One ``/desk`` typed by someone: what a subcommand may use to answer.

    ``desk`` is the state machine of the dispatcher's step: a subcommand that changes
    something (``available``) does it there, in the step's one transaction.
    """

    desk: Desk
    user_id: str
    args: str  # whatever followed the subcommand's name
    team_domain: str = ""  # the workspace's subdomain, for links to cards
    channel: str = ""  # the Slack conversation where the command was typed

    @property
    def session(self) -> AsyncSession:
        return self.desk.s

    @property
    def now(self) -> datetime:
        return self.desk.now


@dataclass(frozen=True, slots=True)
class Subcommand:
    help: str  # one line, shown by /desk help
    run: Callable[[Invocation], Awaitable[str]]


DEFAULT = "status"  # what a bare /desk does


class Answer(str):
    """An answer's mrkdwn text (also the notification fallback) with its Block Kit blocks."""

    blocks: tuple[dict[str, Any], ...]

    def __new__(cls, text: str, blocks: Sequence[dict[str, Any]] = ()) -> Answer:
        answer = super().__new__(cls, text)
        answer.blocks = tuple(blocks)
        return answer


async def desk_command(desk: Desk, command: SlashCommand) -> str:
    word, _, rest = command.text.strip().partition(" ")
    name = word.lower() or DEFAULT
    sub = SUBCOMMANDS.get(name)
    log.info("desk.command user=%s subcommand=%s", command.user_id, name if sub else "unrecognised")
    if sub is None:
        shown = escape(word.replace("`", ""))[:40]
        return f"`/desk {shown}` is not a /desk command.\n\n" + help_text()
    return await sub.run(
        Invocation(desk, command.user_id, rest.strip(), command.team_domain, command.slack_channel)
    )


# -- the subcommands -------------------------------------------------------------------------


async def answer_command(desk: Desk, command: SlashCommand) -> None:
    """``/desk …``: the answer, seen only by whoever typed it (its ``response_url``)."""
    text = await desk_command(desk, command)
    if command.response_url:
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_response",
                destination=command.response_url,
                text=text,
                blocks=text.blocks if isinstance(text, Answer) else (),
            )
        )


async def desk_status(session: AsyncSession, now: datetime, _args: str = "") -> str:
    rows = (
        await session.execute(
            select(Ticket.status, Ticket.priority, func.count())
            .where(Ticket.status.in_(ACTIVE))
            .group_by(Ticket.status, Ticket.priority)
        )
    ).all()
    by_status: dict[str, int] = {}
    by_priority: dict[str, int] = {}
    for status, priority, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        by_priority[priority] = by_priority.get(priority, 0) + count
    total = sum(by_status.values())
    lag = await inbox_lag_seconds(session, now)
    backlog = await outbox_backlog(session)
    lines = [
        f"*Desk status* · {total} active tickets",
        "• unclaimed (new): {new} · open: {open} · waiting on customer: {pending}".format(
            new=by_status.get("new", 0),
            open=by_status.get("open", 0),
            pending=by_status.get("pending", 0),
        ),
        "• by priority: " + " · ".join(f"{p} {by_priority.get(p, 0)}" for p in ORDER),
        f"• inbox lag {lag:.1f} s · outbox backlog {backlog}",
    ]
    return "\n".join(lines)


async def is_agent(inv: Invocation) -> bool:
    """A member of a team, or a supervisor. With no team listing its agents (Claim-only desks),
    the desk cannot tell agents apart, and everyone in its channels is one."""
    members = {a for team in inv.desk.rules.all_teams.values() for a in team.agents}
    return not members or inv.user_id in members or await is_supervisor(inv)


async def _status(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk status", "agent")
    return await desk_status(inv.session, inv.now)


async def _mine(inv: Invocation) -> str:
    where = (Ticket.assignee_id == inv.user_id, Ticket.status.in_(ACTIVE))
    urgent_first = case({p: n for n, p in enumerate(ORDER)}, value=Ticket.priority, else_=99)
    total, rows = await _tickets(inv.session, where, (urgent_first, Ticket.created_at, Ticket.id))
    if not total:
        return "You have no open tickets."
    lines = [
        f"{_ref(t, inv.team_domain)} {_priority(t)} · {STATUS_NAME.get(t.status, t.status)}"
        f" · {_age(inv.now - t.created_at)} old · {escape(name)}"
        for t, name in rows
    ]
    return _listing(f"*Your open tickets* · {total}, most urgent first", lines, total)


async def _queue(inv: Invocation) -> str:
    if not await is_agent(inv):  # it names customers
        return refuse(inv, "/desk queue", "agent")
    where = (Ticket.assignee_id.is_(None), Ticket.status.in_(ACTIVE))
    total, rows = await _tickets(inv.session, where, (Ticket.created_at, Ticket.id))
    if not total:
        return "Nothing waiting: every active ticket is claimed."
    lines = [
        f"{_ref(t, inv.team_domain)} {_priority(t)} · waiting {_age(inv.now - t.created_at)}"
        f" · {escape(name)}"
        for t, name in rows
    ]
    return _listing(f"*Unclaimed tickets* · {total}, oldest first", lines, total)


async def _available(inv: Invocation) -> str:
    inv.desk.decided("agents.available agent=%s", inv.user_id)
    return await Assigner(inv.desk).set_available(inv.user_id, True)


async def _away(inv: Invocation) -> str:
    inv.desk.decided("agents.away agent=%s", inv.user_id)
    return await Assigner(inv.desk).set_available(inv.user_id, False)


async def _help(inv: Invocation) -> str:
    return help_text()


# -- supervisors' figures and the audit trail -------------------------------------------------


async def is_supervisor(inv: Invocation) -> bool:
    return await has_role(inv.session, inv.desk.rules, inv.user_id, "supervisor")


async def is_admin(inv: Invocation) -> bool:
    return await has_role(inv.session, inv.desk.rules, inv.user_id, "admin")


def audit(inv: Invocation, action: str, target: str, **detail: Any) -> None:
    """A privileged action or a refusal, in the step's transaction: no answer, no entry."""
    inv.session.add(
        AuditEntry(at=inv.now, actor=inv.user_id, action=action, target=target, detail=detail)
    )


def refuse(inv: Invocation, command: str, role: str) -> str:
    audit(inv, "refused", command, needs=role)
    inv.desk.decided("desk.refused user=%s command=%s needs=%s", inv.user_id, command, role)
    return f"`{command}` is for {role}s only; nothing was done." + (
        " An admin can add you to a team in rules.yaml."
        if role == "agent"
        else " An admin can add you under `roles:` in rules.yaml."
    )


def _stats_args(args: str) -> tuple[str, str | None]:
    """``[period] [by KEY]`` → (period, key); the key is checked by the caller."""
    words = args.split()
    by = None
    if len(words) >= 2 and words[-2].lower() == "by":
        by = words[-1].lower()
        words = words[:-2]
    return " ".join(words), by


async def _stats(inv: Invocation) -> str:
    command = f"/desk stats {inv.args}".strip()
    if not await is_supervisor(inv):
        return refuse(inv, "/desk stats", "supervisor")
    period_text, by = _stats_args(inv.args)
    if by is not None and by not in GROUP_KEYS:
        return f"Cannot group by `{escape(by)}`: use one of {', '.join(GROUP_KEYS)}."
    try:
        period = parse_period(period_text, inv.now, desk_tz())
    except PeriodError as exc:
        return escape(str(exc))
    agents = current_agents(inv.desk.rules)
    histories = await load_histories(inv.session, period.start, period.end)
    figures = build(histories, period, inv.now, by, agents)
    figures["self_service"] = await self_service(inv.session, period.start, period.end)
    if inv.channel:
        # The charts' numbers come from the same histories as the figures, so the pictures can
        # never disagree with the answer; the outbox sender draws and uploads them.
        inv.desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_charts",
                destination=inv.channel,
                text=f"{title(figures)} · charts for <@{inv.user_id}>",
                chart=chart_data(histories, period, inv.now, agents),
            )
        )
    audit(inv, "stats", command, period=[figures["from"], figures["to"]], by=by)
    inv.desk.decided(
        "desk.stats user=%s from=%s to=%s", inv.user_id, figures["from"], figures["to"]
    )
    text = "\n".join(
        [
            f"*{escape(title(figures))}*",
            *map(escape, metric_lines(figures["metrics"])),
            *([escape(kb)] if (kb := self_service_line(figures)) else []),
        ]
    )
    return Answer(text, slack_blocks(figures))


async def _export(inv: Invocation) -> str:
    command = f"/desk export {inv.args}".strip()
    if not await is_supervisor(inv):
        return refuse(inv, "/desk export", "supervisor")
    try:
        period = parse_period(inv.args, inv.now, desk_tz())
    except PeriodError as exc:
        return escape(str(exc))
    content, count = await tickets_csv(inv.session, period)
    span = (
        period.first.isoformat()
        if period.first == period.last
        else (f"{period.first}..{period.last}")
    )
    # To the person, not the channel: the file names customers' chats and who served them.
    inv.desk.fx.say(
        Outbound(
            channel="slack",
            kind="slack_file",
            destination=inv.user_id,
            text=content,
            file_name=f"tickets-{span}.csv",
            file_title=f"Tickets created {span} ({period.tz.key}) · {count}",
        )
    )
    audit(inv, "export", command, period=[span], tickets=count)
    inv.desk.decided("desk.export user=%s span=%s tickets=%d", inv.user_id, span, count)
    return (
        f"Exporting {count} tickets created {span} ({period.tz.key}):"
        f" the CSV arrives in your direct messages with the app."
    )


async def _audit(inv: Invocation) -> str:
    if not await is_admin(inv):
        return refuse(inv, "/desk audit", "admin")
    try:
        period = parse_period(inv.args, inv.now, desk_tz())
    except PeriodError as exc:
        return escape(str(exc))
    where = (AuditEntry.at >= period.start, AuditEntry.at < period.end)
    total = int(
        await inv.session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    )
    rows = (
        await inv.session.scalars(
            select(AuditEntry)
            .where(*where)
            .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            .limit(MAX_ITEMS)
        )
    ).all()
    span = (
        period.first.isoformat()
        if period.first == period.last
        else (f"{period.first}..{period.last}")
    )
    if not total:
        return f"Nothing in the audit trail for {span} ({period.tz.key})."
    lines = [
        f"{e.at.astimezone(period.tz):%Y-%m-%d %H:%M} <@{e.actor}> {escape(e.action)}"
        f" `{escape(e.target.replace('`', ''))}`{_whose(e.detail)}"
        for e in rows
    ]
    audit(inv, "audit", f"/desk audit {inv.args}".strip())
    return _listing(f"*Audit trail* {span} ({period.tz.key}) · {total}, newest first", lines, total)


def _whose(detail: dict[str, Any]) -> str:
    """For a change to another person's ticket: whose it was, and in what role it was done."""
    assignee, role = detail.get("assignee"), detail.get("role")
    if not isinstance(assignee, str) or not isinstance(role, str):
        return ""
    team = detail.get("team")
    to = f" to team {escape(team)}" if isinstance(team, str) else ""
    wanted = detail.get("wanted")
    if isinstance(wanted, str):  # a refused change: what they wanted to do
        return f": wanted it {escape(wanted)}{to}, assigned to <@{assignee}>"
    return f"{to}, assigned to <@{assignee}>, as {escape(role)}"


# -- a customer's data -------------------------------------------------------------------------

FORGET_ACTION = "desk_forget"  # the confirmation button; the Slack adapter maps it back here


async def _customer_export(inv: Invocation) -> str:
    if not await is_supervisor(inv):
        return refuse(inv, "/desk customer-export", "supervisor")
    if not inv.args:
        return (
            "Say whose data: `/desk customer-export 123` (a ticket number) or `c45` (a customer)."
        )
    try:
        customer = await privacy.find_customer(inv.session, inv.args.split()[0])
    except privacy.NotFound as exc:
        return escape(str(exc)) + "."
    data = await privacy.export(inv.session, customer)
    # To the person who asked, never a channel: it is everything the desk knows about someone.
    inv.desk.fx.say(
        Outbound(
            channel="slack",
            kind="slack_file",
            destination=inv.user_id,
            text=privacy.export_json(data),
            file_name=privacy.export_name(customer),
            file_title=f"Everything held about customer c{customer.id}",
        )
    )
    audit(inv, "customer-export", f"customer c{customer.id}", tickets=len(data["tickets"]))
    inv.desk.decided("desk.customer_export user=%s customer=%d", inv.user_id, customer.id)
    return (
        f"Exporting customer c{customer.id} ({len(data['tickets'])} tickets): the JSON file"
        " arrives in your direct messages with the app."
    )


async def _forget(inv: Invocation) -> str:
    if not await is_admin(inv):
        return refuse(inv, "/desk forget", "admin")
    words = inv.args.split()
    if not words:
        return "Say whose data: `/desk forget 123` (a ticket number) or `c45` (a customer)."
    try:
        customer = await privacy.find_customer(inv.session, words[0])
    except privacy.NotFound as exc:
        return escape(str(exc)) + "."
    ref = f"c{customer.id}"
    if customer.name == privacy.FORGOTTEN_NAME:
        return f"Customer {ref} has already been forgotten."
    confirmed = words[1:] == ["confirm"]
    if not confirmed:
        held = await privacy.held(inv.session, customer)
        # The question names no one: answers are stored, and this one must not outlive them.
        text = (
            f"*Forget customer {ref}?* (tickets {held.ticket_refs})"
            f" This erases their name, platform ids and phone numbers ({held.identities}"
            f" identities), the text and files of {held.messages} messages in {held.tickets}"
            f" tickets, and {held.payloads} raw platform payloads; their cards and the desk's"
            " posts in the threads are redacted. Counts stay in the reports. It cannot be undone."
            + (
                f" {held.agent_messages} messages agents wrote in the threads stay: Slack lets"
                " only their authors delete them."
                if held.agent_messages
                else ""
            )
        )
        button: dict[str, Any] = {
            "type": "button",
            "action_id": FORGET_ACTION,
            "text": {"type": "plain_text", "text": f"Forget customer {ref}"},
            "style": "danger",
            "value": ref,
            "confirm": {
                "title": {"type": "plain_text", "text": "Forget this customer?"},
                "text": {
                    "type": "mrkdwn",
                    "text": f"Customer {ref}'s personal data is erased for good.",
                },
                "confirm": {"type": "plain_text", "text": "Forget"},
                "deny": {"type": "plain_text", "text": "Keep"},
                "style": "danger",
            },
        }
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "block_id": "forget", "elements": [button]},
        ]
        return Answer(text, blocks)
    held = await privacy.forget(inv.desk, customer)
    audit(
        inv,
        "forgot",
        f"customer {ref}",
        tickets=held.tickets,
        messages=held.messages,
        identities=held.identities,
        payloads=held.payloads,
    )
    inv.desk.decided("desk.forgot user=%s customer=%d", inv.user_id, customer.id)
    return (
        f"Customer {ref} is forgotten: {held.identities} identities, {held.messages} messages"
        f" in {held.tickets} tickets and {held.payloads} raw payloads erased; their cards and"
        " threads in Slack are being redacted."
    )


# -- one customer across channels ------------------------------------------------------------


async def _link(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk link", "agent")
    number = inv.args.strip().removeprefix("#")
    ticket = await inv.session.get(Ticket, int(number)) if number.isdigit() else None
    if ticket is None:
        return "Say which ticket: `/desk link 123`."
    if ticket.channel != "telegram":
        return (
            f"Ticket #{ticket.id} is on {ticket.channel}: its number is known already."
            " Ask on the customer's Telegram ticket."
        )
    customer = await inv.session.get_one(Customer, ticket.customer_id)
    customers.ask_for_number(inv.desk, ticket.channel, ticket.chat_id, customer.language)
    inv.desk.thread(
        ticket, f"🔗 <@{inv.user_id}> asked the customer to share their phone number to link chats."
    )
    return f"Asked the customer of #{ticket.id} to share their number with Telegram's button."


async def _unlink(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk unlink", "agent")
    words = inv.args.split()
    if len(words) != 2 or words[1].lower() not in ("telegram", "whatsapp"):
        return "Say whose and which channel: `/desk unlink c45 whatsapp` (or a ticket number)."
    try:
        customer = await privacy.find_customer(inv.session, words[0])
        split = await customers.unlink(inv.desk, customer.id, words[1].lower(), actor=inv.user_id)
    except (privacy.NotFound, customers.UnlinkError) as exc:
        return escape(str(exc)) + "."
    inv.desk.decided("customers.unlinked customer=%d new=%d", customer.id, split)
    return (
        f"Unlinked: customer c{customer.id}'s {words[1].lower()} identity is customer c{split} now."
    )


async def _incident(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk incident", "agent")
    return await incident_command(inv.desk, inv.user_id, inv.args)


SUBCOMMANDS: dict[str, Subcommand] = {
    "status": Subcommand(
        "the desk in numbers: active tickets by state and priority, inbox lag, outbox backlog"
        " (also plain `/desk`)",
        _status,
    ),
    "mine": Subcommand(
        "your open tickets, most urgent first: number (a link to its card), priority, status, age",
        _mine,
    ),
    "queue": Subcommand("unclaimed tickets, oldest first, with how long each has waited", _queue),
    "available": Subcommand(
        "take tickets again: automatic assignment gives you your teams' waiting tickets",
        _available,
    ),
    "away": Subcommand(
        "take no new tickets; rules.yaml says whether your open ones move to others", _away
    ),
    "stats": Subcommand(
        "supervisors: the figures of `today`, `yesterday`, `7d`, `30d` or"
        " `YYYY-MM-DD..YYYY-MM-DD`, optionally `by agent|channel|priority|intent|team|language`",
        _stats,
    ),
    "export": Subcommand(
        "supervisors: the tickets created in a period (default today) as a CSV file, sent to"
        " you in a direct message",
        _export,
    ),
    "audit": Subcommand(
        "admins: who asked for figures, and who was refused, in a period (default today)",
        _audit,
    ),
    "link": Subcommand(
        "agents: ask a Telegram ticket's customer to share their verified phone number, to be"
        " recognised on WhatsApp too (`/desk link 123`)",
        _link,
    ),
    "unlink": Subcommand(
        "agents: undo a wrong link (`/desk unlink c45 whatsapp`): that channel becomes a"
        " customer of its own",
        _unlink,
    ),
    "customer-export": Subcommand(
        "supervisors: everything held about a customer (`123`: a ticket's, `c45`: by id) as a"
        " JSON file, sent to you in a direct message",
        _customer_export,
    ),
    "forget": Subcommand(
        "admins: erase a customer's personal data (`123` or `c45`), after a confirmation",
        _forget,
    ),
    "incident": Subcommand(INCIDENT_HELP, _incident),
    "help": Subcommand("this list", _help),
}


def help_text() -> str:
    lines = ["*`/desk` commands*"]
    lines += [f"• `/desk {name}`: {sub.help}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


# -- shared pieces ---------------------------------------------------------------------------


async def _tickets(
    session: AsyncSession, where: Sequence[Any], order: Sequence[Any]
) -> tuple[int, list[tuple[Ticket, str]]]:
    """How many match, and the first :data:`MAX_ITEMS` of them with their customer's name."""
    total = int(await session.scalar(select(func.count()).select_from(Ticket).where(*where)) or 0)
    rows = (
        await session.execute(
            select(Ticket, Customer.name)
            .join(Customer, Customer.id == Ticket.customer_id)
            .where(*where)
            .order_by(*order)
            .limit(MAX_ITEMS)
        )
    ).all()
    return total, [(t, name) for t, name in rows]


def _listing(header: str, lines: list[str], total: int) -> str:
    """``header`` and as many ``lines`` as fit in :data:`MAX_CHARS`, then "… and N more"."""
    shown = [header]
    size = len(header)
    for line in lines:
        if size + len(line) + 3 > MAX_CHARS:
            break
        shown.append("• " + line)
        size += len(line) + 3
    more = total - (len(shown) - 1)
    if more > 0:
        shown.append(f"… and {more} more")
    return "\n".join(shown)


def _ref(ticket: Ticket, team_domain: str) -> str:
    link = card_link(ticket, team_domain)
    return f"<{link}|#{ticket.id}>" if link else f"#{ticket.id} (card not posted yet)"


def _priority(ticket: Ticket) -> str:
    return f"{PRIORITY_ICON.get(ticket.priority, '')} {ticket.priority}".strip()


def _age(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds()) // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
