"""The ticket state machine: what each event does to tickets, and what the desk says because of it.

:class:`Desk` is the one place where a ticket changes state. It is a :class:`bot.core.step.Step`
(the unit of work: session, rules, moment, journal and speech) with the customer's side
(:mod:`bot.core.customer_side`) and the agents' side (:mod:`bot.core.agent_side`) of the
machine. Every method runs inside the dispatcher's one transaction per inbox event: it changes
rows and *queues* what to say; nothing here talks to a platform, so a crash anywhere rolls the
whole step back and the inbox row is simply processed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.agent_side import AgentSide
from bot.core.customer_side import CustomerSide
from bot.core.step import Hooks
from bot.domain.rules import Rules


class Desk(CustomerSide, AgentSide):
    """One step of the ticket state machine. Build it with :class:`Desks` (the composition
    root's factory), which hands it the hooks the features registered."""


@dataclass(frozen=True, slots=True)
class Desks:
    """Makes the desk of one step: ``desks(session, now)``. Built once, by ``bot/wiring.py``."""

    rules: Rules
    hooks: Hooks

    def __call__(self, session: AsyncSession, now: datetime) -> Desk:
        return Desk(session, self.rules, now, hooks=self.hooks)
