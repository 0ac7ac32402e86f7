"""The card's controls: priority, status, reassign, tags and "Correct intent".

Each runs in the dispatcher's transaction like every other ticket change. A change updates the
card (``chat.update``, with new block_ids so Slack's menus show what the desk did), records a
ticket event naming who did it, and says one short line in the card's thread. Someone who is not
an agent of the ticket's team (its ``agents``, its lead, any team's lead, or a supervisor or
admin under ``roles:``) is told so ephemerally and nothing changes.

Tags and corrected intents live in ``ticket_events`` (kinds ``tags`` and ``intent``): the latest
event is the ticket's current value, and every correction, with who made it and what the model
had said, stays there for training the intent model later. No new columns were needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.assignment import Assigner
from bot.core.roles import has_role
from bot.core.tickets import Desk
from bot.domain.events import AgentAction
from bot.domain.mrkdwn import escape, person
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from bot.domain.tickets import ACTIVE
from bot.workspace.cards import PRIORITIES, STATUSES
from storage.models import Ticket, TicketEvent

CONTROL_ACTIONS = frozenset({"priority", "status", "reassign", "tags", "intent"})
STATUS_WORDS = {"open": "open", "pending": "waiting on the customer", "resolved": "resolved"}


async def may_act(s: AsyncSession, rules: Rules, team_name: str, user: str) -> bool:
    """An agent of the ticket's team, any team's lead, or a supervisor/admin (by id or user
    group). A team that lists no agents (the desk without ``teams:``) is everyone's."""
    team = rules.team(team_name)
    if not team.agents or user in team.agents:
        return True
    if any(t.lead == user for t in rules.all_teams.values()):
        return True
    return await has_role(s, rules, user, "supervisor")


def known_intents(rules: Rules, model_intent: str | None) -> tuple[str, ...]:
    """What "Correct intent" offers: the intents rules.yaml knows (priority and company
    intents) and the one the model gave, sorted, at most one Slack menu's worth."""
    names = set(rules.priority.intents) | set(rules.intents)
    if model_intent:
        names.add(model_intent)
    return tuple(sorted(names))[:100]


async def ticket_labels(s: AsyncSession, ticket_id: int) -> tuple[tuple[str, ...], str | None]:
    """The ticket's current tags and corrected intent (the latest event of each kind), read in
    one statement (it runs for every card drawn)."""
    rows = (
        await s.execute(
            select(TicketEvent.kind, TicketEvent.to_value)
            .where(TicketEvent.ticket_id == ticket_id, TicketEvent.kind.in_(("tags", "intent")))
            .order_by(TicketEvent.id.desc())
        )
    ).all()
    latest: dict[str, str | None] = {}
    for kind, value in rows:
        latest.setdefault(kind, value)
    tags: tuple[str, ...] = ()
    if value := latest.get("tags"):
        loaded = json.loads(value)
        tags = tuple(str(t) for t in loaded) if isinstance(loaded, list) else ()
    return tags, latest.get("intent") or None


async def apply_action(desk: Desk, ev: AgentAction) -> None:
    """A pick in one of the card's menus (priority, status, reassign, tags, intent)."""
    ticket = await desk.s.get(Ticket, ev.ticket_id, with_for_update=True)
    if ticket is None:
        return
    await Controls(desk).apply(ticket, ev)


