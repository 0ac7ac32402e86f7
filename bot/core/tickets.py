"""The ticket state machine: what each event does to tickets, and what the desk says because of it.

Every function here runs inside the dispatcher's one transaction per inbox event. It changes
rows and *queues* what to say (:class:`Effects`); nothing here talks to a platform, so a crash
anywhere rolls the whole step back and the inbox row is simply processed again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.assignment import AUTO, Assigner
from bot.core.roles import has_role
from bot.domain.classifier import Classification
from bot.domain.events import (
    AgentAction,
    AgentMessage,
    CustomerButton,
    CustomerEdit,
    CustomerMessage,
    CustomerStart,
    DeliveryStatus,
    Sender,
    SlackFile,
)
from bot.domain.files import describe, inbound_plan, outbound_plan
from bot.domain.outbound import Button, FileRef, Outbound
from bot.domain.routing import TicketFacts, choose_team, language_from_script
from bot.domain.rules import Rules
from bot.selfservice.status import choose_language, my_tickets_button
from bot.sla.keeper import SlaKeeper
from bot.workspace.cards import (
    CardView,
    card_blocks,
    card_text,
    conversation_summary,
    escape,
    person,
    quoted_blocks,
    said_blocks,
)
from bot.workspace.controls import CONTROL_ACTIONS, Controls, known_intents, ticket_labels
from storage.models import (
    AuditEntry,
    Customer,
    Identity,
    KbSuggestion,
    Message,
    OutboxRow,
    Ticket,
    TicketEvent,
)
from storage.queues import outbox_add

log = logging.getLogger("deskbot.tickets")

ACTIVE = ("new", "open", "pending")
RATEABLE = ("resolved", "closed")
# Platforms whose sent messages can lose their buttons later (Telegram editMessageReplyMarkup);
# WhatsApp cannot edit, so there a tap on a spent button is answered in words instead.
EDITABLE_BUTTONS = frozenset({"telegram"})


class TooEarly(Exception):
    """An event about something this desk is still recording (another transaction, or a send
    whose outcome a dead process left unknown): the dispatcher tries it again shortly."""


class StatusTooEarly(TooEarly):
    """A delivery status arrived while the send it reports on is still being recorded."""


class CardTooEarly(TooEarly):
    """An agent wrote in a card's thread before the card's ts was recorded (Slack answered
    the post, but the transaction that records it has not committed yet, or its process died
    and the card is about to be found by its metadata). Dropping the message would lose the
    agent's reply without a trace."""


DELIVERY_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
CHANNEL_NAME = {"telegram": "Telegram", "whatsapp": "WhatsApp"}


@dataclass
class Effects:
    """What one step wants said, in order. ``message`` links an outbound row to its ticket
    message so the outbox can record the platform id and delivery result on it."""

    items: list[tuple[Outbound, Message | None]] = field(default_factory=list)
    # Log lines of the decisions taken, written once the step's transaction committed: a step
    # that rolls back (and is retried) decided nothing.
    decisions: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)
    # By item index: an idempotency key of its own (rows that many steps may ask for, queued
    # once: an incident card's update per time slice), when it is due, and its claim rank.
    timing: dict[int, tuple[str | None, datetime | None, int | None]] = field(default_factory=dict)
    soon: set[str] = field(default_factory=set)  # incident posts queued (bot/incidents/desk.py)

    def say(
        self,
        out: Outbound,
        message: Message | None = None,
        *,
        key: str | None = None,
        due: datetime | None = None,
        rank: int | None = None,
    ) -> None:
        if key is not None or due is not None or rank is not None:
            self.timing[len(self.items)] = (key, due, rank)
        self.items.append((out, message))

    def log_decisions(self) -> None:
        for fmt, args in self.decisions:
            log.info(fmt, *args)
        self.decisions.clear()


class RatingTap(NamedTuple):
    ticket_id: int
    prompt_id: int | None  # None: the first button format, from before prompts were recorded
    rating: int


def rating_data(ticket_id: int, prompt_id: int, rating: int) -> str:
    """Button data naming the resolve it belongs to (its prompt); well under Telegram's 64 bytes."""
    return f"rate:{ticket_id}:{prompt_id}:{rating}"


