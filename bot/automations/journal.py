"""What a step did to its tickets, as the automation engine's events.

The desk journals every change of a ticket as a :class:`TicketEvent` row (``Step.history``,
written in bulk by :mod:`storage.trail`, which journals each row itself) and every message as a
:class:`Message` row. A session listener notes each message as it is added,
so the automations' phase reads exactly what this step (and the automations' own actions) did,
in order, without the core having to announce each kind of change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.orm import Session

from bot.domain.automations import Event, Facts, status_events
from storage import trail
from storage.models import Message, TicketEvent

NEW = trail.NEW
SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")
# Ticket events that change a fact the rules look at.
FACT_KINDS = ("created", "status", "priority", "assignee", "team", "tags", "rating")


def _added(session: Session, instance: object) -> None:
    if isinstance(instance, TicketEvent | Message):
        trail.journal(session, instance)


def listen() -> None:
    """Note every ticket event and message added to any session (idempotent)."""
    if not event.contains(Session, "transient_to_pending", _added):
        event.listen(Session, "transient_to_pending", _added)


def take(session: Session) -> list[TicketEvent | Message]:
    """The rows added since the last take, in order; rows of a rolled-back savepoint (a failed
    event of the dispatcher's batch) are gone from the session and left out."""
    added: list[TicketEvent | Message] = session.info.pop(NEW, [])
    # Ticket events are written in bulk, outside the session (storage/trail.py): those count
    # once written in a transaction that stands.
    return [
        row
        for row in added
        if (row in session and row not in session.deleted) or trail.written(session, row)
    ]


@dataclass(frozen=True, slots=True)
class Happening:
    """One journal row of a ticket, as the engine sees it."""

    ticket_id: int
    at: datetime
    events: tuple[Event, ...]  # () for a change that only moves anchors (or nothing)
    key: str  # the row's id: part of an event rule's exactly-once key
    text: str = ""
    row: TicketEvent | Message | None = None


def _tags(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    try:
        loaded = json.loads(value)
    except ValueError:
        return frozenset()
    return frozenset(str(t) for t in loaded) if isinstance(loaded, list) else frozenset()


def _set(facts: Facts, row: TicketEvent, value: str | None) -> Facts:
    """``facts`` with the field ``row`` changed set to ``value``."""
    if row.kind == "status" and value is not None:
        return replace(facts, status=value)
    if row.kind == "priority" and value is not None:
        return replace(facts, priority=value)
    if row.kind == "assignee":
        return replace(facts, assignee=value)
    if row.kind == "team" and value is not None:
        return replace(facts, team=value)
    if row.kind == "tags":
        return replace(facts, tags=_tags(value))
    if row.kind == "rating":
        return replace(facts, rating=int(value) if value and value.isdigit() else None)
    return facts


def undo(facts: Facts, rows: list[TicketEvent | Message]) -> Facts:
    """The facts before ``rows`` happened, from the facts after them."""
    for row in reversed(rows):
        if isinstance(row, TicketEvent) and row.kind in FACT_KINDS:
            facts = _set(facts, row, row.from_value)
    return facts


def redo(facts: Facts, row: TicketEvent | Message) -> Facts:
    if isinstance(row, TicketEvent) and row.kind in FACT_KINDS:
        return _set(facts, row, row.to_value)
    return facts


def events_of(row: TicketEvent | Message, created: bool) -> tuple[Event, ...] | None:
    """The engine's events for one row; () when the row changes facts without an event of the
    rules; None when it is nothing the engine sees. ``created``: the ticket was created in the
    same step (its first message is the ticket_created event, not a customer_message)."""
    if isinstance(row, Message):
        if row.direction == "in":
            return None if created else ("customer_message",)
        if row.direction == "out" and SLACK_USER.match(row.author):
            return ("agent_reply",)  # an automation's or the desk's own message is no reply
        return None
    if row.kind not in FACT_KINDS:
        return None
    if row.kind == "created":
        return ("ticket_created",)
    if row.from_value is None and row.kind in ("priority", "team"):
        return ()  # set with the ticket, part of ticket_created
    if row.kind == "status" and row.from_value is not None and row.to_value is not None:
        return tuple(status_events(row.from_value, row.to_value))
    if row.kind == "priority":
        return ("priority_changed",)
    if row.kind == "assignee" and row.to_value is not None:
        return ("assigned",)
    if row.kind == "rating" and row.to_value is not None:
        return ("rated",)
    return ()


def happening(row: TicketEvent | Message, events: tuple[Event, ...]) -> Happening:
    prefix = "m" if isinstance(row, Message) else "e"
    at = row.created_at if isinstance(row, Message) else row.at
    text = row.text if isinstance(row, Message) else ""
    return Happening(row.ticket_id, at, events, f"{prefix}{row.id}", text, row)