class Controls:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    async def apply(self, ticket: Ticket, ev: AgentAction) -> None:
        desk = self.desk
        if not await may_act(desk.s, desk.rules, ticket.team, ev.user_id):
            self._refuse(ticket, ev, f"🚫 You are not an agent of team *{ticket.team}*")
            await desk.refresh_card(ticket)  # their pick in the menu is undone on screen too
            return
        if ticket.status not in ACTIVE:
            self._refuse(ticket, ev, f"Ticket #{ticket.id} is {ticket.status}")
            return
        who = person(ev.user_id, ev.user_name)
        changed = False
        match ev.action:
            case "priority":
                changed = self._priority(ticket, ev, who)
            case "status":
                changed = await self._status(ticket, ev, who)
                if ev.value == "resolved":
                    return  # the resolve path updated the card and said everything
            case "reassign":
                changed = await self._reassign(ticket, ev, who)
            case "tags":
                changed = await self._tags(ticket, ev, who)
            case "intent":
                changed = await self._intent(ticket, ev, who)
        # Refreshed even when nothing changed: the menus then show the ticket as it is, not
        # what was picked (Slack keeps a pick shown until the block_id changes).
        await desk.refresh_card(ticket)
        desk.decided(
            "tickets.control ticket=%d action=%s by=%s changed=%s",
            ticket.id,
            ev.action,
            ev.user_id,
            changed,
        )

    def _refuse(self, ticket: Ticket, ev: AgentAction, why: str) -> None:
        if ev.response_url:
            self.desk.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_response",
                    destination=ev.response_url,
                    text=f"{why}, so this changes nothing.",
                )
            )
        self.desk.decided(
            "tickets.control_refused ticket=%d action=%s by=%s", ticket.id, ev.action, ev.user_id
        )

    def _priority(self, ticket: Ticket, ev: AgentAction, who: str) -> bool:
        new = ev.value or ""
        if new not in PRIORITIES or new == ticket.priority:
            return False
        old = ticket.priority
        self.desk.history(ticket, "priority", ev.user_id, old, new, "set on the card")
        ticket.priority = new
        ticket.priority_reasons = [
            *ticket.priority_reasons,
            f"set to {new} by {ev.user_name or ev.user_id}",
        ]
        ticket.updated_at = self.desk.now
        self.desk.thread(ticket, f"🎚️ {who} set the priority to *{new}* (was {old}).")
        return True

    async def _status(self, ticket: Ticket, ev: AgentAction, who: str) -> bool:
        desk = self.desk
        new = ev.value or ""
        if new not in STATUSES or new == ticket.status:
            return False
        if new == "resolved":
            # Exactly what the Resolve button does: the customer's closing message and rating.
            await desk.agent_action(ev.model_copy(update={"action": "resolve"}))
            return True
        # Someone else's ticket: for its assignee, the team's lead and supervisors (audited).
        if not await desk.may_override(ticket, ev, f"set to {new}"):
            return False
        if ticket.assignee_id is None:
            # Working on a ticket nobody has means taking it, said as a claim is.
            desk.history(ticket, "assignee", ev.user_id, None, ev.user_id, "set its status")
            ticket.assignee_id, ticket.assignee_name = ev.user_id, ev.user_name or None
            ticket.assigned_by, ticket.waiting_reason = ev.user_id, None
            desk.thread(ticket, f"🙋 {who} claimed this ticket.")
        old = ticket.status
        desk.set_status(ticket, new, ev.user_id, "set on the card")
        desk.thread(ticket, f"🔖 {who} set the status to *{STATUS_WORDS[new]}*.")
        if new == "pending" and old == "open":  # waiting on the customer frees capacity
            await Assigner(desk).fill(desk.rules.teams_of(ticket.assignee_id or ""))
        return True

    async def _reassign(self, ticket: Ticket, ev: AgentAction, who: str) -> bool:
        desk = self.desk
        target = ev.value or ""
        if not target or target == ticket.assignee_id:
            return False
        team = desk.rules.team(ticket.team)
        target_who = person(target, ev.target_name)
        if team.agents and target not in team.agents:
            self._refuse(ticket, ev, f"{target_who} is not an agent of team *{ticket.team}*")
            return False
        if not await desk.may_override(ticket, ev, "reassigned", to=target):
            return False
        old = ticket.assignee_id
        desk.history(ticket, "assignee", ev.user_id, old, target, f"reassigned by {ev.user_id}")
        ticket.assignee_id, ticket.assignee_name = target, ev.target_name or None
        ticket.assigned_by, ticket.waiting_reason = ev.user_id, None
        if ticket.status == "new":
            desk.set_status(ticket, "open", ev.user_id, "reassigned")
        ticket.updated_at = desk.now
        was = f" (was {person(old)})" if old else ""
        desk.thread(ticket, f"👤 {who} gave this ticket to {target_who}{was}.")
        if old is not None:
            await Assigner(desk).fill(desk.rules.teams_of(old))
        return True

    async def _tags(self, ticket: Ticket, ev: AgentAction, who: str) -> bool:
        allowed = self.desk.rules.tags
        new = tuple(t for t in allowed if t in ev.values)  # in rules.yaml's order, known only
        old, _ = await ticket_labels(self.desk.s, ticket.id)
        if new == old:
            return False
        self.desk.history(ticket, "tags", ev.user_id, _dump(old), _dump(new), "set on the card")
        shown = ", ".join(escape(t) for t in new)
        self.desk.thread(
            ticket, f"🏷️ {who} set the tags: {shown}." if new else f"🏷️ {who} removed the tags."
        )
        return True

    async def _intent(self, ticket: Ticket, ev: AgentAction, who: str) -> bool:
        model = (ticket.classification or {}).get("intent")
        label = ev.value or ""
        if label not in known_intents(self.desk.rules, model if isinstance(model, str) else None):
            return False
        _, current = await ticket_labels(self.desk.s, ticket.id)
        if label == current:
            return False
        # from_value is what the model said, so each row is a training example as it stands.
        said = model if isinstance(model, str) else None
        self.desk.history(ticket, "intent", ev.user_id, said, label, "corrected on the card")
        self.desk.thread(
            ticket,
            f"🧠 {who} corrected the intent to *{escape(label)}*"
            + (f" (the model said {escape(said)})." if said else "."),
        )
        return True


def _dump(tags: Sequence[str]) -> str:
    return json.dumps(list(tags), ensure_ascii=False)
