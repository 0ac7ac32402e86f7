"""The unit of work: one step of the desk inside one database transaction, and the ports
through which it reaches the features without importing them.

A :class:`Step` holds the session, the rules and the moment, and *queues* what the desk wants
said (:class:`Effects`); nothing here talks to a platform, so a crash anywhere rolls the whole
step back and the inbox row is simply processed again. :meth:`Step.queue` writes what was said
to the outbox in the same transaction.

The core says what happened and asks ports; the composition root (``bot/wiring.py``) fills
them in:

* **Ports**, for calls that return something: :class:`Cards` (the ticket's card in Slack) and
  :class:`Placer` (does a new ticket belong to an incident?).
* **Domain events**, run in place, in registration order, inside the step's transaction:
  :class:`TicketSeated`, :class:`TicketReopened`, :class:`DeliveryRecorded`,
  :class:`CustomerWrote`, :class:`OutsideWindow`. A handler that
  raises rolls the step back, exactly as any other failure of the step.
* **Phases**: ``after_event`` (the dispatcher runs it after each event) and ``before_queue``
  (at the start of :meth:`Step.queue`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.classifier import Classification
from bot.domain.outbound import Button, Outbound
from bot.domain.rules import Rules
from bot.domain.tickets import EDITABLE_BUTTONS, NORMAL_RANK, PRIORITY_RANK
from storage import trail
from storage.models import Identity, Incident, Message, OutboxRow, Ticket, TicketEvent
from storage.queues import outbox_add

log = logging.getLogger("deskbot.tickets")

CardKind = Literal["slack_card", "slack_card_update"]


# --------------------------------------------------------------------------------------------
# Domain events: what happened, for the features that care


@dataclass(frozen=True, slots=True)
class TicketSeated:
    """An active ticket got an assignee (or waits for one) and is about to get its card."""

    ticket: Ticket


@dataclass(frozen=True, slots=True)
class TicketReopened:
    """The customer wrote again within the reopen window of a resolved ticket."""

    ticket: Ticket


@dataclass(frozen=True, slots=True)
class DeliveryRecorded:
    """The outbox recorded what a platform said about one of its rows."""

    ticket: Ticket | None
    message: Message | None
    delivered: bool


@dataclass(frozen=True, slots=True)
class CustomerWrote:
    """A customer sent something (a message, a button, a contact) at ``at`` by the platform's
    clock: on WhatsApp that opens the 24-hour window again."""

    channel: str
    chat_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class OutsideWindow:
    """WhatsApp would not take an outbox row free-form: the customer last wrote more than 24
    hours ago (the outbox knew before sending, or Meta said 131047 on the send or in a status
    webhook). Whoever hears it decides what becomes of the row; the outbox leaves it failed."""

    row: OutboxRow
    ticket: Ticket | None
    message: Message | None
    detail: str


DomainEvent = TicketSeated | TicketReopened | DeliveryRecorded | CustomerWrote | OutsideWindow
E = TypeVar("E", TicketSeated, TicketReopened, DeliveryRecorded, CustomerWrote, OutsideWindow)


# --------------------------------------------------------------------------------------------
# Ports


class Cards(Protocol):
    """The ticket's card in Slack (``bot/workspace/card_view.py``)."""

    async def post(self, step: Step, ticket: Ticket, kind: CardKind) -> None:
        """The card as the ticket is now: a new card in its channel, or an update of it."""

    async def freeze(self, step: Step, ticket: Ticket, note: str) -> None:
        """The ticket's current card, without its controls and with ``note`` at its foot: it
        stays where it is as a record (the ticket goes on elsewhere)."""


class Placer(Protocol):
    """Is a new ticket part of a surge? (``bot/incidents/desk.py``)"""

    async def place(self, step: Step, ticket: Ticket, cls: Classification) -> Incident | None:
        """The incident the ticket joined (or opened), or None."""


Phase = Callable[["Step"], Awaitable[None]]
Handler = Callable[["Step", Any], Awaitable[None]]


@dataclass
class Hooks:
    """What the core calls out to; filled in by the composition root (``bot/wiring.py``)."""

    cards: Cards
    placer: Placer
    before_queue: list[Phase] = field(default_factory=list)
    after_event: list[Phase] = field(default_factory=list)
    handlers: dict[type[Any], list[Handler]] = field(default_factory=dict)

    def subscribe(self, kind: type[E], handler: Callable[[Step, E], Awaitable[None]]) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    async def publish(self, step: Step, event: DomainEvent) -> None:
        for handler in self.handlers.get(type(event), ()):
            await handler(step, event)


# --------------------------------------------------------------------------------------------
# What a step says


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


@dataclass
class Made:
    """What this step created, so that drawing the card of a ticket it opened does not ask the
    database what it knows already (a first message's card read six rows that could only be
    empty or the step's own). Only what the step made through the session counts; anything
    that changes customers behind the session's back (a merge of two customers) calls
    :meth:`forget`, and the card reads the database again."""

    customers: dict[int, Identity] = field(default_factory=dict)  # customer id → its identity
    tickets: dict[int, Ticket] = field(default_factory=dict)
    labelled: set[int] = field(default_factory=set)  # tickets given tags or an intent here

    def forget(self) -> None:
        self.customers.clear()
        self.tickets.clear()


