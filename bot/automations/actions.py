"""An automation's actions, each through the desk's own path, with the rule's id as the actor."""

from __future__ import annotations

import json

from bot.core.assignment import Assigner
from bot.core.tickets import Desk
from bot.domain.automations import Action
from bot.domain.macros import fill, find
from bot.domain.mrkdwn import escape
from bot.domain.outbound import Outbound
from bot.domain.tickets import ACTIVE
from bot.workspace.controls import ticket_labels
from storage.models import Customer, Message, Ticket


def by_rule(rule: str) -> str:
    """How the thread names an automation."""
    return f"🤖 Automation *{escape(rule)}*"


async def act(desk: Desk, ticket: Ticket, rule: str, action: Action) -> None:
    """Do one action of ``rule`` on ``ticket`` (locked by the caller)."""
    who = by_rule(rule)
    reason = f"automation {rule}"
    if action.set_status is not None:
        await _status(desk, ticket, rule, action.set_status)
    elif action.set_priority is not None and action.set_priority != ticket.priority:
        new = action.set_priority
        desk.history(ticket, "priority", rule, ticket.priority, new, reason)
        ticket.priority = new
        ticket.priority_reasons = [f"automation {rule} → {new}", *ticket.priority_reasons]
        ticket.updated_at = desk.now
        desk.thread(ticket, f"{who} set the priority to *{new}*.")
    elif action.add_tag is not None or action.remove_tag is not None:
        old, _ = await ticket_labels(desk.s, ticket.id)
        if action.add_tag is not None:
            new_tags = old if action.add_tag in old else (*old, action.add_tag)
        else:
            new_tags = tuple(t for t in old if t != action.remove_tag)
        if new_tags != old:
            desk.history(ticket, "tags", rule, _dump(old), _dump(new_tags), reason)
            if action.add_tag is not None:
                desk.thread(ticket, f"🏷️ {who} added the tag {escape(action.add_tag)}.")
            else:
                desk.thread(ticket, f"🏷️ {who} removed the tag {escape(action.remove_tag or '')}.")
    elif action.transfer is not None:
        await desk._transfer(ticket, rule, action.transfer)
    elif action.assign is not None:
        _assign(desk, ticket, rule, action.assign)
    elif action.reply is not None:
        await _reply(desk, ticket, rule, action.reply.macro)
    elif action.note is not None:
        desk.thread(ticket, f"📝 {who} (internal note): {escape(action.note)}")
    elif action.notify is not None:
        _notify(desk, ticket, rule, action.notify)


async def _status(desk: Desk, ticket: Ticket, rule: str, status: str) -> None:
    if status == ticket.status:
        return
    if status == "resolved":
        if ticket.status in ACTIVE:
            # The desk's resolve: the rating prompt, the thread line, the card; no claim.
            await desk.resolve(ticket, rule, rule, f"automation {rule}", claim=False)
        return
    desk.set_status(ticket, status, rule, f"automation {rule}")
    ticket.updated_at = desk.now
    desk.thread(ticket, f"{by_rule(rule)} set the status to *{status}*.")


def _assign(desk: Desk, ticket: Ticket, rule: str, target: str) -> None:
    assigner = Assigner(desk)
    team = desk.rules.team(ticket.team)
    agent = team.lead if target == "lead" else None if target == "none" else target
    if agent == ticket.assignee_id:
        return
    if agent is None:
        if ticket.assignee_id is not None:
            assigner.release(ticket, rule, f"automation {rule}")
            desk.thread(ticket, f"{by_rule(rule)} took this ticket from its assignee.")
        return
    assigner.give(ticket, agent, rule, f"automation {rule}")
    desk.thread(ticket, f"👤 {by_rule(rule)} gave this ticket to <@{agent}>.")


async def _reply(desk: Desk, ticket: Ticket, rule: str, name: str) -> None:
    """The macro in the customer's language, to the customer through the outbox. Not the
    agents' first response (an automation is nobody answering)."""
    macro = find(desk.rules.macros, name)
    if macro is None or ticket.status not in ACTIVE:
        return
    customer = await desk.s.get(Customer, ticket.customer_id)
    template = macro.text_for(ticket.language, desk.rules.texts.default_language)
    text = fill(
        template,
        {
            "customer_name": customer.name if customer is not None else "",
            "ticket": str(ticket.id),
            "agent_name": ticket.assignee_name or "",
        },
    )
    msg = Message(
        ticket_id=ticket.id,
        direction="out",
        author=f"automation:{rule}"[:100],
        channel=ticket.channel,
        text=text,
        delivery="pending",
        purpose="automation",
        created_at=desk.now,
    )
    desk.s.add(msg)
    await desk.s.flush()
    desk.tell_customer(ticket, text, message=msg)
    desk.history(ticket, "macro", rule, None, macro.name, "sent by an automation")
    quoted = escape(text[:2500]).replace("\n", "\n>")
    desk.thread(
        ticket, f"📤 {by_rule(rule)} sent to the customer (macro *{escape(name)}*):\n>{quoted}"
    )


def _notify(desk: Desk, ticket: Ticket, rule: str, whom: tuple[str, ...]) -> None:
    team = desk.rules.team(ticket.team)
    told: list[str] = []
    said = f"ticket #{ticket.id} ({ticket.priority}, <#{ticket.slack_channel}>)"
    if "assignee" in whom and ticket.assignee_id:
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_post",
                destination=ticket.assignee_id,
                text=f"🤖 Automation {rule}: your {said} needs you.",
            )
        )
        told.append("the assignee by DM")
    if "lead" in whom and team.lead:
        told.append(f"<@{team.lead}>")
    if "channel" in whom:
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_post",
                destination=team.channel,
                text=f"🤖 Automation {rule}: {said} needs attention.",
            )
        )
        told.append("the team's channel")
    if told:
        desk.thread(ticket, f"📣 {by_rule(rule)} notified {', '.join(told)}.")


def _dump(tags: tuple[str, ...]) -> str:
    return json.dumps(list(tags), ensure_ascii=False)