def parse_rating(data: str) -> RatingTap | None:
    """``rate:<ticket>:<prompt>:<n>``, or ``rate:<ticket>:<n>`` on prompts sent before the
    desk recorded its prompts (still out there in customers' chats)."""
    parts = data.split(":")
    if parts[0] != "rate" or len(parts) not in (3, 4):
        return None
    if not all(p.isascii() and p.isdigit() for p in parts[1:]):
        return None
    numbers = [int(p) for p in parts[1:]]
    if len(numbers) == 2:
        return RatingTap(numbers[0], None, numbers[1])
    return RatingTap(numbers[0], numbers[1], numbers[2])


PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
NORMAL_RANK = 2


def destination_key(out: Outbound) -> str:
    """Order key of the outbox: one customer chat, or one ticket's card and thread."""
    if out.channel == "slack":
        if out.kind == "slack_home":
            return f"slack:home:{out.destination}"  # bot.workspace.home.home_key
        if out.kind == "slack_view_update":  # a modal: not behind the card's thread posts
            return f"slack:view:{out.destination}"
        if out.incident_id is not None:  # after the incident card, in the order said
            return f"slack:incident:{out.incident_id}"
        if out.ticket_id is not None:
            return f"slack:ticket:{out.ticket_id}"
        return f"slack:{out.destination}"
    return f"{out.channel}:{out.destination}"


async def queue_effects(session: AsyncSession, desk: Desk, key: str) -> int:
    """Write what ``desk`` wants said to the outbox, in the caller's transaction; ``key``
    makes the rows' idempotency keys, so a step that is redone cannot queue twice."""
    # Imported here: bot.workspace.home reads card links from bot.console.desk_command, which
    # imports this module.
    from bot.workspace.home import HOME_DEBOUNCE, queue_refreshes

    await queue_refreshes(desk)
    now = desk.now
    rows: list[dict[str, Any]] = []
    for n, (out, message) in enumerate(desk.fx.items):
        if message is not None and message.id is None:
            await session.flush()
        rank = NORMAL_RANK
        if out.kind == "slack_card" and out.ticket_id is not None:
            ticket = await session.get(Ticket, out.ticket_id)  # in the session already
            rank = PRIORITY_RANK.get(ticket.priority, NORMAL_RANK) if ticket else NORMAL_RANK
        own_key, due, own_rank = desk.fx.timing.get(n, (None, None, None))
        rows.append(
            {
                "idempotency_key": own_key or f"{key}:{n}",
                "rank": rank if own_rank is None else own_rank,
                "channel": out.channel,
                "destination_key": destination_key(out),
                "payload": out.model_dump(mode="json"),
                "ticket_id": out.ticket_id,
                "message_id": message.id if message is not None else None,
                "status": "pending",
                "attempts": 0,
                # A Home waits a moment, so that changes close together publish it once.
                "next_attempt_at": due
                or (
                    now + HOME_DEBOUNCE
                    if out.kind == "slack_home" and out.destination not in desk.home_now
                    else now
                ),
                "created_at": now,
            }
        )
    if rows:
        await outbox_add(session, rows)
    return len(rows)


