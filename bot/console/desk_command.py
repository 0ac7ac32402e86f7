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
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.automations.views import overview as automations_overview
from bot.base.settings import desk_tz
from bot.console.customer_data import (
    customer_export,
    forget_customer,
    link_customer,
    unlink_customer,
)
from bot.console.invocation import (
    MAX_ITEMS,
    Answer,
    Invocation,
    Subcommand,
    audit,
    is_admin,
    is_agent,
    is_supervisor,
    listing,
    refuse,
)
from bot.core.assignment import Assigner
from bot.core.tickets import Desk
from bot.domain.events import SlashCommand
from bot.domain.mrkdwn import PRIORITY_ICON, age, escape
from bot.domain.outbound import Outbound
from bot.domain.routing import SLACK_USER
from bot.domain.tickets import ACTIVE
from bot.domain.words import counted
from bot.incidents.command import INCIDENT_HELP, incident_command
from bot.reports.command import current_agents
from bot.reports.metrics import GROUP_KEYS, PeriodError, parse_period
from bot.reports.offloop import Export, Stats, compute_export, compute_stats, stats_args
from bot.reports.render import metric_lines, self_service_line, slack_blocks, title
from bot.workspace.cards import card_link
from storage.models import AuditEntry, Customer, Ticket
from storage.queues import inbox_lag_seconds, outbox_backlog

log = logging.getLogger("deskbot.supervisor")

ORDER = ("urgent", "high", "normal", "low")
STATUS_NAME = {"new": "unclaimed", "open": "open", "pending": "waiting on the customer"}


DEFAULT = "status"  # what a bare /desk does


async def desk_command(desk: Desk, command: SlashCommand, ready: object = None) -> str:
    word, _, rest = command.text.strip().partition(" ")
    name = word.lower() or DEFAULT
    sub = SUBCOMMANDS.get(name)
    log.info("desk.command user=%s subcommand=%s", command.user_id, name if sub else "unrecognised")
    if sub is None:
        shown = escape(word.replace("`", ""))[:40]
        return f"`/desk {shown}` is not a /desk command.\n\n" + help_text()
    return await sub.run(
        Invocation(
            desk,
            command.user_id,
            rest.strip(),
            command.team_domain,
            command.slack_channel,
            ready if name in ("stats", "export") else None,
        )
    )


# -- the subcommands -------------------------------------------------------------------------


async def answer_command(desk: Desk, command: SlashCommand, ready: object = None) -> None:
    """``/desk …``: the answer, seen only by whoever typed it (its ``response_url``).
    ``ready``: a report worked out before the step, off the event loop (bot/reports/offloop.py).
    """
    text = await desk_command(desk, command, ready)
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
        f"*Desk status* · {counted(total, 'active ticket')}",
        "• unclaimed (new): {new} · open: {open} · waiting on customer: {pending}".format(
            new=by_status.get("new", 0),
            open=by_status.get("open", 0),
            pending=by_status.get("pending", 0),
        ),
        "• by priority: " + " · ".join(f"{p} {by_priority.get(p, 0)}" for p in ORDER),
        f"• inbox lag {lag:.1f} s · outbox backlog {backlog}",
    ]
    return "\n".join(lines)


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
        f" · {age(inv.now - t.created_at)} old · {escape(name)}"
        for t, name in rows
    ]
    return listing(f"*Your open tickets* · {total}, most urgent first", lines, total)


async def _queue(inv: Invocation) -> str:
    if not await is_agent(inv):  # it names customers
        return refuse(inv, "/desk queue", "agent")
    where = (Ticket.assignee_id.is_(None), Ticket.status.in_(ACTIVE))
    total, rows = await _tickets(inv.session, where, (Ticket.created_at, Ticket.id))
    if not total:
        return "Nothing waiting: every active ticket is claimed."
    lines = [
        f"{_ref(t, inv.team_domain)} {_priority(t)} · waiting {age(inv.now - t.created_at)}"
        f" · {escape(name)}"
        for t, name in rows
    ]
    return listing(f"*Unclaimed tickets* · {total}, oldest first", lines, total)


