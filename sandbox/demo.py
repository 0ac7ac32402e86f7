"""Two weeks of made-up desk history, for trying the reports without waiting two weeks.

    python -m sandbox.demo --database sqlite+aiosqlite:///sandbox/demo.db --until 2026-12-03

writes, into a migrated database, what the desk itself writes as tickets live: the ticket, its
events (created, priority, team, assignee, status, rating), the customer's messages, agents'
replies as the platform accepted them, and rating prompts. The history is random but seeded, so
the same command always writes the same desk. ``deskbot report`` and ``/desk stats`` then have
something to count; the README's chart is drawn from it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import create_engine, migrate, session_factory
from storage.models import Customer, Message, Ticket, TicketEvent

AGENTS = {"support": ["U0ALICE", "U0BOB"], "billing": ["U0CAROL"], "zh": ["U0DAN"]}
PRIORITIES = (("urgent", 0.08), ("high", 0.22), ("normal", 0.6), ("low", 0.1))
INTENTS = ("delivery", "refund", "account", "payment", "other")


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w for w, _ in weighted], [p for _, p in weighted])[0]


async def fill(database_url: str, until: date, days: int = 14, seed: int = 7) -> int:
    """Write ``days`` days of history ending with ``until``; returns the tickets written."""
    rng = random.Random(seed)
    engine = create_engine(database_url)
    await migrate(engine)
    written = 0
    try:
        async with session_factory(engine).begin() as s:
            for n in range(days):
                day = until - timedelta(days=days - 1 - n)
                weekend = day.weekday() >= 5
                for _ in range(rng.randint(4, 8) if weekend else rng.randint(10, 22)):
                    opened = datetime.combine(day, time(8), UTC) + timedelta(
                        minutes=rng.randint(0, 11 * 60)
                    )
                    await _ticket(s, rng, opened, until)
                    written += 1
    finally:
        await engine.dispose()
    return written


async def _ticket(s: AsyncSession, rng: random.Random, opened: datetime, until: date) -> None:
    team = _pick(rng, (("support", 0.7), ("billing", 0.22), ("zh", 0.08)))
    priority = _pick(rng, PRIORITIES)
    channel = rng.choice(("telegram", "whatsapp"))
    customer = Customer(name=f"Customer {rng.randint(100, 999)}", created_at=opened)
    s.add(customer)
    await s.flush()
    ticket = Ticket(
        customer_id=customer.id,
        channel=channel,
        chat_id=f"demo{customer.id}",
        status="new",
        priority=priority,
        classification={"intent": rng.choice(INTENTS)},
        team=team,
        language="zh" if team == "zh" else "en",
        created_at=opened,
        updated_at=opened,
    )
    s.add(ticket)
    await s.flush()
    end = datetime.combine(until + timedelta(days=1), time(), UTC)

    def event(at: datetime, kind: str, actor: str, old: object, new: object) -> None:
        s.add(
            TicketEvent(
                ticket_id=ticket.id,
                kind=kind,
                actor=actor,
                from_value=None if old is None else str(old),
                to_value=None if new is None else str(new),
                reason="demo",
                at=at,
            )
        )

    def say(at: datetime, direction: str, author: str, **kw: str) -> Message:
        m = Message(
            ticket_id=ticket.id,
            direction=direction,
            author=author,
            channel=channel,
            created_at=at,
            **kw,
        )
        s.add(m)
        return m

    event(opened, "created", "customer", None, "new")
    event(opened, "priority", "desk", None, priority)
    event(opened, "team", "desk", None, team)
    say(opened, "in", "customer")
    # Urgent tickets are answered sooner; a few are never answered before the period ends.
    scale = {"urgent": 6.0, "high": 20.0, "normal": 45.0, "low": 120.0}[priority]
    answered = opened + timedelta(minutes=rng.lognormvariate(0, 1.0) * scale)
    if answered >= end or rng.random() < 0.05:
        return
    agent = rng.choice(AGENTS[team])
    event(answered, "assignee", "desk", None, agent)
    ticket.assignee_id = agent
    event(answered, "status", agent, "new", "pending")
    say(answered, "out", agent, delivery="delivered")
    ticket.first_response_at = answered
    status = "pending"
    if rng.random() < 0.35:  # the customer writes again, and is answered again
        again = answered + timedelta(minutes=rng.randint(5, 120))
        say(again, "in", "customer")
        event(again, "status", "customer", "pending", "open")
        answered = again + timedelta(minutes=rng.lognormvariate(0, 1.0) * scale)
        say(answered, "out", agent, delivery="delivered")
        event(answered, "status", agent, "open", "pending")
    resolved = answered + timedelta(minutes=rng.lognormvariate(0, 1.2) * 90)
    if resolved >= end or rng.random() < 0.1:
        ticket.status = status
        return
    event(resolved, "status", agent, status, "resolved")
    say(resolved, "system", "desk", delivery="sent", purpose="rating_prompt")
    ticket.status, ticket.resolved_at, ticket.resolved_by = "resolved", resolved, agent
    if rng.random() < 0.08:  # "it came, but broken": reopened, answered and resolved again
        back = resolved + timedelta(hours=rng.randint(1, 30))
        fixed = back + timedelta(minutes=rng.lognormvariate(0, 1.0) * scale * 2)
        if fixed < end:
            say(back, "in", "customer")
            event(back, "status", "customer", "resolved", "open")
            say(fixed, "out", agent, delivery="delivered")
            event(fixed, "status", agent, "open", "resolved")
            say(fixed, "system", "desk", delivery="sent", purpose="rating_prompt")
            resolved = ticket.resolved_at = fixed
    if rng.random() < 0.6:
        rating = rng.choices((1, 2, 3, 4, 5), (0.06, 0.06, 0.1, 0.28, 0.5))[0]
        rated = resolved + timedelta(minutes=rng.randint(1, 90))
        if rated < end:
            event(rated, "rating", "customer", None, rating)
            ticket.rating = rating
    ticket.updated_at = resolved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite+aiosqlite:///sandbox/demo.db")
    parser.add_argument(
        "--until", default=(datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    )
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    n = asyncio.run(fill(args.database, date.fromisoformat(args.until), args.days))
    print(f"wrote {n} tickets over {args.days} days ending {args.until} into {args.database}")


if __name__ == "__main__":
    main()
