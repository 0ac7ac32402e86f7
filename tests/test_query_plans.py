"""Every statement of a desk's ordinary work finds its rows through an index, not by reading a
whole table or a whole index (SQLite's own query plans): a lookup that reads every ticket or
every inbox row costs more with every day a desk runs, which a benchmark on a new database
never shows.

The flow: new customers and a returning one on Telegram and WhatsApp (spooled webhooks among
them), their acknowledgements and cards, a WhatsApp delivery status, an agent's reply, a
resolve; and a second of the loops' housekeeping (the heartbeat's takeover of dead desks' work).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.delivery.leases import Heartbeat
from bot.domain.events import CustomerMessage, DeliveryStatus, Sender
from tests.test_desk_core import make_harness

# Tables whose whole is a handful of rows by nature: the desks running, the agents configured,
# the people who opened the app's Home.
SMALL = {"processes", "agents", "home_views"}


def _traced(raw: sqlite3.Connection, seen: dict[str, str]) -> None:
    def trace(statement: str) -> None:
        if statement.split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "INSERT"):
            seen.setdefault(re.sub(r"'[^']*'|\b\d+\b", "?", statement), statement)

    raw.set_trace_callback(trace)


def _full_scans(raw: sqlite3.Connection, seen: dict[str, str]) -> list[str]:
    found = []
    for shape, statement in seen.items():
        for *_, step in raw.execute("EXPLAIN QUERY PLAN " + statement).fetchall():
            table = re.match(r"SCAN (\w+)", step)
            if (
                table
                and table.group(1) not in SMALL
                and "CONSTANT ROW" not in step
                # An INSERT's plan lists the foreign-key lookups SQLite would make in a table
                # that refers to the new row; it makes them only while a violation is pending.
                and not (shape.startswith("INSERT") and f"FROM {table.group(1)}" not in shape)
            ):
                found.append(f"{step}: {' '.join(shape.split())}")
    return found


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_desks_statements_find_their_rows_by_index(engine: AsyncEngine) -> None:
    desk = make_harness(engine)
    seen: dict[str, str] = {}
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection.raw  # type: ignore[union-attr]
    _traced(raw, seen)
    spool = desk.inbox._spool
    assert spool is not None
    with spool._inbox.connect() as reader:  # the spool's reader: is a webhook's event known?
        driver = reader.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        _traced(driver, seen)

    def whatsapp(n: int, text: str) -> CustomerMessage:
        number = f"1555000{n:04d}"
        return CustomerMessage(
            channel="whatsapp",
            external_id=f"wamid.in{n}",
            conversation=f"whatsapp:{number}",
            sender=Sender(external_id=number, name="Wen"),
            chat_id=number,
            platform_message_id=f"wamid.in{n}",
            text=text,
            received_at=desk.clock.now(),
        )

    say: Callable[..., CustomerMessage] = desk.customer
    await desk.inbox.accept([say("my parcel is late", chat="7"), whatsapp(1, "refund")], {})
    await desk.inbox.turn()
    await desk.settle()
    await desk.inbox.accept([say("it is order 12", chat="7"), say("hello", chat="8")], {})
    async with desk.sessions.begin() as busy:
        await busy.connection()  # the one writer is busy: a webhook goes through the spool
        assert await desk.inbox.accept([whatsapp(2, "where is my order")], {}) == 1
        assert await desk.inbox.accept([whatsapp(2, "where is my order")], {}) == 0  # again
    await desk.inbox.turn()
    await desk.settle()
    raw.set_trace_callback(None)  # the test's own read of the ticket: not the desk's
    ticket = await desk.ticket()
    _traced(raw, seen)
    status = DeliveryStatus(
        channel="whatsapp",
        external_id="wamid.out1:delivered",
        conversation="whatsapp:15550000001",
        platform_message_id="wamid.out1",
        status="delivered",
        received_at=desk.clock.now(),
    )
    await desk.inbox.accept([desk.agent(ticket, "U0ALICE", "on it"), status], {})
    await desk.inbox.turn()
    await desk.settle()
    await desk.inbox.accept([desk.action(ticket, "resolve")], {})
    await desk.inbox.turn()
    await desk.settle()
    heartbeat = Heartbeat(desk.sessions, desk.dispatcher._desks, desk.clock)
    await heartbeat.beat()
    await heartbeat.reap()
    raw.set_trace_callback(None)

    assert len(seen) > 20  # the flow ran its statements here
    assert _full_scans(raw, seen) == []
