"""Lease owners: claims say who holds them, and a desk that restarts takes over at once what
this host's dead processes held, and only that."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.base.clock import FrozenClock
from bot.base.process import is_dead, this_process
from bot.delivery.leases import UNKNOWN_OUTCOME, Heartbeat, reclaim_dead_leases
from bot.domain.rules import parse_rules
from storage.db import session_factory
from storage.models import Customer, InboxRow, Message, OutboxRow, Process, Ticket
from storage.queues import inbox_add, inbox_claim, outbox_add, outbox_claim

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=60)
RULES = parse_rules({"version": 1})
HOST = socket.gethostname()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _owners() -> dict[str, str]:
    return {
        "dead": f"{HOST}:{_dead_pid()}:0badb007",
        "earlier_me": f"{HOST}:{os.getpid()}:0ldb007",  # our pid, another boot id
        "alive": f"{HOST}:{os.getppid()}:a11ve000",  # the test runner's parent is running
        "other_host": f"elsewhere.example:{_dead_pid()}:0badb007",
        "unknown": "an-old-desk",
    }


def test_who_is_dead() -> None:
    owners = _owners()
    assert is_dead(owners["dead"]) and is_dead(owners["earlier_me"])
    assert not is_dead(owners["alive"])
    assert not is_dead(owners["other_host"])  # can't see its processes: wait its lease out
    assert not is_dead(owners["unknown"])
    assert not is_dead(this_process())
    assert this_process().startswith(f"{HOST}:{os.getpid()}:")


def _inbox(conversation: str) -> dict[str, Any]:
    return {
        "channel": "telegram",
        "external_id": conversation,
        "conversation": conversation,
        "kind": "customer_message",
        "payload": {},
        "raw": {},
        "status": "pending",
        "attempts": 0,
        "received_at": NOW,
    }


def _outbox(
    key: str, payload: dict[str, Any], *, ticket: int, message: int | None = None
) -> dict[str, Any]:
    channel = payload["channel"]
    return {
        "idempotency_key": key,
        "channel": channel,
        "destination_key": f"{channel}:{payload['destination']}"
        if channel != "slack"
        else f"slack:ticket:{ticket}:{key}",
        "payload": payload,
        "ticket_id": ticket,
        "message_id": message,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": NOW,
        "created_at": NOW,
    }


async def test_claims_record_their_owner_and_dead_ones_are_taken_over_at_once(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    owners = _owners()
    async with sessions.begin() as s:
        s.add(Customer(id=1, name="Kim", created_at=NOW))
        await s.flush()
        s.add(
            Ticket(
                id=1,
                customer_id=1,
                channel="telegram",
                chat_id="11",
                status="open",
                priority="normal",
                slack_channel="C0SUPPORT",
                slack_ts="1700000000.000001",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await s.flush()
        s.add(
            Message(
                id=1,
                ticket_id=1,
                direction="out",
                author="U0ALICE",
                channel="telegram",
                text="We're on it",
                delivery="pending",
                created_at=NOW,
            )
        )
        await inbox_add(s, [_inbox(name) for name in owners])
        text = {"channel": "telegram", "kind": "text", "ticket_id": 1}
        await outbox_add(
            s,
            [
                _outbox("ack", {**text, "destination": "11", "text": "Thanks, #1"}, ticket=1),
                _outbox(
                    "reply",
                    {**text, "destination": "12", "text": "We're on it"},
                    ticket=1,
                    message=1,
                ),
                _outbox(
                    "card",
                    {
                        "channel": "slack",
                        "kind": "slack_card",
                        "destination": "C0SUPPORT",
                        "ticket_id": 1,
                    },
                    ticket=1,
                ),
                _outbox("alive", {**text, "destination": "13", "text": "Thanks, #1"}, ticket=1),
                _outbox("far", {**text, "destination": "14", "text": "Thanks, #1"}, ticket=1),
            ],
        )
    # Each row is claimed by the owner named after it.
    by_name = {
        "dead": ["dead", "ack", "reply", "card"],
        "alive": ["alive"],
        "other_host": ["other_host", "far"],
        "earlier_me": ["earlier_me"],
        "unknown": ["unknown"],
    }
    for owner, names in by_name.items():
        async with sessions.begin() as s:
            for row in await inbox_claim(s, now=NOW, lease=LEASE, limit=10, owner=owners[owner]):
                if row.external_id not in names:
                    await s.execute(
                        update(InboxRow)
                        .where(InboxRow.id == row.id)
                        .values(status="pending", lease_until=None, lease_owner=None)
                    )
            for out in await outbox_claim(s, now=NOW, lease=LEASE, limit=10, owner=owners[owner]):
                if out.idempotency_key not in names:
                    await s.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id == out.id)
                        .values(
                            status="pending",
                            lease_until=None,
                            lease_owner=None,
                            attempts=OutboxRow.attempts - 1,
                        )
                    )
    async with sessions() as s:
        held = {r.external_id: r.lease_owner for r in (await s.scalars(select(InboxRow))).all()}
        assert held == {name: owners[name] for name in owners}

    later = NOW + timedelta(seconds=1)  # a restart a second later, not a minute
    done = await reclaim_dead_leases(sessions, wiring.desks(RULES), later)
    assert sorted(done.owners) == sorted([owners["dead"], owners["earlier_me"]])
    assert (done.inbox, done.outbox, done.unknown, done.resent_replies) == (2, 2, 1, 1)

    async with sessions.begin() as s:
        claimed = await inbox_claim(s, now=later, lease=LEASE, limit=10, owner=this_process())
        assert sorted(r.external_id for r in claimed) == ["dead", "earlier_me"]
        sending = await outbox_claim(s, now=later, lease=LEASE, limit=10, owner=this_process())
        got = {r.idempotency_key: r for r in sending}
    # The agent's reply and the Slack card go again; the desk's acknowledgement does not.
    assert {"reply", "card"} <= set(got) and not {"ack", "alive", "far"} & set(got)
    async with sessions() as s:
        ack = await s.scalar(select(OutboxRow).where(OutboxRow.idempotency_key == "ack"))
        assert ack is not None and (ack.status, ack.last_error) == ("unknown", UNKNOWN_OUTCOME)
        notes = [
            r.payload["text"]
            for r in (
                await s.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.idempotency_key.like("reclaim:%"))
                    .order_by(OutboxRow.id)
                )
            ).all()
        ]
    assert notes == [
        '⚠️ The desk restarted while sending this to the customer: "Thanks, #1". '
        "They may not have got it; it was not sent again, to avoid a duplicate.",
        '⚠️ The desk restarted while sending this reply to the customer: "We\'re on it". '
        "It is being sent again, so they may get it twice.",
    ]
    # A second restart finds nothing more to do, and adds no second note.
    again = await reclaim_dead_leases(sessions, wiring.desks(RULES), later)
    assert again.owners == []


async def test_two_beats_of_one_owner_at_once_both_succeed(engine: AsyncEngine) -> None:
    """Two desks in one process share an owner id (the tests restart one beside another): their
    heartbeats may register the row at the same moment, and neither may fail on its key."""
    sessions = session_factory(engine)
    clock = FrozenClock(datetime(2026, 12, 7, 10, 0, tzinfo=UTC))
    beats = [Heartbeat(sessions, wiring.desks(RULES), clock) for _ in range(2)]
    for _ in range(3):
        await asyncio.gather(*(b.beat() for b in beats))
        async with sessions() as s:
            await s.execute(delete(Process))  # as a clean stop (leave) of one of them does
            await s.commit()
    await asyncio.gather(*(b.beat() for b in beats))
    clock.advance(seconds=1)
    await beats[0].beat()
    async with sessions() as s:
        [row] = (await s.scalars(select(Process))).all()
    assert row.owner == this_process()
    assert row.heartbeat_at.replace(tzinfo=UTC) == clock.now()