class Desk:
    def __init__(self, session: AsyncSession, rules: Rules, now: datetime) -> None:
        self.s = session
        self.rules = rules
        self.now = now
        self.fx = Effects()
        self.touched: set[int] = set()  # tickets this step changed: their SLA clocks are redone
        # Whose App Home this step changed (bot/workspace/home.py): people, and teams whose
        # members'.
        self.home_people: set[str] = set()
        self.home_teams: set[str] = set()
        self.home_now: set[str] = set()  # people at their Home tab right now: no debounce

    def decided(self, fmt: str, *args: object) -> None:
        """Log a decision at INFO after the commit: structured names, ids, never message text."""
        self.fx.decisions.append((fmt, args))

    # -- lookups -----------------------------------------------------------------------------

    async def identity(
        self, channel: str, sender: Sender, chat_id: str, language: str | None = None
    ) -> Identity:
        """The sender's identity (and customer), made on first contact. ``language`` is what
        the desk decided from their message (:func:`bot.selfservice.status.choose_language`);
        without
        it the platform's hint only fills a language the customer does not have yet, so a
        /start or a button never undoes a language read from what they wrote."""
        ident = await self.s.scalar(
            select(Identity).where(
                Identity.channel == channel, Identity.external_id == sender.external_id
            )
        )
        if ident is None:
            customer = Customer(
                name=sender.name or sender.username or sender.external_id,
                language=language or sender.language,
                created_at=self.now,
            )
            self.s.add(customer)
            await self.s.flush()
            ident = Identity(
                customer_id=customer.id,
                channel=channel,
                external_id=sender.external_id,
                chat_id=chat_id,
                username=sender.username,
                phone=sender.phone,
            )
            self.s.add(ident)
            await self.s.flush()
        else:
            customer = await self.s.get_one(Customer, ident.customer_id)
            if sender.name and customer.name != sender.name:
                customer.name = sender.name
            if language and customer.language != language:
                customer.language = language
            elif sender.language and customer.language is None:
                customer.language = sender.language
            ident.chat_id = chat_id
            ident.blocked = False  # they wrote to us, so they can hear us again
        return ident

    async def latest_ticket(self, channel: str, chat_id: str) -> Ticket | None:
        return await self.s.scalar(
            select(Ticket)
            .where(Ticket.channel == channel, Ticket.chat_id == chat_id)
            .order_by(Ticket.id.desc())
            .limit(1)
            .with_for_update()
        )

    async def recent_ticket_count(self, customer_id: int, hours: float) -> int:
        since = self.now - timedelta(hours=hours)
        return int(
            await self.s.scalar(
                select(func.count())
                .select_from(Ticket)
                .where(Ticket.customer_id == customer_id, Ticket.created_at >= since)
            )
            or 0
        )

    async def ticket_by_card(self, slack_channel: str, thread_ts: str) -> Ticket | None:
        return await self.s.scalar(
            select(Ticket)
            .where(Ticket.slack_channel == slack_channel, Ticket.slack_ts == thread_ts)
            .with_for_update()
        )

    async def _card_in_flight(self, slack_channel: str) -> bool:
        """Is a card being posted to this channel whose ts is not recorded yet?"""
        return (
            await self.s.scalar(
                select(OutboxRow.id)
                .join(Ticket, Ticket.id == OutboxRow.ticket_id)
                .where(
                    Ticket.slack_channel == slack_channel,
                    Ticket.slack_ts.is_(None),
                    OutboxRow.channel == "slack",
                    OutboxRow.status.in_(("pending", "sending")),
                )
                .limit(1)
            )
            is not None
        )

    # -- history and cards -------------------------------------------------------------------

    def history(
        self, ticket: Ticket, kind: str, actor: str, old: Any, new: Any, reason: str = ""
    ) -> None:
        self.touched.add(ticket.id)
        self.home_teams.add(ticket.team)
        if kind == "assignee":
            self.home_people.update(str(v) for v in (old, new) if v is not None)
        elif kind == "team" and old is not None:
            self.home_teams.add(str(old))
        if ticket.assignee_id:
            self.home_people.add(ticket.assignee_id)
        self.s.add(
            TicketEvent(
                ticket_id=ticket.id,
                kind=kind,
                actor=actor,
                from_value=None if old is None else str(old),
                to_value=None if new is None else str(new),
                reason=reason,
                at=self.now,
            )
        )

    def set_status(self, ticket: Ticket, status: str, actor: str, reason: str = "") -> None:
        if ticket.status != status:
            self.history(ticket, "status", actor, ticket.status, status, reason)
            ticket.status = status
            ticket.updated_at = self.now

    async def card_view(self, ticket: Ticket) -> CardView:
        from bot.workspace.history import (
            story_line,  # bot.workspace.history reads links from bot.console.desk_command
        )

        customer = await self.s.get_one(Customer, ticket.customer_id)
        blocked = bool(
            await self.s.scalar(
                select(Identity.blocked).where(
                    Identity.customer_id == ticket.customer_id,
                    Identity.channel == ticket.channel,
                    Identity.chat_id == ticket.chat_id,
                )
            )
        )
        tags, intent_label = await ticket_labels(self.s, ticket.id)
        model_intent = (ticket.classification or {}).get("intent")
        return CardView(
            ticket_id=ticket.id,
            customer_name=customer.name,
            channel=ticket.channel,
            status=ticket.status,
            priority=ticket.priority,
            reasons=tuple(ticket.priority_reasons),
            first_message=ticket.subject,
            assignee_id=ticket.assignee_id,
            resolved_by=ticket.resolved_by,
            rating=ticket.rating,
            blocked=blocked,
            model=ticket.classification or None,
            team=ticket.team if self.rules.teams else "",
            assigned_by=ticket.assigned_by,
            waiting_reason=ticket.waiting_reason,
            transfer_to=tuple(t for t in self.rules.teams if t != ticket.team),
            sla=ticket.sla,
            assignee_name=ticket.assignee_name,
            tags=tags,
            intent_label=intent_label,
            tag_choices=self.rules.tags,
            intent_choices=known_intents(
                self.rules, model_intent if isinstance(model_intent, str) else None
            ),
            # New menus' block_ids on every update (bot/workspace/controls.py says why).
            revision=f"{int(self.now.timestamp() * 1000):x}",
            suggested=await self.s.scalar(
                select(KbSuggestion.title)
                .where(KbSuggestion.ticket_id == ticket.id)
                .order_by(KbSuggestion.id.desc())
                .limit(1)
            ),
            kb=self.rules.kb.enabled,
            reply_button=self.rules.slack.relay == "composer",
            story=await story_line(self.s, ticket),
        )

    async def refresh_card(self, ticket: Ticket) -> None:
        await self.post_card(ticket, "slack_card_update")

    async def post_card(
        self, ticket: Ticket, kind: Literal["slack_card", "slack_card_update"] = "slack_card"
    ) -> None:
        """The ticket's card as it is now: a new card in its channel, or an update of it."""
        if ticket.incident_only:
            return  # shown on its incident's card only
        view = await self.card_view(ticket)
        self.fx.say(
            Outbound(
                channel="slack",
                kind=kind,
                destination=ticket.slack_channel,
                ticket_id=ticket.id,
                text=card_text(view),
                blocks=tuple(card_blocks(view)),
            )
        )

    def thread(self, ticket: Ticket, text: str, blocks: Sequence[dict[str, Any]] = ()) -> None:
        """Post in the card's thread. ``text`` is mrkdwn (and the fallback when ``blocks``).
        A ticket shown only on an incident's card speaks in the incident's thread."""
        if ticket.incident_only and ticket.incident_id is not None:
            label = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"#{ticket.id}"}]}
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_thread",
                    destination=ticket.slack_channel,
                    ticket_id=ticket.id,
                    incident_id=ticket.incident_id,
                    text=f"#{ticket.id} · {text}",
                    blocks=(label, *blocks) if blocks else (),
                )
            )
            return
        self.fx.say(
            Outbound(
                channel="slack",
                kind="slack_thread",
                destination=ticket.slack_channel,
                ticket_id=ticket.id,
                text=text,
                blocks=tuple(blocks),
            )
        )

    def react(self, ticket: Ticket, ts: str, emoji: str) -> None:
        self.fx.say(
            Outbound(
                channel="slack",
                kind="slack_reaction",
                destination=ticket.slack_channel,
                ticket_id=ticket.id,
                reply_to=ts,
                emoji=emoji,
            )
        )

    def tell_customer(
        self,
        ticket: Ticket,
        text: str,
        *,
        buttons: tuple[Button, ...] = (),
        message: Message | None = None,
    ) -> None:
        self.fx.say(
            Outbound(
                channel=ticket.channel,
                kind="text",
                destination=ticket.chat_id,
                ticket_id=ticket.id,
                text=text,
                buttons=buttons,
            ),
            message,
        )

    def remove_buttons(self, ticket: Ticket, platform_message_id: str | None) -> None:
        """Take the buttons off one of our messages in the customer's chat, where possible."""
        if ticket.channel not in EDITABLE_BUTTONS or not platform_message_id:
            return
        # No ticket_id: if Telegram refuses (the customer deleted the message), that is no news
        # for the agents; the desk ignores a spent button whatever happens to the edit.
        self.fx.say(
            Outbound(
                channel=ticket.channel,
                kind="edit_buttons",
                destination=ticket.chat_id,
                reply_to=platform_message_id,
            )
        )

    async def latest_prompt(self, ticket_id: int) -> Message | None:
        """The rating prompt of the ticket's latest resolve (its buttons are the live ones)."""
        return await self.s.scalar(
            select(Message)
            .where(Message.ticket_id == ticket_id, Message.purpose == "rating_prompt")
            .order_by(Message.id.desc())
            .limit(1)
        )

    async def texts_for(self, ticket: Ticket) -> Any:
        return self.rules.texts.for_language(ticket.language)

    # -- customers ---------------------------------------------------------------------------

    async def customer_message(
        self, ev: CustomerMessage, cls: Classification, detected: str | None = None
    ) -> Ticket:
        """``detected``: the language detected in the text (the dispatcher runs the detector
        outside the transaction), or None when the detector declined."""
        language = choose_language(ev.sender.language, detected)
        ident = await self.identity(ev.channel, ev.sender, ev.chat_id, language)
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
            if ticket.incident_only:
                # Its incident was resolved: the ticket goes on alone, with a card of its own.
                from bot.incidents.desk import IncidentDesk

                await IncidentDesk(self).reopened(ticket)
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

    def _record_inbound(self, ticket: Ticket, ev: CustomerMessage, attachments: list[Any]) -> None:
        """The customer's message as a ticket message row (platform id kept for edits)."""
        self.s.add(
            Message(
                ticket_id=ticket.id,
                direction="in",
                author="customer",
                channel=ev.channel,
                platform_message_id=ev.platform_message_id,
                text=ev.text,
                attachments=attachments,
                created_at=self.now,
            )
        )

    async def _add_customer_message(
        self, ticket: Ticket, ev: CustomerMessage, attachments: list[Any]
    ) -> None:
        customer = await self.s.get_one(Customer, ticket.customer_id)
        self._record_inbound(ticket, ev, attachments)
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
        self.s.add(ticket)
        await self.s.flush()
        self.history(ticket, "created", "customer", None, "new", f"via {ev.channel}")
        self.decided(
            "tickets.created ticket=%d channel=%s priority=%s",
            ticket.id,
            ev.channel,
            cls.priority,
        )
        self.history(ticket, "priority", "desk", None, cls.priority, "; ".join(cls.reasons))
        self.history(ticket, "team", AUTO, None, team.team, team.reason)
        self._record_inbound(ticket, ev, attachments)
        texts = await self.texts_for(ticket)
        from bot.incidents.desk import (
            IncidentDesk,  # bot.incidents.desk renders with bot.core.tickets' helpers
        )

        incident = await IncidentDesk(self).place(ticket, cls)
        self.tell_customer(
            ticket,
            (texts.incident_ack if incident is not None else texts.ack).format(ticket=ticket.id),
            buttons=my_tickets_button(self.rules, texts),
        )
        if ticket.incident_only:
            return ticket  # its incident's card and thread show it; the incident is answered
        choice = await Assigner(self).assign(ticket, announce=False)
        await SlaKeeper(self).refresh(ticket)  # so the card shows its clocks from the start
        await self.post_card(ticket)
        if ev.attachments:  # the card shows the caption; the files go into its thread
            await self._customer_files(ticket, customer.name, ev, caption="")
        if choice.agent is not None:  # the mention is how the agent hears of it
            self.thread(ticket, f"👤 {_cap(choice.reason)}.")
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
        from nlp.priority import LEVELS

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
        self.history(ticket, "edit", "customer", msg.edits[-1]["text"], ev.text)
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
        msg = await self.s.scalar(
            select(Message).where(
                Message.channel == ev.channel,
                Message.platform_message_id == ev.platform_message_id,
                Message.direction == "out",
            )
        )
        if msg is None:
            known = await self.s.scalar(
                select(OutboxRow.id).where(
                    OutboxRow.channel == ev.channel,
                    OutboxRow.platform_message_id == ev.platform_message_id,
                )
            )
            if known is None and await self.s.scalar(
                select(OutboxRow.id)
                .where(OutboxRow.channel == ev.channel, OutboxRow.status == "sending")
                .limit(1)
            ):
                # WhatsApp can report on a message before our send has recorded its id: try
                # again shortly rather than drop the status of an agent's reply.
                raise StatusTooEarly(ev.platform_message_id)
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

    # -- agents ------------------------------------------------------------------------------

    def is_note(self, text: str) -> bool:
        """A note by prefix, however it starts: whitespace, quotes, a Slack quote (``>``,
        sent as ``&gt;``) or formatting before the prefix do not make it a reply."""
        return is_note_text(text, self.rules.slack.note_prefixes)

    async def agent_message(self, ev: AgentMessage) -> None:
        if ev.thread_ts is None or ev.thread_ts == ev.ts:
            return  # not in a thread: chatter in the channel, not about a ticket
        ticket = await self.ticket_by_card(ev.slack_channel, ev.thread_ts)
        if ticket is None:
            if await self._card_in_flight(ev.slack_channel):
                raise CardTooEarly(f"{ev.slack_channel} {ev.thread_ts}")
            return  # a thread that is not a card's: chatter, not about a ticket
        text = ev.text.strip()
        is_note = self.is_note(text)
        # Composer mode: the thread is the team's; the customer gets only what is sent with
        # Reply or the "Send to customer" shortcut. A message also sent to the channel is
        # addressed to colleagues, in either mode.
        internal = is_note or ev.broadcast or self.rules.slack.relay == "composer"
        claimed = False
        if not internal and ticket.assignee_id is None:
            self._assign(ticket, ev.user_id, ev.user_name, "replied in the thread", "replied")
            self.set_status(ticket, "open", ev.user_id, "agent replied")
            # Said in the thread as the Claim button says it, so everyone sees who took it.
            self.thread(ticket, f"🙋 {person(ev.user_id, ev.user_name)} claimed this ticket.")
            claimed = True
        if internal or ticket.assignee_id != ev.user_id or not (text or ev.files):
            self.s.add(
                Message(
                    ticket_id=ticket.id,
                    direction="note",
                    author=ev.user_id,
                    channel="slack",
                    slack_ts=ev.ts,
                    text=ev.text,
                    attachments=[
                        f.model_dump(mode="json", exclude={"url_private"}) for f in ev.files
                    ],
                    created_at=self.now,
                )
            )
            self.react(ticket, ev.ts, self.rules.slack.note_reaction)
            if claimed:
                await self.refresh_card(ticket)
            return
        files = self._agent_files(ticket, ev)
        if not text and not files:  # every file was refused, and the thread says so
            if claimed:
                await self.refresh_card(ticket)
            return
        await self.relay(ticket, ev.user_id, text, slack_ts=ev.ts, files=files)

    async def relay(
        self,
        ticket: Ticket,
        user_id: str,
        text: str,
        *,
        slack_ts: str | None = None,
        files: Sequence[tuple[SlackFile, FileRef]] = (),
    ) -> None:
        """Send ``text`` and ``files`` by ``user_id`` (the ticket's assignee) to the customer:
        a message row each, the customer's copies, the first response, waiting on the
        customer, the card."""
        if text:
            msg = await self._outgoing(ticket, user_id, slack_ts, text=text)
            self.tell_customer(ticket, self.customer_copy(ticket, text), message=msg)
        for f, ref in files:
            attachment = f.model_dump(mode="json", exclude={"url_private"})
            file_msg = await self._outgoing(ticket, user_id, slack_ts, attachments=[attachment])
            self.fx.say(
                Outbound(
                    channel=ticket.channel,
                    kind="file",
                    destination=ticket.chat_id,
                    ticket_id=ticket.id,
                    file=ref,
                ),
                file_msg,
            )
        if ticket.first_response_at is None:
            ticket.first_response_at = self.now
        freed = ticket.status in ("new", "open")
        if freed:
            self.set_status(ticket, "pending", user_id, "agent replied; waiting on customer")
        ticket.updated_at = self.now
        await self.refresh_card(ticket)
        if freed:  # waiting on the customer does not count against capacity
            await self._capacity_freed(ticket.assignee_id)
        self.decided("tickets.reply_relayed ticket=%d agent=%s", ticket.id, user_id)

    async def _outgoing(
        self,
        ticket: Ticket,
        user_id: str,
        slack_ts: str | None,
        *,
        text: str = "",
        attachments: list[dict[str, Any]] | None = None,
    ) -> Message:
        """A message from the agent to the customer, pending delivery (flushed: it has an id)."""
        msg = Message(
            ticket_id=ticket.id,
            direction="out",
            author=user_id,
            channel=ticket.channel,
            slack_ts=slack_ts,
            text=text,
            attachments=attachments or [],
            delivery="pending",
            created_at=self.now,
        )
        self.s.add(msg)
        await self.s.flush()
        return msg

    def customer_copy(self, ticket: Ticket, text: str, name: str | None = None) -> str:
        """Exactly what the customer gets for ``text`` (the Reply modal previews this)."""
        name = name or ticket.assignee_name
        return f"{name}: {text}" if self.rules.texts.show_agent_name and name else text

    def _agent_files(self, ticket: Ticket, ev: AgentMessage) -> list[tuple[SlackFile, FileRef]]:
        """The files the assignee shared that the customer's platform takes, each with how it
        is sent; one over the platform's limit is said in the thread, never silently dropped."""
        accepted: list[tuple[SlackFile, FileRef]] = []
        for f in ev.files:
            plan = outbound_plan(ticket.channel, f.mimetype, f.size)
            if plan.refused is not None or not f.url_private:
                why = plan.refused or "Slack gave no download link for it"
                self.thread(
                    ticket,
                    f"⚠️ Not sent to the customer: {escape(describe('file', f.name, f.size))}."
                    f" {why}. Share a smaller file, or a link.",
                )
                self.react(ticket, ev.ts, self.rules.slack.failed_reaction)
                self.decided(
                    "tickets.file_refused ticket=%d direction=out channel=%s",
                    ticket.id,
                    ticket.channel,
                )
                continue
            ref = FileRef(
                source="slack",
                file_id=f.id,
                kind=plan.kind,
                name=f.name or None,
                mime_type=f.mimetype,
                size=f.size,
                url=f.url_private,
            )
            accepted.append((f, ref))
        return accepted

    def _assign(self, ticket: Ticket, user_id: str, name: str, reason: str, code: str) -> None:
        """``reason`` goes to the history for people; ``code`` is the log's one-word reason."""
        self.history(ticket, "assignee", user_id, ticket.assignee_id, user_id, reason)
        ticket.assignee_id = user_id
        ticket.assignee_name = name or None
        ticket.assigned_by = user_id
        ticket.waiting_reason = None
        self.decided("tickets.assigned ticket=%d agent=%s reason=%s", ticket.id, user_id, code)

    async def may_override(
        self, ticket: Ticket, ev: AgentAction, action: str, **detail: Any
    ) -> bool:
        """Changing a ticket assigned to another person is for the team's lead and supervisors.
        Allowed: written to the audit trail (who, in what role, whose ticket). Refused: audited
        too, and the person who clicked is told privately; nothing changes."""
        actor = ev.user_id
        if ticket.assignee_id is None or ticket.assignee_id == actor:
            return True
        if await has_role(self.s, self.rules, actor, "supervisor"):
            role = "supervisor"
        elif self.rules.team(ticket.team).lead == actor:
            role = "lead"
        else:
            role = None
        self.s.add(
            AuditEntry(
                at=self.now,
                actor=actor,
                action=action if role else "refused",
                target=f"ticket #{ticket.id}",
                detail={"assignee": ticket.assignee_id, "role": role or "agent", **detail}
                | ({} if role else {"wanted": action}),
            )
        )
        if role:
            return True
        self.decided(
            "tickets.override_refused ticket=%d user=%s action=%s", ticket.id, actor, action
        )
        if ev.response_url:
            self.fx.say(
                Outbound(
                    channel="slack",
                    kind="slack_response",
                    destination=ev.response_url,
                    text=(
                        f"Ticket #{ticket.id} is assigned to <@{ticket.assignee_id}>: only they,"
                        " the team's lead or a supervisor can change it. Nothing was done."
                    ),
                )
            )
        return False

    async def agent_action(self, ev: AgentAction) -> None:
        if ev.incident_id is not None:
            from bot.incidents.desk import IncidentDesk

            await IncidentDesk(self).action(ev)
            return
        ticket = await self.s.get(Ticket, ev.ticket_id, with_for_update=True)
        if ticket is None:
            return
        if ev.action == "transfer":
            target = ev.team or ""
            moves = ticket.status in ACTIVE and target != ticket.team and target in self.rules.teams
            if moves and not await self.may_override(ticket, ev, "transferred", team=target):
                return
            await self._transfer(ticket, ev.user_id, target)
            return
        if ev.action in CONTROL_ACTIONS:
            await Controls(self).apply(ticket, ev)
            return
        if ev.action == "claim":
            # A person's claim wins over an automatic assignment (even one made a moment ago,
            # while the card still showed Claim), never over another person's claim.
            was = ticket.assignee_id
            automatic = ticket.assigned_by == AUTO and was != ev.user_id
            if ticket.status in ACTIVE and (was is None or automatic):
                self._assign(ticket, ev.user_id, ev.user_name, "claimed", "claimed")
                if ticket.status == "new":
                    self.set_status(ticket, "open", ev.user_id, "claimed")
                took = f" (it had been given to <@{was}> automatically)" if was else ""
                who = person(ev.user_id, ev.user_name)
                self.thread(ticket, f"🙋 {who} claimed this ticket{took}.")
                await self.refresh_card(ticket)
            return
        if ticket.status in ACTIVE:
            if not await self.may_override(ticket, ev, "resolved"):
                return
            await self.resolve(ticket, ev.user_id, ev.user_name)

    async def resolve(
        self, ticket: Ticket, user_id: str, user_name: str, why: str = "resolved from Slack"
    ) -> None:
        """Resolve an active ticket: the closing message with its rating prompt, a thread line."""
        if ticket.status in ACTIVE:
            if ticket.assignee_id is None:
                self._assign(ticket, user_id, user_name, "resolved it", "resolved")
            self.set_status(ticket, "resolved", user_id, why)
            ticket.resolved_at = self.now
            ticket.resolved_by = user_id
            ticket.rating = None  # each resolve asks anew; earlier ratings stay in the history
            texts = await self.texts_for(ticket)
            text = texts.resolved.format(ticket=ticket.id)
            # The prompt is a message row so the desk learns its platform id (to take its
            # buttons away later) and its buttons can name the resolve they belong to.
            prompt = Message(
                ticket_id=ticket.id,
                direction="system",
                author="desk",
                channel=ticket.channel,
                text=text,
                delivery="pending",
                purpose="rating_prompt",
                created_at=self.now,
            )
            self.s.add(prompt)
            await self.s.flush()
            self.tell_customer(
                ticket,
                text,
                buttons=tuple(
                    Button(text=str(n), data=rating_data(ticket.id, prompt.id, n))
                    for n in range(1, 6)
                ),
                message=prompt,
            )
            if not ticket.incident_only:  # the incident's thread says it once for them all
                self.thread(ticket, f"✅ {person(user_id, user_name)} resolved this ticket.")
            await self.refresh_card(ticket)
            await self._capacity_freed(ticket.assignee_id)
            self.decided("tickets.resolved ticket=%d by=%s", ticket.id, user_id)

    async def _transfer(self, ticket: Ticket, by: str, target: str) -> None:
        """Move an active ticket to another team. Its card is posted in that team's channel
        with the conversation so far in the thread; the old card says where it went and loses
        its buttons. The customer notices nothing."""
        if ticket.status not in ACTIVE or target == ticket.team or target not in self.rules.teams:
            return
        old_team, old_channel, old_ts = ticket.team, ticket.slack_channel, ticket.slack_ts
        team = self.rules.teams[target]
        self.history(ticket, "team", by, old_team, target, f"transferred by <@{by}>")
        if old_ts is not None:
            # Addressed to the old card explicitly (reply_to), so they stay there.
            moved = f"➡️ Transferred to team *{target}* (<#{team.channel}>) by <@{by}>."
            view = await self.card_view(ticket)
            frozen = [b for b in card_blocks(view) if b.get("type") != "actions"]
            frozen.append({"type": "context", "elements": [{"type": "mrkdwn", "text": moved}]})
            for kind, text, blocks in (
                ("slack_card_update", card_text(view), tuple(frozen)),
                (
                    "slack_thread",
                    f"➡️ <@{by}> transferred this ticket to team *{target}* "
                    f"(<#{team.channel}>); it goes on there.",
                    (),
                ),
            ):
                self.fx.say(
                    Outbound(
                        channel="slack",
                        kind=kind,
                        destination=old_channel,
                        ticket_id=ticket.id,
                        reply_to=old_ts,
                        text=text,
                        blocks=blocks,
                    )
                )
        assigner = Assigner(self)
        if ticket.assignee_id is not None and ticket.assignee_id not in team.agents:
            assigner.release(ticket, by, f"transferred to {target}")
        ticket.team = target
        ticket.slack_channel = team.channel
        ticket.slack_ts = None  # the new card's ts, once posted
        ticket.waiting_reason = None
        choice = None
        if ticket.assignee_id is None:
            choice = await assigner.assign(ticket, announce=False)
        await SlaKeeper(self).refresh(ticket)  # a new team may have its own SLA
        await self.post_card(ticket)
        customer = await self.s.get_one(Customer, ticket.customer_id)
        said = (
            await self.s.scalars(
                select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
            )
        ).all()
        head = f"➡️ Transferred from team *{old_team}* by <@{by}>."
        self.thread(ticket, conversation_summary(customer.name, said, head=head))
        if choice is not None and choice.agent is not None:
            self.thread(ticket, f"👤 {_cap(choice.reason)}.")
        self.decided(
            "tickets.transferred ticket=%d from=%s to=%s by=%s", ticket.id, old_team, target, by
        )

    async def _capacity_freed(self, agent: str | None) -> None:
        """The agent holds one open ticket fewer: give waiting tickets of their teams out."""
        if agent is not None:
            await Assigner(self).fill(self.rules.teams_of(agent))


NOTE_LEAD = re.compile(r"^(?:\s|&gt;|>|[\"'`“”‘’«»„*_~])+")


def is_note_text(text: str, prefixes: Sequence[str]) -> bool:
    bare = NOTE_LEAD.sub("", text).lower()
    return any(bare.startswith(p.lower()) or text.strip().lower().startswith(p) for p in prefixes)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with_attachments(text: str, attachments: list[Any]) -> str:
    if not attachments:
        return text
    listed = ", ".join(
        f"📎 {a.get('kind', 'file')}" + (f" {a['name']}" if a.get("name") else "")
        for a in attachments
    )
    return f"{text}\n{listed}" if text else listed
