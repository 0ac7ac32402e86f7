"""The customer's side of the ticket state machine: messages, edits, buttons and ratings,
and what the platforms report about our messages to them.

Every method runs inside the dispatcher's one transaction per inbox event (see
:mod:`bot.core.step`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import Row, Select, select

from bot.core.assignment import AUTO, Assigner, seat
from bot.core.step import OutsideWindow, TicketReopened
from bot.core.ticket_step import StatusTooEarly, TicketStep, cap_first
from bot.domain.classifier import Classification
from bot.domain.customer_requests import RatingTap, my_tickets_button, parse_rating
from bot.domain.events import (
    CustomerBlocked,
    CustomerButton,
    CustomerEdit,
    CustomerMessage,
    CustomerNumberChanged,
    CustomerReaction,
    CustomerStart,
    DeliveryStatus,
)
from bot.domain.files import describe, inbound_plan
from bot.domain.language import choose_language
from bot.domain.mrkdwn import escape, quoted_blocks, said_blocks
from bot.domain.outbound import FileRef, Outbound
from bot.domain.routing import TicketFacts, choose_team, language_from_script
from bot.domain.tickets import ACTIVE, CHANNEL_NAME, RATEABLE
from bot.domain.window import window_closed_error
from nlp.priority import LEVELS
from storage import trail
from storage.crypto import seal_text
from storage.models import Customer, Identity, Message, OutboxRow, Ticket
from storage.rows import insert_row

DELIVERY_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


class CustomerSide(TicketStep):
    async def customer_message(
        self, ev: CustomerMessage, cls: Classification, detected: str | None = None
    ) -> Ticket:
        """``detected``: the language detected in the text (the dispatcher runs the detector
        outside the transaction), or None when the detector declined."""
        language = choose_language(ev.sender.language, detected, ev.text)
        kept = await self.kept_language(ev, detected)  # one short message never changes it
        ident = await self.identity(ev.channel, ev.sender, ev.chat_id, kept)
        ticket = await self.latest_ticket(ev.channel, ev.chat_id)
        window = timedelta(hours=self.rules.tickets.reopen_window_hours)
        attachments = [a.model_dump(mode="json") for a in ev.attachments]
        if ticket is not None and ticket.status in ACTIVE:
            if ticket.language is None and language is not None:
                ticket.language = language  # e.g. a photo first, words later
            await self._add_customer_message(ticket, ev, attachments)
            if ticket.status == "pending":
                self.set_status(ticket, "open", "customer", "customer replied")
                await self.refresh_card(ticket)
            await self._maybe_raise_priority(ticket, cls)
            return ticket
        if (
            ticket is not None
            and ticket.status == "resolved"
            and ticket.resolved_at is not None
            and self.now - ticket.resolved_at <= window
        ):
            self.set_status(
                ticket,
                "open" if ticket.assignee_id else "new",
                "customer",
                "customer wrote within the reopen window",
            )
            ticket.resolved_at = None
            ticket.resolved_by = None
            # One shown only on an ended incident goes on alone, with a card of its own.
            await self.publish(TicketReopened(ticket))
            prompt = await self.latest_prompt(ticket.id)
            if prompt is not None and ticket.rating is None:  # still has its buttons
                self.remove_buttons(ticket, prompt.platform_message_id)
            texts = await self.texts_for(ticket)
            self.tell_customer(ticket, texts.reopened.format(ticket=ticket.id))
            self.decided("tickets.reopened ticket=%d by=customer", ticket.id)
            self.thread(ticket, "↩️ Reopened: the customer wrote again.")
            await self._add_customer_message(ticket, ev, attachments)
            await self._maybe_raise_priority(ticket, cls)
            await self._reassign_reopened(ticket)
            await self.refresh_card(ticket)
            return ticket
        return await self._new_ticket(ev, ident, cls, attachments, language)

    async def _record_inbound(
        self, ticket: Ticket, ev: CustomerMessage, attachments: list[Any]
    ) -> None:
        """The customer's message as a ticket message row (platform id kept for edits),
        written with a Core INSERT (storage/rows.py) and fed to the automations' journal,
        whose listener hears only what is added to the session."""
        message = await insert_row(
            self.s,
            Message(
                ticket_id=ticket.id,
                direction="in",
                author="customer",
                channel=ev.channel,
                platform_message_id=ev.platform_message_id,
                text=ev.text,
                attachments=attachments,
                created_at=self.now,
            ),
        )
        trail.journal(self.s.sync_session, message)

    async def _add_customer_message(
        self, ticket: Ticket, ev: CustomerMessage, attachments: list[Any]
    ) -> None:
        customer = await self.s.get_one(Customer, ticket.customer_id)
        await self._record_inbound(ticket, ev, attachments)
        ticket.updated_at = self.now
        if ev.attachments:
            await self._customer_files(ticket, customer.name, ev, caption=ev.text)
            return
        self.thread(
            ticket,
            f"*{escape(customer.name)}:* {escape(ev.text)}",
            blocks=said_blocks(customer.name, ev.text),
        )

    async def _customer_files(
        self, ticket: Ticket, name: str, ev: CustomerMessage, caption: str
    ) -> None:
        """Each of the customer's files into the card's thread (the first with their caption),
        fetched from the platform by the outbox when it sends; a file no limit lets through is
        said in the thread instead, never dropped, and the customer is told in their language."""
        for a in ev.attachments:
            said = f"*{escape(name)}:* {escape(caption)}" if caption else ""
            plan = inbound_plan(ev.channel, a.kind, a.size)
            if plan.refused is not None:
                self.thread(
                    ticket,
                    (said + "\n" if said else "")
                    + f"⚠️ {escape(name)} sent {escape(describe(a.kind, a.name, a.size))} that"
                    f" could not be relayed here: {plan.refused}. They were asked to send a"
                    " smaller file or a link.",
                )
                texts = await self.texts_for(ticket)
                self.tell_customer(ticket, texts.file_too_big.format(limit=plan.limit))
                self.decided(
                    "tickets.file_refused ticket=%d direction=in kind=%s", ticket.id, a.kind
                )
            else:
                self.fx.say(
                    Outbound(
                        channel="slack",
                        kind="slack_thread_file",
                        destination=ticket.slack_channel,
                        ticket_id=ticket.id,
                        text=said or f"*{escape(name)}* sent {escape(describe(a.kind, a.name))}.",
                        file=FileRef(
                            source=ev.channel,
                            file_id=a.file_id,
                            kind=a.kind,
                            name=a.name,
                            mime_type=a.mime_type,
                            size=a.size,
                        ),
                    )
                )
            caption = ""

    async def _new_ticket(
        self,
        ev: CustomerMessage,
        ident: Identity,
        cls: Classification,
        attachments: list[Any],
        language: str | None,
    ) -> Ticket:
        customer = await self.s.get_one(Customer, ident.customer_id)
        language = language or customer.language or language_from_script(ev.text)
        team = choose_team(
            self._facts(ev, cls, language), self.rules.routing, self.rules.default_team
        )
        ticket = Ticket(
            customer_id=customer.id,
            channel=ev.channel,
            chat_id=ev.chat_id,
            status="new",
            priority=cls.priority,
            priority_reasons=list(cls.reasons),
            classification=cls.details,
            model_version=cls.model_version,
            team=team.team,
            slack_channel=self.rules.team(team.team).channel,
            language=language,
            subject=_with_attachments(ev.text, attachments),
            created_at=self.now,
            updated_at=self.now,
        )
        await insert_row(self.s, ticket)  # its id at once, without the ORM's flush
        self.made.tickets[ticket.id] = ticket
        self.history(ticket, "created", "customer", None, "new", f"via {ev.channel}")
        self.decided(
            "tickets.created ticket=%d channel=%s priority=%s",
            ticket.id,
            ev.channel,
            cls.priority,
        )
        self.history(ticket, "priority", "desk", None, cls.priority, "; ".join(cls.reasons))
        self.history(ticket, "team", AUTO, None, team.team, team.reason)
        await self._record_inbound(ticket, ev, attachments)
        texts = await self.texts_for(ticket)
        incident = await self.hooks.placer.place(self, ticket, cls)
        self.tell_customer(
            ticket,
            (texts.incident_ack if incident is not None else texts.ack).format(ticket=ticket.id),
            buttons=my_tickets_button(self.rules, texts),
        )
        if ticket.incident_only:
            return ticket  # its incident's card and thread show it; the incident is answered
        choice = await seat(self, ticket)  # an assignee, its SLA clocks, then its card
        if ev.attachments:  # the card shows the caption; the files go into its thread
            await self._customer_files(ticket, customer.name, ev, caption="")
        if choice is not None and choice.agent is not None:  # how the agent hears of it
            self.thread(ticket, f"👤 {cap_first(choice.reason)}.")
        return ticket

    def _facts(self, ev: CustomerMessage, cls: Classification, language: str | None) -> TicketFacts:
        intent = cls.details.get("intent")
        confidence = float(cls.details.get("intent_confidence", 1.0))
        if confidence < self.rules.priority.intent_min_confidence:
            intent = None
        key = f"{ev.channel}:{ev.sender.external_id}"
        return TicketFacts(
            channel=ev.channel,
            text=ev.text,
            language=language,
            intent=str(intent) if intent else None,
            vip=key in self.rules.priority.vip.customers,
            priority=cls.priority,
        )

    async def _reassign_reopened(self, ticket: Ticket) -> None:
        """A reopened ticket goes back to its last assignee if they are available; otherwise
        it is assigned anew (a manual team leaves it with them: nobody else would pick it)."""
        assigner = Assigner(self)
        last = ticket.assignee_id
        if self.rules.team(ticket.team).assignment == "manual":
            return
        if last is not None and await assigner.is_available(last):
            self.thread(ticket, f"👤 Back to <@{last}>, who had it before.")
            return
        if last is not None:
            assigner.release(ticket, AUTO, f"reopened; <@{last}> is away")
        await assigner.assign(ticket, exclude=last)

    async def _maybe_raise_priority(self, ticket: Ticket, cls: Classification) -> None:
        if LEVELS.get(cls.priority, 0) > LEVELS.get(ticket.priority, 0):
            self.history(
                ticket, "priority", "desk", ticket.priority, cls.priority, "; ".join(cls.reasons)
            )
            self.decided(
                "tickets.priority_raised ticket=%d from=%s to=%s",
                ticket.id,
                ticket.priority,
                cls.priority,
            )
            ticket.priority = cls.priority
            ticket.priority_reasons = list(cls.reasons)
            ticket.model_version = cls.model_version
            self.thread(ticket, f"⬆️ Priority raised to *{cls.priority}*: {'; '.join(cls.reasons)}")
            await self.refresh_card(ticket)

    async def customer_start(self, ev: CustomerStart) -> None:
        await self.identity(ev.channel, ev.sender, ev.chat_id)
        texts = self.rules.texts.for_language(ev.sender.language)
        self.fx.say(
            Outbound(channel=ev.channel, kind="text", destination=ev.chat_id, text=texts.welcome)
        )

    async def customer_edit(self, ev: CustomerEdit) -> None:
        msg = await self.s.scalar(
            select(Message)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .where(
                Message.channel == ev.channel,
                Message.platform_message_id == ev.platform_message_id,
                Message.direction == "in",
                Ticket.chat_id == ev.chat_id,
            )
        )
        if msg is None:
            return  # an edit of something we never recorded (e.g. /start): nothing to amend
        ticket = await self.s.get_one(Ticket, msg.ticket_id)
        msg.edits = [*msg.edits, {"text": msg.text, "replaced_at": self.now.isoformat()}]
        msg.text = ev.text
        # The trail quotes the customer: sealed like the message itself (storage/crypto.py).
        was, now = seal_text(msg.edits[-1]["text"]), seal_text(ev.text)
        self.history(ticket, "edit", "customer", was, now)
        lead = "✏️ The customer edited a message. Now:"
        self.thread(ticket, f"{lead} {escape(ev.text)}", blocks=quoted_blocks(lead, ev.text))

    async def customer_button(self, ev: CustomerButton) -> None:
        tap = parse_rating(ev.data)
        ticket = None
        if tap is not None and 1 <= tap.rating <= 5:
            ticket = await self.s.get(Ticket, tap.ticket_id, with_for_update=True)
        mine = ticket is not None and (ticket.channel, ticket.chat_id) == (ev.channel, ev.chat_id)
        if tap is None or ticket is None or not mine:
            self._answer(ev)
            if tap is None and ev.title:
                await self._pressed_elsewhere(ev)
            return  # not ours, forged, or someone else's ticket: never rate it
        outcome = await self._rating_outcome(ticket, tap)
        texts = await self.texts_for(ticket)
        if outcome == "rate":
            self._answer(ev)
            self.history(
                ticket,
                "rating",
                "customer",
                None,
                tap.rating,
                f"rating prompt {tap.prompt_id}" if tap.prompt_id else "",
            )
            ticket.rating = tap.rating
            self.tell_customer(
                ticket, texts.rating_thanks.format(rating=tap.rating, ticket=ticket.id)
            )
            on = ev.tapped_message_id
            if on is None and tap.prompt_id is not None:
                prompt = await self.s.get(Message, tap.prompt_id)
                on = prompt.platform_message_id if prompt is not None else None
            self.remove_buttons(ticket, on)  # one rating per resolve
            self.thread(ticket, f"⭐ The customer rated this ticket {tap.rating}/5.")
            await self.refresh_card(ticket)
            self.decided("tickets.rated ticket=%d rating=%d", ticket.id, tap.rating)
            return
        notice = (texts.rating_already if outcome == "already" else texts.rating_expired).format(
            ticket=ticket.id
        )
        if ev.callback_query_id:
            self._answer(ev, notice)  # Telegram shows it on the spot, over the chat
            self.remove_buttons(ticket, ev.tapped_message_id)
        else:
            self.tell_customer(ticket, notice)  # WhatsApp: the tap cannot be answered otherwise
        self.decided("tickets.rating_ignored ticket=%d reason=%s", ticket.id, outcome)

    async def _pressed_elsewhere(self, ev: CustomerButton) -> None:
        """A button that is not the desk's (an older message's, a template's): what the customer
        chose is still something they said, so their open ticket's thread shows it."""
        ticket = await self.latest_ticket(ev.channel, ev.chat_id)
        if ticket is None or ticket.status not in ACTIVE:
            self.decided("tickets.button_unknown channel=%s", ev.channel)
            return
        lead = "🔘 The customer pressed a button:"
        self.thread(ticket, f"{lead} {escape(ev.title)}", blocks=quoted_blocks(lead, ev.title))

    async def awaiting_contact(self, channel: str, chat_id: str) -> bool:
        """Is the last thing the desk sent to this chat the /link prompt (the share-my-number
        button)? Then a contact card is the answer to it, not something to show the agents."""
        payload = await self.s.scalar(
            select(OutboxRow.payload)
            .where(
                OutboxRow.channel == channel, OutboxRow.destination_key == f"{channel}:{chat_id}"
            )
            .order_by(OutboxRow.id.desc())
            .limit(1)
        )
        return bool(payload and payload.get("ask_contact"))

    async def customer_reaction(self, ev: CustomerReaction) -> None:
        """A reaction goes into the thread of the ticket whose message it is on, quoting that
        message (an agent's reply or the customer's own); on a message the desk has no copy
        of (an acknowledgement, a prompt), into the customer's open ticket."""
        msg = await self.s.scalar(
            select(Message)
            .join(Ticket, Ticket.id == Message.ticket_id)
            .where(
                Message.channel == ev.channel,
                Message.platform_message_id == ev.reacted_to,
                Ticket.channel == ev.channel,
                Ticket.chat_id == ev.chat_id,
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
        ticket = await self.s.get(Ticket, msg.ticket_id) if msg is not None else None
        if ticket is None:
            ticket = await self.latest_ticket(ev.channel, ev.chat_id)
            if ticket is None or ticket.status not in ACTIVE:
                self.decided("tickets.reaction_unplaced channel=%s", ev.channel)
                return
        whose = "a message the desk has no copy of"
        if msg is not None:
            if msg.direction == "in":
                whose = "their own message"
            elif msg.author == "desk" or msg.purpose:
                whose = "the desk's message"
            else:
                whose = f"<@{msg.author}>'s reply"
        if ev.emoji:
            lead = f"The customer reacted {ev.emoji} to {whose}"
        else:
            lead = f"The customer took back their reaction to {whose}"
        if msg is None:
            self.thread(ticket, f"{lead}.")
        else:
            agent = ticket.assignee_name if msg.author == ticket.assignee_id else None
            plain = lead.replace(f"<@{msg.author}>", agent or "an agent")
            self.thread(
                ticket, f"{lead}: {escape(msg.text)}", blocks=quoted_blocks(f"{plain}:", msg.text)
            )
        self.decided("tickets.reaction ticket=%d", ticket.id)

    async def customer_number_changed(self, ev: CustomerNumberChanged) -> None:
        """WhatsApp moved the customer to a new number: their identity and tickets follow it,
        so replies go to the new number; the open tickets' threads say so."""
        ident = await self.s.scalar(
            select(Identity).where(
                Identity.channel == ev.channel, Identity.external_id == ev.sender.external_id
            )
        )
        taken = await self.s.scalar(
            select(Identity).where(
                Identity.channel == ev.channel, Identity.external_id == ev.new_id
            )
        )
        if ident is not None and taken is None:
            ident.external_id = ev.new_id
            ident.chat_id = ev.new_id
            ident.phone = ev.new_id if ev.new_id.isdigit() else ident.phone
        tickets = (
            await self.s.scalars(
                select(Ticket)
                .where(Ticket.channel == ev.channel, Ticket.chat_id == ev.chat_id)
                .order_by(Ticket.id)
                .with_for_update()
            )
        ).all()
        for ticket in tickets:
            ticket.chat_id = ev.new_id
            self.history(ticket, "chat", "customer", ev.chat_id, ev.new_id, "changed number")
            if ticket.status in ACTIVE:
                self.thread(
                    ticket,
                    f"📱 The customer changed their WhatsApp number from {escape(ev.chat_id)} to"
                    f" {escape(ev.new_id)}: replies go to the new number now.",
                )
        self.decided("customers.number_changed channel=%s tickets=%d", ev.channel, len(tickets))

    async def customer_blocked(self, ev: CustomerBlocked) -> None:
        """The customer blocked (or unblocked) the bot: kept on their identity, which the card
        shows, and said in their open ticket's thread."""
        ident = await self.s.scalar(
            select(Identity).where(
                Identity.channel == ev.channel, Identity.external_id == ev.sender.external_id
            )
        )
        if ident is None:
            self.decided("customers.blocked_unknown channel=%s", ev.channel)
            return  # never wrote: nothing to keep, nobody to tell
        if ident.blocked == ev.blocked:
            return
        ident.blocked = ev.blocked
        ticket = await self.latest_ticket(ev.channel, ev.chat_id)
        if ticket is not None and ticket.status in ACTIVE:
            self.history(
                ticket, "blocked", "customer", not ev.blocked, ev.blocked, "my_chat_member"
            )
            self.thread(
                ticket,
                "🚫 The customer blocked the bot: replies cannot reach them until they unblock it."
                if ev.blocked
                else "✅ The customer unblocked the bot: replies reach them again.",
            )
            await self.refresh_card(ticket)
        self.decided("customers.blocked blocked=%s channel=%s", ev.blocked, ev.channel)

    async def _rating_outcome(
        self, ticket: Ticket, tap: RatingTap
    ) -> Literal["rate", "already", "expired"]:
        """Only the latest resolve's prompt counts, and only its first tap."""
        if tap.prompt_id is not None:
            latest = await self.latest_prompt(ticket.id)
            if latest is None or latest.id != tap.prompt_id:
                return "expired"  # the ticket was resolved again since: a newer prompt counts
        if ticket.rating is not None:
            return "already"
        if ticket.status not in RATEABLE:
            return "expired"  # reopened: rated once it is resolved again
        return "rate"

    def _answer(self, ev: CustomerButton, notice: str = "") -> None:
        if ev.callback_query_id:
            self.fx.say(
                Outbound(
                    channel=ev.channel,
                    kind="answer_callback",
                    destination=ev.chat_id,
                    callback_query_id=ev.callback_query_id,
                    text=notice[:200],  # answerCallbackQuery allows 0-200 characters
                )
            )

    async def delivery_status(self, ev: DeliveryStatus) -> None:
        if ev.status == "failed" and window_closed_error(ev.error):
            # Accepted, then refused as outside the 24-hour window: the same path as a refusal
            # on the send (bot/window holds a reply and sends the template).
            found = await self._send_of(
                ev,
                select(OutboxRow)
                .where(
                    OutboxRow.channel == ev.channel,
                    OutboxRow.platform_message_id == ev.platform_message_id,
                )
                .with_for_update(),
            )
            row = found[0] if found is not None else None
            if row is not None and row.status == "sent":
                ticket = await self.s.get(Ticket, row.ticket_id) if row.ticket_id else None
                msg = await self.s.get(Message, row.message_id) if row.message_id else None
                row.status = "failed"
                row.last_error = f"WindowClosed: {ev.error}"
                if msg is not None:
                    msg.delivery, msg.delivery_error = "failed", ev.error
                await self.publish(OutsideWindow(row, ticket, msg, ev.error or "131047"))
                return
        msg = await self._status_about(ev)
        if msg is None:
            return  # a status for an ack or a prompt: not a ticket message
        if ev.status == "failed":
            msg.delivery = "failed"
            msg.delivery_error = ev.error
            ticket = await self.s.get_one(Ticket, msg.ticket_id)
            self.thread(
                ticket,
                f"⚠️ {CHANNEL_NAME.get(ev.channel, ev.channel)} could not deliver a reply"
                f" to the customer: {ev.error or 'no reason given'}",
            )
            if msg.slack_ts:
                self.react(ticket, msg.slack_ts, self.rules.slack.failed_reaction)
        elif DELIVERY_RANK.get(ev.status, 0) > DELIVERY_RANK.get(msg.delivery or "pending", 0):
            msg.delivery = ev.status

    async def _send_of(self, ev: DeliveryStatus, sent: Select[Any]) -> Row[Any] | None:
        """What ``sent`` reads of the send a status is about (its outbox row), or None.

        WhatsApp can report on a message before our send has recorded its id: while anything
        is sending, the status is tried again shortly (StatusTooEarly) rather than dropped.
        When nothing is sending, a send recorded since the first read is seen by a second (on
        PostgreSQL each statement sees what committed before it began)."""
        found: Row[Any] | None = (await self.s.execute(sent)).first()
        if found is None:
            if await self.s.scalar(
                select(OutboxRow.id)
                .where(OutboxRow.channel == ev.channel, OutboxRow.status == "sending")
                .limit(1)
            ):
                raise StatusTooEarly(ev.platform_message_id)
            found = (await self.s.execute(sent)).first()
        return found

    async def _status_about(self, ev: DeliveryStatus) -> Message | None:
        """The ticket message a status is about, or None (an ack's, a prompt's, or one sent
        again since, whose message now carries the newer id).

        The send's outbox row first: most statuses are about acks, which have a row and no
        message, so one read answers them (a read of the message first, then of the row, was
        three). Every message sent has its row: the outcome writes the platform's id on both at
        once (bot/delivery/outcomes.py), so the row is never found without the message it names,
        where a read of the message and then of the row could see the outcome commit between
        them (on PostgreSQL each statement sees what committed before it) and drop the status."""
        found = await self._send_of(
            ev,
            select(OutboxRow.message_id)
            .where(
                OutboxRow.channel == ev.channel,
                OutboxRow.platform_message_id == ev.platform_message_id,
            )
            .limit(1),
        )
        if found is None or found.message_id is None:
            return None
        msg = await self.s.get(Message, found.message_id)
        if (
            msg is None
            or msg.direction != "out"
            or msg.platform_message_id != ev.platform_message_id
        ):
            return None
        return msg


def _with_attachments(text: str, attachments: list[Any]) -> str:
    if not attachments:
        return text
    listed = ", ".join(
        f"📎 {a.get('kind', 'file')}" + (f" {a['name']}" if a.get("name") else "")
        for a in attachments
    )
    return f"{text}\n{listed}" if text else listed
