"""The agent's App Home: their availability, their tickets, the tickets waiting in their teams.

Slack shows the Home tab of an app to each user separately; the app fills it with
``views.publish`` (Tier 4, at most 100 blocks). The desk publishes a person's Home when they
open it (``app_home_opened``, tab ``home``) and again after every change that concerns them:
a ticket they hold or held, a ticket of one of their teams (new, claimed, assigned, transferred,
resolved), their availability; a supervisor's Home also after any change to the desk's totals.

How it stays both current and cheap:

* Only people who opened the Home at least once (``home_views``) are published to.
* A refresh is an outbox row (kind ``slack_home``): durable like every other thing the desk
  says, so a crash between the change and the publish loses nothing.
* The row carries no view. The view is drawn from the database when the row is sent, so the
  last state always wins, and a row waits ``HOME_DEBOUNCE`` before it is due: every change in
  that window finds the row still pending and adds nothing (one publish per agent per window,
  however busy the desk). A change made while a publish is in flight queues one more row, which
  waits behind it (rows of one destination go out in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.core.assignment import Assigner
from bot.core.roles import has_role
from bot.core.step import Step
from bot.core.tickets import Desk
from bot.domain.events import AgentAction, HomeEvent
from bot.domain.mrkdwn import PRIORITY_ICON, age, escape, slack_date
from bot.domain.outbound import ChannelSender, Outbound
from bot.domain.rules import Rules
from bot.domain.tickets import ACTIVE, CHANNEL_NAME, PRIORITY_RANK
from bot.workspace.cards import card_link
from bot.workspace.window_line import whatsapp_window
from storage.models import Agent, Customer, HomeView, OutboxRow, Ticket
from storage.statements import Statement

HOME_DEBOUNCE = timedelta(seconds=2)  # at most one views.publish per person in this window
MAX_BLOCKS = 100  # views.publish refuses a Home view with more
MAX_MINE = 30  # my tickets listed one per block; the rest counted under "…"
MAX_WAITING = 20  # unassigned tickets of my teams, each with its Claim button
ACTION_AVAILABILITY = "home_availability"
ACTION_CLAIM = "home_claim"


def home_key(user: str) -> str:
    """The outbox order key of one person's Home (their publishes go out one after another)."""
    return f"slack:home:{user}"


# --------------------------------------------------------------------------------------------
# Who is concerned by a step


_VIEWERS = Statement(select(HomeView.user_id))  # read by most steps: built once


async def concerned(desk: Step) -> set[str]:
    """The people with a Home whose Home this step changed."""
    if not (desk.home_people or desk.home_teams):
        return set()
    homes = {user for (user,) in await _VIEWERS.rows(desk.s)}
    if not homes:
        return set()
    rules = desk.rules
    found = homes & desk.home_people
    teams = [rules.team(t) for t in desk.home_teams if t]
    for user in homes - found:
        if any(not t.agents or user in t.agents or t.lead == user for t in teams):
            found.add(user)
        elif teams and await has_role(desk.s, rules, user, "supervisor"):
            found.add(user)  # the desk's totals changed
    return found


async def queue_refreshes(desk: Step) -> None:
    """Say "publish this person's Home" for each person concerned, unless a publish of theirs
    is still waiting to go (it will draw the Home as it is then: this change included)."""
    users = await concerned(desk)
    if not users:
        return
    if desk.home_now:
        # The person at the Home tab (who opened it or clicked on it) sees it at once: a
        # publish of theirs still waiting out the debounce is made due now.
        await desk.s.execute(
            update(OutboxRow)
            .where(
                OutboxRow.destination_key.in_([home_key(u) for u in desk.home_now]),
                OutboxRow.status == "pending",
            )
            .values(next_attempt_at=desk.now)
        )
    waiting = set(
        (
            await desk.s.scalars(
                select(OutboxRow.destination_key).where(
                    OutboxRow.destination_key.in_([home_key(u) for u in users]),
                    OutboxRow.status == "pending",
                )
            )
        ).all()
    )
    for user in sorted(users):
        if home_key(user) not in waiting:
            # A Home waits a moment, so that changes close together publish it once.
            due = desk.now if user in desk.home_now else desk.now + HOME_DEBOUNCE
            desk.fx.say(Outbound(channel="slack", kind="slack_home", destination=user), due=due)


# --------------------------------------------------------------------------------------------
# Events from the Home tab


