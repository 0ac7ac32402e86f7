"""New rows written with Core inserts (storage/rows.py) and when customers last wrote, written
once per transaction (storage/last_inbound.py): the same rows as the ORM's flush and the
per-message UPDATE wrote, sealed alike, and gone with a savepoint that rolls back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import crypto, last_inbound
from storage.crypto import Keyring
from storage.db import session_factory
from storage.models import Customer, Identity, Message, Ticket
from storage.rows import insert_row

KEY = crypto.new_key()
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_keyring_after() -> Iterator[None]:
    yield
    crypto.install(None)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)


async def test_inserted_rows_are_sealed_persistent_and_updated_like_flushed_ones(
    engine: AsyncEngine,
) -> None:
    crypto.install(Keyring.of(KEY))
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        customer = await insert_row(s, Customer(name="Sam Sealed", created_at=T0))
        ident = await insert_row(
            s,
            Identity(
                customer_id=customer.id, channel="whatsapp", external_id="15551234", chat_id="1555"
            ),
        )
        ticket = await insert_row(
            s,
            Ticket(
                customer_id=customer.id,
                channel="whatsapp",
                chat_id="1555",
                status="new",
                priority="normal",
                subject="my card 4111 was charged twice",
                created_at=T0,
                updated_at=T0,
            ),
        )
        message = await insert_row(
            s,
            Message(
                ticket_id=ticket.id,
                direction="in",
                author="customer",
                channel="whatsapp",
                text="my card 4111 was charged twice",
                created_at=T0,
            ),
        )
        # Persistent, in the identity map, holding its columns' defaults: nothing read back.
        assert all(o in s for o in (customer, ident, ticket, message))
        assert await s.get(Ticket, ticket.id) is ticket
        assert (ticket.priority_reasons, ticket.incident_only, ident.blocked) == ([], False, False)
        assert (message.attachments, message.edits, customer.note) == ([], [], None)
        ticket.assignee_id = "U1"  # an UPDATE at the commit, as after a flush
    async with engine.connect() as conn:
        name = (await conn.execute(text("SELECT name FROM customers"))).scalar_one()
        external = (await conn.execute(text("SELECT external_id FROM identities"))).scalar_one()
        said = (await conn.execute(text("SELECT text FROM messages"))).scalar_one()
        subject = (await conn.execute(text("SELECT subject FROM tickets"))).scalar_one()
    assert name.startswith("dk1:") and said.startswith("dk1:") and subject.startswith("dk1:")
    assert "15551234" not in external
    async with sessions() as s:
        again = await s.get_one(Ticket, ticket.id)
        assert (again.assignee_id, again.subject) == ("U1", "my card 4111 was charged twice")
        assert (await s.scalars(select(Identity.external_id))).one() == "15551234"
        assert (await s.scalars(select(Message.text))).one() == "my card 4111 was charged twice"


async def test_rows_inserted_in_a_savepoint_that_rolls_back_leave_the_session(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        kept = await insert_row(s, Customer(name="before", created_at=T0))
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                gone = await insert_row(s, Customer(name="rolled back", created_at=T0))
                raise RuntimeError("the step failed")
        assert gone not in s and kept in s
        # On SQLite the next row takes the rolled-back one's id: it attaches all the same.
        after = await insert_row(s, Customer(name="after", created_at=T0))
        assert await s.get(Customer, after.id) is after
    async with sessions() as s:
        names = (await s.scalars(select(Customer.name).order_by(Customer.id))).all()
    assert names == ["before", "after"]


@pytest.mark.parametrize("keyed", [False, True], ids=["clear", "sealed"])
async def test_when_customers_wrote_is_one_update_at_the_commit_and_only_moves_forward(
    engine: AsyncEngine, keyed: bool
) -> None:
    if keyed:
        crypto.install(Keyring.of(KEY))  # chats matched through each of their stored forms
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        customer = await insert_row(s, Customer(name="C", created_at=T0))
        for n, (chat, last) in enumerate(
            [("a", None), ("b", T0), ("c", T0 + timedelta(hours=2)), ("d", T0)]
        ):
            await insert_row(
                s,
                Identity(
                    customer_id=customer.id,
                    channel="whatsapp",
                    external_id=f"x{n}",
                    chat_id=chat,
                    last_inbound_at=last,
                ),
            )
    with statements(engine) as seen:
        async with sessions.begin() as s:
            last_inbound.note(s, "whatsapp", "a", T0 + timedelta(hours=1))
            last_inbound.note(s, "whatsapp", "b", T0 + timedelta(minutes=5))
            last_inbound.note(s, "whatsapp", "b", T0 + timedelta(hours=1))  # the later counts
            last_inbound.note(s, "whatsapp", "c", T0 + timedelta(hours=1))  # older: stays
            last_inbound.note(s, "telegram", "d", T0 + timedelta(hours=1))  # another channel
            with pytest.raises(RuntimeError):
                async with s.begin_nested():
                    last_inbound.note(s, "whatsapp", "d", T0 + timedelta(hours=3))
                    raise RuntimeError("the step failed")
            # Not written yet, but a card drawn now knows it.
            assert last_inbound.kept(s, "whatsapp", "b") == T0 + timedelta(hours=1)
            assert last_inbound.kept(s, "whatsapp", "d") is None
    updates = [x for x in seen if x.startswith("UPDATE identities")]
    assert len(updates) == 1
    async with sessions() as s:
        found = dict((await s.execute(select(Identity.chat_id, Identity.last_inbound_at))).all())
    assert found == {
        "a": T0 + timedelta(hours=1),
        "b": T0 + timedelta(hours=1),
        "c": T0 + timedelta(hours=2),
        "d": T0,
    }
