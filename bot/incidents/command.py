"""What agents do with an incident: its card's buttons and ``/desk incident``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.core.roles import has_role
from bot.core.tickets import Desk
from bot.domain.events import AgentAction
from bot.domain.outbound import Outbound
from bot.domain.rules import Rules
from bot.incidents.desk import IncidentDesk, incident_members
from storage.models import Incident, Ticket


async def _may_act(desk: Desk, inc: Incident, user_id: str) -> bool:
    team = desk.rules.team(inc.team)
    if not team.agents or user_id in team.agents or team.lead == user_id:
        return True
    return await has_role(desk.s, desk.rules, user_id, "supervisor")


def _refuse(desk: Desk, response_url: str | None, text: str) -> None:
    if response_url:
        desk.fx.say(
            Outbound(channel="slack", kind="slack_response", destination=response_url, text=text)
        )


async def incident_action(desk: Desk, ev: AgentAction) -> None:
    """An agent's Reply to all affected, Resolve incident or Close on an incident's card."""
    idesk = IncidentDesk(desk)
    inc = await desk.s.get(Incident, ev.incident_id, with_for_update=True)
    if inc is None:
        return
    if inc.status != "open":
        _refuse(desk, ev.response_url, f"Incident #{inc.id} is {inc.status} already.")
        return
    if not await _may_act(desk, inc, ev.user_id):
        _refuse(
            desk,
            ev.response_url,
            f"Incident #{inc.id} belongs to team {inc.team}: only its agents, its lead or a"
            " supervisor can act on it. Nothing was done.",
        )
        return
    who = f"<@{ev.user_id}>"
    if ev.action == "incident_reply":
        await idesk.reply_all(inc, ev.user_id, dict(ev.texts))
    elif ev.action == "incident_resolve":
        members = await incident_members(desk.s, inc, active_only=True)
        for ticket in members:
            await desk.resolve(ticket, ev.user_id, ev.user_name, f"incident #{inc.id} resolved")
        idesk.finish(inc, "resolved", ev.user_id)
        idesk.say_in_thread(
            inc, f"✅ {who} resolved the incident and its {len(members)} open tickets."
        )
    elif ev.action == "incident_close":
        members = await incident_members(desk.s, inc, active_only=True)
        for ticket in members:
            await idesk.release(ticket, inc, ev.user_id, f"incident #{inc.id} closed")
        idesk.finish(inc, "closed", ev.user_id)
        idesk.say_in_thread(
            inc,
            f"🗂️ {who} closed the incident without resolving its tickets; its {len(members)}"
            " open tickets are handled one by one now (those without a card got one).",
        )


INCIDENT_HELP = (
    "agents: `detach 123` (ticket #123 leaves its incident and gets its own card),"
    " `attach 123 7` (ticket #123 joins incident #7), `merge 7 8` (incident #7 into #8)"
)


async def incident_command(desk: Desk, user_id: str, args: str) -> str:
    """``/desk incident detach|attach|merge``: the by-hand changes to incidents."""
    words = args.lower().replace("#", "").split()
    if not words or not all(w.isdigit() for w in words[1:]):
        return f"`/desk incident`: {INCIDENT_HELP}."
    verb, numbers = words[0], [int(w) for w in words[1:]]
    idesk = IncidentDesk(desk)
    who = f"<@{user_id}>"
    if verb == "detach" and len(numbers) == 1:
        ticket = await desk.s.get(Ticket, numbers[0], with_for_update=True)
        if ticket is None or ticket.incident_id is None:
            return f"Ticket #{numbers[0]} is not part of an incident; nothing was done."
        inc = await desk.s.get_one(Incident, ticket.incident_id, with_for_update=True)
        if not await _may_act(desk, inc, user_id):
            return f"Incident #{inc.id} is team {inc.team}'s; nothing was done."
        await idesk.release(ticket, inc, user_id, f"detached by {who}")
        idesk.card_now(inc)
        idesk.say_in_thread(inc, f"🧩 {who} detached ticket #{ticket.id}; it has its own card.")
        return f"Ticket #{ticket.id} left incident #{inc.id}."
    if verb == "attach" and len(numbers) == 2:
        ticket = await desk.s.get(Ticket, numbers[0], with_for_update=True)
        target = await desk.s.get(Incident, numbers[1], with_for_update=True)
        if ticket is None or target is None or target.status != "open":
            return "No such ticket, or no such open incident; nothing was done."
        inc = target
        if not await _may_act(desk, inc, user_id):
            return f"Incident #{inc.id} is team {inc.team}'s; nothing was done."
        if ticket.incident_id == inc.id:
            return f"Ticket #{ticket.id} is part of incident #{inc.id} already."
        if ticket.incident_id is not None:
            old = await desk.s.get_one(Incident, ticket.incident_id, with_for_update=True)
            desk.history(ticket, "incident", user_id, f"#{old.id}", None, "moved by hand")
            ticket.incident_id = None
            idesk.card_now(old)
        # It keeps the card it has; one shown only on the other incident stays card-less.
        await idesk.attach(inc, ticket, user_id, f"attached by {who}", only=ticket.incident_only)
        if not ticket.incident_only:
            desk.thread(ticket, f"🚨 {who} attached this ticket to incident #{inc.id}.")
        idesk.card_now(inc)
        return f"Ticket #{ticket.id} is part of incident #{inc.id} now."
    if verb == "merge" and len(numbers) == 2 and numbers[0] != numbers[1]:
        a = await desk.s.get(Incident, numbers[0], with_for_update=True)
        b = await desk.s.get(Incident, numbers[1], with_for_update=True)
        if a is None or b is None or a.status != "open" or b.status != "open":
            return "Both incidents must exist and be open; nothing was done."
        if not (await _may_act(desk, a, user_id) and await _may_act(desk, b, user_id)):
            return "Only the incidents' teams can merge them; nothing was done."
        moved = await incident_members(desk.s, a)
        for ticket in moved:
            desk.history(ticket, "incident", user_id, f"#{a.id}", None, f"merged into #{b.id}")
            await idesk.attach(
                b, ticket, user_id, f"incident #{a.id} merged by {who}", only=ticket.incident_only
            )
        a.status = "merged"
        a.merged_into = b.id
        a.closed_at = desk.now
        a.closed_by = user_id
        idesk.card_now(a)
        idesk.card_now(b)
        idesk.say_in_thread(a, f"🔀 {who} merged this incident into incident #{b.id}.")
        idesk.say_in_thread(
            b, f"🔀 {who} merged incident #{a.id} into this one ({len(moved)} tickets)."
        )
        desk.decided("surges.merged incident=%d into=%d by=%s", a.id, b.id, user_id)
        return f"Incident #{a.id} ({len(moved)} tickets) is part of incident #{b.id} now."
    return f"`/desk incident`: {INCIDENT_HELP}."


async def incident_languages(
    sessions: Any, rules: Rules, incident_id: int
) -> dict[str, int] | None:
    """How many of an open incident's customers speak each language the desk has texts in
    (others are counted under the default language): the Reply to all affected modal."""
    default = rules.texts.default_language
    async with sessions() as session:
        inc = await session.get(Incident, incident_id)
        if inc is None or inc.status != "open":
            return None
        rows = (
            await session.execute(
                select(Ticket.language, func.count())
                .where(Ticket.incident_id == incident_id)
                .group_by(Ticket.language)
            )
        ).all()
    counts: dict[str, int] = {}
    for language, n in rows:
        tag = (language or default).lower().split("-")[0]
        tag = tag if tag in rules.texts.languages else default
        counts[tag] = counts.get(tag, 0) + int(n)
    return counts