async def home_event(desk: Desk, ev: HomeEvent) -> None:
    desk.home_now.add(ev.user_id)
    match ev.action:
        case "opened":
            row = await desk.s.get(HomeView, ev.user_id)
            if row is None:
                desk.s.add(HomeView(user_id=ev.user_id, opened_at=desk.now))
            else:
                row.opened_at = desk.now
            desk.home_people.add(ev.user_id)
            desk.decided("home.opened user=%s", ev.user_id)
        case "available" | "away":
            await Assigner(desk).set_available(ev.user_id, ev.action == "available")
            desk.home_people.add(ev.user_id)
        case "claim":
            if ev.ticket_id is None:
                return
            ticket = await desk.s.get(Ticket, ev.ticket_id)
            if ticket is None:
                return
            if (
                ticket.team not in desk.rules.teams_of(ev.user_id)
                and desk.rules.team(ticket.team).agents
            ):
                desk.home_people.add(ev.user_id)  # a stale Home: show it as it is
                return
            await desk.agent_action(
                AgentAction(
                    external_id=ev.external_id,
                    conversation=ev.conversation,
                    action="claim",
                    ticket_id=ev.ticket_id,
                    user_id=ev.user_id,
                    user_name=ev.user_name,
                    slack_channel=ticket.slack_channel,
                    message_ts=ticket.slack_ts or "",
                )
            )
            desk.home_people.add(ev.user_id)


# --------------------------------------------------------------------------------------------
# Drawing the Home


def sla_due(sla: dict[str, Any] | None) -> datetime | None:
    """The earliest due time of the ticket's running SLA clocks, if any."""
    dues = []
    for clock in (sla or {}).values():
        if isinstance(clock, dict) and clock.get("state") in ("running", "breached"):
            due = clock.get("due")
            if isinstance(due, str):
                dues.append(datetime.fromisoformat(due))
    return min(dues) if dues else None


def urgency(ticket: Ticket) -> tuple[int, float, float]:
    """Most urgent first: priority, then the nearest SLA due time, then the oldest."""
    due = sla_due(ticket.sla)
    return (
        PRIORITY_RANK.get(ticket.priority, 2),
        due.timestamp() if due is not None else float("inf"),
        ticket.created_at.timestamp(),
    )


def ticket_line(ticket: Ticket, customer: str, now: datetime, team_domain: str) -> str:
    link = card_link(ticket, team_domain)
    ref = f"<{link}|#{ticket.id}>" if link else f"#{ticket.id}"
    icon = PRIORITY_ICON.get(ticket.priority, "")
    parts = [
        f"*{ref}* {icon} {ticket.priority}".replace("  ", " "),
        CHANNEL_NAME.get(ticket.channel, ticket.channel),
        escape(customer[:80]),
        age(now - ticket.created_at),
    ]
    if ticket.status == "pending":
        parts.append("waiting on the customer")
    due = sla_due(ticket.sla)
    if due is not None:
        parts.append(("🚨 SLA was due " if due <= now else "SLA due ") + slack_date(due))
    subject = " ".join(ticket.subject.split())
    line = " · ".join(parts)
    if subject:
        line += "\n> " + escape(subject[:150] + ("…" if len(subject) > 150 else ""))
    return line


def _section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


async def _customers(s: AsyncSession, tickets: Iterable[Ticket]) -> dict[int, str]:
    ids = {t.customer_id for t in tickets}
    if not ids:
        return {}
    rows = await s.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids)))
    return {cid: name for cid, name in rows.all()}