async def _available(inv: Invocation) -> str:
    inv.desk.decided("agents.available agent=%s", inv.user_id)
    return await Assigner(inv.desk).set_available(inv.user_id, True)


async def _away(inv: Invocation) -> str:
    inv.desk.decided("agents.away agent=%s", inv.user_id)
    return await Assigner(inv.desk).set_available(inv.user_id, False)


async def _help(inv: Invocation) -> str:
    return help_text()


# -- supervisors' figures and the audit trail -------------------------------------------------


async def _stats(inv: Invocation) -> str:
    command = f"/desk stats {inv.args}".strip()
    if not await is_supervisor(inv):
        return refuse(inv, "/desk stats", "supervisor")
    period_text, by = stats_args(inv.args)
    if by is not None and by not in GROUP_KEYS:
        return f"Cannot group by `{escape(by)}`: use one of {', '.join(GROUP_KEYS)}."
    try:
        period = parse_period(period_text, inv.now, desk_tz())
    except PeriodError as exc:
        return escape(str(exc))
    stats = inv.ready
    if not (isinstance(stats, Stats) and stats.period == period and stats.by == by):
        # Nothing worked out before the step (or for another day): here, on the loop.
        agents = current_agents(inv.desk.rules)
        stats = await compute_stats(inv.session, period, inv.now, by, agents)
    figures = stats.figures
    if inv.channel:
        # The outbox sender draws and uploads the charts.
        inv.desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_charts",
                destination=inv.channel,
                text=f"{title(figures)} · charts for <@{inv.user_id}>",
                chart=stats.chart,
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
    export = inv.ready
    if not (isinstance(export, Export) and export.period == period):
        export = await compute_export(inv.session, period)
    content, count = export.content, export.count
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
        f"Exporting {counted(count, 'ticket')} created {span} ({period.tz.key}):"
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
        f"{e.at.astimezone(period.tz):%Y-%m-%d %H:%M} {_actor(e.actor)} {escape(e.action)}"
        f" `{escape(e.target.replace('`', ''))}`{_whose(e.detail)}"
        for e in rows
    ]
    audit(inv, "audit", f"/desk audit {inv.args}".strip())
    return listing(f"*Audit trail* {span} ({period.tz.key}) · {total}, newest first", lines, total)


def _actor(actor: str) -> str:
    """A person as a mention; an automation (its rule id) or the desk by name."""
    return f"<@{actor}>" if SLACK_USER.match(actor) else f"*{escape(actor)}*"


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


# -- one customer across channels ------------------------------------------------------------


async def _automations(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk automations", "agent")
    return await automations_overview(inv.session, inv.desk.rules, inv.now)


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
        link_customer,
    ),
    "unlink": Subcommand(
        "agents: undo a wrong link (`/desk unlink c45 whatsapp`, or `email`): that channel"
        " becomes a customer of its own",
        unlink_customer,
    ),
    "customer-export": Subcommand(
        "supervisors: everything held about a customer (`123`: a ticket's, `c45`: by id) as a"
        " JSON file, sent to you in a direct message",
        customer_export,
    ),
    "forget": Subcommand(
        "admins: erase a customer's personal data (`123` or `c45`), after a confirmation",
        forget_customer,
    ),
    "incident": Subcommand(INCIDENT_HELP, _incident),
    "automations": Subcommand(
        "the automations of rules.yaml, how often each fired in the last 7 days, and any"
        " rule suspended on a ticket",
        _automations,
    ),
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


def _ref(ticket: Ticket, team_domain: str) -> str:
    link = card_link(ticket, team_domain)
    return f"<{link}|#{ticket.id}>" if link else f"#{ticket.id} (card not posted yet)"


def _priority(ticket: Ticket) -> str:
    return f"{PRIORITY_ICON.get(ticket.priority, '')} {ticket.priority}".strip()