# --------------------------------------------------------------------------------------------
# The step


class Step:
    """One step of the desk: the session, the rules, the moment, and what it journals and says.

    Features that only journal and speak take a :class:`Step`; those that re-enter the ticket
    state machine take its subclass, :class:`bot.core.tickets.Desk`."""

    def __init__(self, session: AsyncSession, rules: Rules, now: datetime, *, hooks: Hooks) -> None:
        self.s = session
        self.rules = rules
        self.now = now
        self.hooks = hooks
        self.fx = Effects()
        self.touched: set[int] = set()  # tickets this step changed: their SLA clocks are redone
        # By ticket: what the SLA keeper last redid its clocks from in this step (the policy,
        # the history, the clocks it wrote), so an unchanged history is not replayed twice
        # (bot/sla/keeper.py: a new ticket's clocks are set before its card and again after).
        self.sla_inputs: dict[int, tuple[object, ...]] = {}
        # Whose App Home this step changed (bot/workspace/home.py): people, and teams whose
        # members'.
        self.home_people: set[str] = set()
        self.home_teams: set[str] = set()
        self.home_now: set[str] = set()  # people at their Home tab right now: no debounce
        # When the customer whose event this step handles wrote (the platform's clock, never
        # later than ours); a customer's first identity starts its ``last_inbound_at`` there.
        self.customer_wrote_at: datetime | None = None
        self.made = Made()
        # The sender's identity as :meth:`TicketStep.kept_language` read it (None: unknown),
        # for the :meth:`TicketStep.identity` right after it: taken once, never kept longer.
        self.read_identity: dict[tuple[str, str], Identity | None] = {}

    def decided(self, fmt: str, *args: object) -> None:
        """Log a decision at INFO after the commit: structured names, ids, never message text."""
        self.fx.decisions.append((fmt, args))

    async def publish(self, event: DomainEvent) -> None:
        await self.hooks.publish(self, event)

    async def finish(self) -> None:
        """The end of one event's work (the ``after_event`` phase: SLA clocks of what changed)."""
        await trail.write_async(self.s)  # its ticket events, with their ids, for the phases
        for phase in self.hooks.after_event:
            await phase(self)

    async def queue(self, key: str) -> int:
        """Write what this step wants said to the outbox, in its transaction; ``key`` makes the
        rows' idempotency keys, so a step that is redone cannot queue twice."""
        for phase in self.hooks.before_queue:
            await phase(self)
        rows: list[dict[str, Any]] = []
        for n, (out, message) in enumerate(self.fx.items):
            if message is not None and message.id is None:
                await self.s.flush()
            rank = NORMAL_RANK
            if out.kind == "slack_card" and out.ticket_id is not None:
                ticket = await self.s.get(Ticket, out.ticket_id)  # in the session already
                rank = PRIORITY_RANK.get(ticket.priority, NORMAL_RANK) if ticket else NORMAL_RANK
            own_key, due, own_rank = self.fx.timing.get(n, (None, None, None))
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
                    "next_attempt_at": due or self.now,
                    "created_at": self.now,
                }
            )
        if rows:
            await outbox_add(self.s, rows)
        return len(rows)

    # -- the journal -------------------------------------------------------------------------

    def history(
        self, ticket: Ticket, kind: str, actor: str, old: Any, new: Any, reason: str = ""
    ) -> None:
        self.touched.add(ticket.id)
        self.home_teams.add(ticket.team)
        if kind in ("tags", "intent"):
            self.made.labelled.add(ticket.id)
        if kind == "assignee":
            self.home_people.update(str(v) for v in (old, new) if v is not None)
        elif kind == "team" and old is not None:
            self.home_teams.add(str(old))
        if ticket.assignee_id:
            self.home_people.add(ticket.assignee_id)
        # Kept aside and written with the step's others in one INSERT (storage/trail.py).
        trail.note(
            self.s.sync_session,
            TicketEvent(
                ticket_id=ticket.id,
                kind=kind,
                actor=actor,
                from_value=None if old is None else str(old),
                to_value=None if new is None else str(new),
                reason=reason,
                at=self.now,
            ),
        )

    def set_status(self, ticket: Ticket, status: str, actor: str, reason: str = "") -> None:
        if ticket.status != status:
            self.history(ticket, "status", actor, ticket.status, status, reason)
            ticket.status = status
            ticket.updated_at = self.now

    # -- speech ------------------------------------------------------------------------------

    async def refresh_card(self, ticket: Ticket) -> None:
        await self.hooks.cards.post(self, ticket, "slack_card_update")

    async def post_card(self, ticket: Ticket, kind: CardKind = "slack_card") -> None:
        """The ticket's card as it is now: a new card in its channel, or an update of it."""
        await self.hooks.cards.post(self, ticket, kind)

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