async def home_view(
    s: AsyncSession, rules: Rules, user: str, now: datetime, team_domain: str = ""
) -> dict[str, Any]:
    """The Home view of ``user`` as the database has it now (a views.publish ``view``)."""
    teams = rules.teams_of(user)
    agent = await s.get(Agent, user)
    available = bool(agent and agent.available)
    mine = sorted(
        (
            await s.scalars(
                select(Ticket).where(Ticket.assignee_id == user, Ticket.status.in_(ACTIVE))
            )
        ).all(),
        key=urgency,
    )
    open_teams = [name for name, team in rules.all_teams.items() if not team.agents]
    waiting: Sequence[Ticket] = []
    if teams or open_teams:
        waiting = sorted(
            (
                await s.scalars(
                    select(Ticket).where(
                        Ticket.team.in_([*teams, *open_teams]),
                        Ticket.assignee_id.is_(None),
                        Ticket.status.in_(ACTIVE),
                    )
                )
            ).all(),
            key=urgency,
        )
    names = await _customers(s, [*mine[:MAX_MINE], *waiting[:MAX_WAITING]])
    working = sum(1 for t in mine if t.status != "pending")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Your support desk"}},
        _context(
            f"*{working}* open for you · *{len(mine) - working}* waiting on the customer · "
            f"*{len(waiting)}* unassigned in your teams"
            + (f" ({', '.join(escape(t) for t in teams)})" if teams else "")
        ),
        _section(
            "🟢 You are *available*: new tickets of your teams may be given to you."
            if available
            else "⚪ You are *away*: nothing is given to you automatically.",
            {
                "type": "button",
                "action_id": ACTION_AVAILABILITY,
                "text": {"type": "plain_text", "text": "Go away" if available else "Go available"},
                "value": "away" if available else "available",
                **({} if available else {"style": "primary"}),
            },
        ),
    ]
    if await has_role(s, rules, user, "supervisor"):
        blocks.append(await _desk_totals(s, now))
    blocks.append({"type": "divider"})
    blocks.append(_section(f"*My open tickets* ({len(mine)})"))
    if not mine:
        blocks.append(_context("Nothing assigned to you right now."))
    for ticket in mine[:MAX_MINE]:
        line = ticket_line(ticket, names.get(ticket.customer_id, ""), now, team_domain)
        if (window := await whatsapp_window(s, rules, now, ticket)) is not None:
            line += "\n" + window
        blocks.append(_section(line))
    if len(mine) > MAX_MINE:
        blocks.append(_context(f"… and {len(mine) - MAX_MINE} more (least urgent not shown)"))
    blocks.append({"type": "divider"})
    blocks.append(_section(f"*Waiting in your teams* ({len(waiting)})"))
    if not waiting:
        blocks.append(_context("No ticket is waiting for someone to take it."))
    for ticket in waiting[:MAX_WAITING]:
        blocks.append(
            _section(
                ticket_line(ticket, names.get(ticket.customer_id, ""), now, team_domain),
                {
                    "type": "button",
                    "action_id": ACTION_CLAIM,
                    "text": {"type": "plain_text", "text": "Claim"},
                    "value": str(ticket.id),
                    "style": "primary",
                },
            )
        )
    if len(waiting) > MAX_WAITING:
        blocks.append(_context(f"… and {len(waiting) - MAX_WAITING} more waiting"))
    blocks.append(_context(f"Updated {slack_date(now)}"))
    assert len(blocks) <= MAX_BLOCKS
    return {"type": "home", "blocks": blocks}


async def _desk_totals(s: AsyncSession, now: datetime) -> dict[str, Any]:
    by_status = dict(
        (
            await s.execute(
                select(Ticket.status, func.count())
                .where(Ticket.status.in_(ACTIVE))
                .group_by(Ticket.status)
            )
        ).all()
    )
    unassigned = int(
        await s.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.status.in_(ACTIVE), Ticket.assignee_id.is_(None))
        )
        or 0
    )
    urgent = int(
        await s.scalar(
            select(func.count())
            .select_from(Ticket)
            .where(Ticket.status.in_(ACTIVE), Ticket.priority == "urgent")
        )
        or 0
    )
    return _section(
        "*The desk* · "
        f"{by_status.get('new', 0)} new · {by_status.get('open', 0)} open · "
        f"{by_status.get('pending', 0)} waiting on customers · {unassigned} unassigned · "
        f"{urgent} urgent"
    )


class HomeRenderer:
    """The outbox's renderer for ``slack_home`` rows: a Home is drawn when it is sent, from the
    database as it is then."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], rules: Rules, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock

    def wants(self, out: Outbound) -> bool:
        return out.kind == "slack_home"

    async def render(self, out: Outbound, row_id: int, sender: ChannelSender | None) -> Outbound:
        domain = ""
        find_domain = getattr(sender, "workspace_domain", None)
        if find_domain is not None:
            try:
                domain = await find_domain()
            except Exception:  # links then open the channel instead of the card
                domain = ""
        async with self._sessions() as session:
            view = await home_view(session, self._rules, out.destination, self._clock.now(), domain)
        return out.model_copy(update={"blocks": tuple(view["blocks"])})
