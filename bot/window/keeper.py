"""WhatsApp beyond 24 hours: what becomes of a message WhatsApp will not take free-form, and
of the replies kept for a customer when they write again.

WhatsApp takes free-form messages only within 24 hours of the customer's last message
(``whatsapp.window_hours``); after that only approved templates pass (``bot/domain/window.py``).
The outbox checks before sending and otherwise hears Meta's 131047, on the send or later in a
``failed`` status; both arrive here as :class:`bot.core.step.OutsideWindow`:

* **An agent's reply** (or file, or an incident's Reply to all) is *held*: its outbox row waits
  with status ``held``, the customer gets the ``reply_waiting`` template (once, however many
  replies wait) and the thread says so. Without that template the thread says plainly that
  the customer cannot be reached until they write. Either way the reply is not lost.
* **The rating prompt** is replaced by the ``rating_request`` template when there is one.
* **Any other automatic message** (a notice the desk writes itself) is skipped, with a line in
  the thread: it would only die at WhatsApp.

When the customer writes again (:class:`bot.core.step.CustomerWrote`, in the same transaction
as their message), the held rows become pending again. The outbox sends a destination's rows
oldest first, so they reach the customer in the order the agents wrote them and before
anything the desk says about the new message.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from bot.core.step import CustomerWrote, OutsideWindow, Step
from bot.domain.mrkdwn import escape
from bot.domain.outbound import Outbound, TemplateMessage
from bot.domain.window import Template, TemplatePurpose, parameter_values
from storage import last_inbound
from storage.models import Customer, Message, OutboxRow, Ticket

log = logging.getLogger("deskbot.window")


def _quote(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    return "“" + escape(text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def _is_reply(message: Message | None) -> bool:
    """An agent's words (a reply, a file, a Reply to all), as opposed to the desk's own."""
    return message is not None and message.direction == "out" and message.author != "desk"


async def on_outside_window(step: Step, ev: OutsideWindow) -> None:
    row, ticket, message = ev.row, ev.ticket, ev.message
    out = Outbound.model_validate(row.payload)
    if _is_reply(message):
        await _hold(step, row, ticket, message, out)
    elif message is not None and message.purpose == "rating_prompt":
        await _rating_by_template(step, row, ticket, message, out)
    else:
        row.status = "skipped"
        row.last_error = f"skipped: outside WhatsApp's window ({ev.detail})"[:2000]
        if message is not None:
            message.delivery, message.delivery_error = "skipped", row.last_error
        if ticket is not None:
            step.thread(
                ticket,
                f"🔕 Not sent to the customer: {_quote(out.text)}. WhatsApp's 24-hour window is"
                " closed and the desk sends no automatic message outside it.",
            )
    step.decided(
        "window.outside row=%d ticket=%s status=%s", row.id, row.ticket_id or "-", row.status
    )


async def _hold(
    step: Step, row: OutboxRow, ticket: Ticket | None, message: Message | None, out: Outbound
) -> None:
    # Another reply already waiting means the customer was already told (or could not be).
    earlier = await step.s.scalar(
        select(func.count())
        .select_from(OutboxRow)
        .where(
            OutboxRow.destination_key == row.destination_key,
            OutboxRow.status == "held",
            OutboxRow.id != row.id,
        )
    )
    row.status = "held"
    row.last_error = None
    row.lease_until = None
    if message is not None:
        message.delivery, message.delivery_error = "held", None
    if ticket is None:
        return
    template = step.rules.whatsapp.templates.get("reply_waiting")
    what = "file" if out.kind == "file" else "reply"
    if earlier:
        step.thread(
            ticket,
            f"⏳ This {what} waits too, and is delivered when the customer writes (they were"
            " already told a reply waits, if a template could tell them).",
        )
    elif template is None:
        step.thread(
            ticket,
            f"⏳ Not sent yet: the customer last wrote more than"
            f" {step.rules.whatsapp.window_hours:g} h ago, so WhatsApp takes only an approved"
            " template, and rules.yaml names no `reply_waiting` template. The customer can't be"
            f" reached until they write; the {what} is kept and delivered when they do.",
        )
    else:
        name = await _customer_name(step, ticket)
        sent = _template(step, ticket, template, "reply_waiting", name, ticket.assignee_name)
        step.fx.say(sent)
        step.thread(
            ticket,
            f"⏳ Outside WhatsApp's 24-hour window: sent as template *{escape(template.name)}*"
            f" ({sent.template.language if sent.template else ''}); the {what} is delivered"
            " when the customer answers.",
        )
    if message is not None and message.slack_ts:
        step.react(ticket, message.slack_ts, "hourglass_flowing_sand")
    await step.refresh_card(ticket)


async def _rating_by_template(
    step: Step, row: OutboxRow, ticket: Ticket | None, message: Message, out: Outbound
) -> None:
    template = step.rules.whatsapp.templates.get("rating_request")
    row.status = "skipped"
    if ticket is None:
        return
    if template is None:
        row.last_error = "skipped: outside WhatsApp's window, no rating_request template"
        message.delivery, message.delivery_error = "skipped", row.last_error
        step.thread(
            ticket,
            "🔕 The rating request was not sent: WhatsApp's 24-hour window is closed and"
            " rules.yaml names no `rating_request` template.",
        )
        return
    name = await _customer_name(step, ticket)
    sent = _template(step, ticket, template, "rating_request", name, ticket.assignee_name)
    row.last_error = f"replaced by the template {template.name}"
    message.delivery, message.delivery_error = "skipped", row.last_error
    step.fx.say(sent)
    step.thread(
        ticket,
        f"⭐ Outside WhatsApp's 24-hour window: the rating request went as template"
        f" *{escape(template.name)}*.",
    )


def _template(
    step: Step,
    ticket: Ticket,
    template: Template,
    purpose: TemplatePurpose,
    customer_name: str,
    agent_name: str | None,
) -> Outbound:
    language = template.language_for(ticket.language, step.rules.texts.default_language)
    return Outbound(
        channel="whatsapp",
        kind="template",
        destination=ticket.chat_id,
        ticket_id=ticket.id,
        template=TemplateMessage(
            name=template.name,
            # The customer's language, the desk's default, else the first the template has.
            language=language or next(iter(template.languages.values())),
            parameters=parameter_values(
                template,
                ticket_number=ticket.id,
                customer_name=customer_name,
                agent_name=agent_name or "",
            ),
            purpose=purpose,
        ),
    )


async def _customer_name(step: Step, ticket: Ticket) -> str:
    return str(await step.s.scalar(select(Customer.name).where(Customer.id == ticket.customer_id)))


async def on_customer_wrote(step: Step, ev: CustomerWrote) -> None:
    """The customer wrote: their window is open again, and what waited for it goes now. Runs
    before the event's own work, so a first-time customer has no identity yet: theirs starts
    at this time (``Step.customer_wrote_at``)."""
    # Written with the transaction's others in one UPDATE at its commit (storage/last_inbound.py);
    # the window line of a card drawn meanwhile takes it from there.
    last_inbound.note(step.s, ev.channel, ev.chat_id, ev.at)
    if ev.channel != "whatsapp":
        return  # replies are held only for WhatsApp's window
    held = list(
        (
            await step.s.scalars(
                select(OutboxRow)
                .where(
                    OutboxRow.destination_key == f"whatsapp:{ev.chat_id}",
                    OutboxRow.status == "held",
                )
                .order_by(OutboxRow.id)
                .with_for_update()
            )
        ).all()
    )
    per_ticket: dict[int, int] = {}
    for row in held:
        row.status = "pending"
        row.next_attempt_at = step.now
        row.attempts = 0
        row.last_error = None
        if row.message_id is not None:
            message = await step.s.get(Message, row.message_id)
            if message is not None:
                message.delivery = "pending"
        if row.ticket_id is not None:
            per_ticket[row.ticket_id] = per_ticket.get(row.ticket_id, 0) + 1
    for ticket_id, n in per_ticket.items():
        ticket = await step.s.get(Ticket, ticket_id)
        if ticket is None:
            continue
        step.thread(
            ticket,
            f"📨 The customer wrote on WhatsApp: delivering the {n}"
            f" {'reply' if n == 1 else 'replies'} that waited for the window, in order.",
        )
        await step.refresh_card(ticket)
    if held:
        step.decided("window.released chat=%s rows=%d", ev.chat_id[-4:], len(held))
