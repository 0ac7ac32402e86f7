"""``/desk customer-export``, ``/desk forget``, ``/desk link`` and ``/desk unlink``: a
customer's data and identities, for supervisors, admins and agents."""

from __future__ import annotations

from typing import Any

from bot.console.invocation import (
    Answer,
    Invocation,
    audit,
    is_admin,
    is_agent,
    is_supervisor,
    refuse,
)
from bot.customers import linking as customers
from bot.customers import privacy
from bot.domain.mrkdwn import escape
from bot.domain.outbound import Outbound
from bot.domain.words import counted, plural
from storage.models import Customer, Ticket

FORGET_ACTION = "desk_forget"  # the confirmation button; the Slack adapter maps it back here


async def customer_export(inv: Invocation) -> str:
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
        f"Exporting customer c{customer.id} ({counted(len(data['tickets']), 'ticket')}):"
        " the JSON file arrives in your direct messages with the app."
    )


async def forget_customer(inv: Invocation) -> str:
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
            f"*Forget customer {ref}?*"
            + (f" ({plural('ticket', held.tickets)} {held.ticket_refs})" if held.tickets else "")
            + " This erases their name, platform ids and phone numbers"
            f" ({counted(held.identities, 'identity')}), the text and files of"
            f" {counted(held.messages, 'message')} in {counted(held.tickets, 'ticket')}, and"
            f" {counted(held.payloads, 'raw platform payload')}; their cards and the desk's"
            " posts in the threads are redacted. Counts stay in the reports. It cannot be undone."
            + (
                f" {counted(held.agent_messages, 'message')} agents wrote in the threads"
                f" {'stays' if held.agent_messages == 1 else 'stay'}: Slack lets only their"
                " authors delete them."
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
        f"Customer {ref} is forgotten: {counted(held.identities, 'identity')},"
        f" {counted(held.messages, 'message')} in {counted(held.tickets, 'ticket')} and"
        f" {counted(held.payloads, 'raw payload')} erased; their cards and threads in Slack are"
        " being redacted."
    )


async def link_customer(inv: Invocation) -> str:
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


async def unlink_customer(inv: Invocation) -> str:
    if not await is_agent(inv):
        return refuse(inv, "/desk unlink", "agent")
    words = inv.args.split()
    if len(words) != 2 or words[1].lower() not in ("telegram", "whatsapp", "email"):
        return (
            "Say whose and which channel: `/desk unlink c45 whatsapp` (telegram, whatsapp or"
            " email; or a ticket number)."
        )
    try:
        customer = await privacy.find_customer(inv.session, words[0])
        split = await customers.unlink(inv.desk, customer.id, words[1].lower(), actor=inv.user_id)
    except (privacy.NotFound, customers.UnlinkError) as exc:
        return escape(str(exc)) + "."
    inv.desk.decided("customers.unlinked customer=%d new=%d", customer.id, split)
    return (
        f"Unlinked: customer c{customer.id}'s {words[1].lower()} identity is customer c{split} now."
    )
