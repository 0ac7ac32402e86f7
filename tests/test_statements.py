"""Statements compiled once and run on SQLite's driver (storage/statements.py): the same rows,
objects and errors as through ``Session.execute``, on SQLite and PostgreSQL alike; a read sees
the step's unflushed changes, a write in a savepoint goes with it, a sealed address is found
under every key a rotation still reads."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, Text, bindparam, insert, select, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import crypto
from storage.crypto import Keyring, address_forms
from storage.db import session_factory
from storage.models import Customer, Identity, Ticket
from storage.statements import Statement, address_in
from tests.test_rows import no_keyring_after, statements

__all__ = ["no_keyring_after"]  # the keyring installed by a test is taken away after it

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
OLD, NEW = crypto.new_key(), crypto.new_key()

IDENTITY_AND_CUSTOMER = Statement(
    select(Identity, Customer)
    .join(Customer, Customer.id == Identity.customer_id)
    .where(Identity.channel == bindparam("channel"), address_in(Identity.external_id, "sender"))
)
TICKETS_OF = Statement(
    select(Ticket.id, Ticket.status, Ticket.created_at)
    .where(Ticket.customer_id.in_(bindparam("customers", expanding=True)), Ticket.status == "new")
    .order_by(Ticket.id)
)
_TICKETS: Table = Ticket.__table__  # type: ignore[assignment]
RESOLVE = Statement(
    update(_TICKETS)
    .where(_TICKETS.c.id == bindparam("b_id"))
    .values(status="resolved", resolved_at=bindparam("b_at"))
)
_CUSTOMERS: Table = Customer.__table__  # type: ignore[assignment]
CUSTOMER_WITH_ID = Statement(
    insert(_CUSTOMERS).values(
        id=bindparam("v_id"), name=bindparam("v_name"), created_at=bindparam("v_at")
    )
)


def executed(engine: AsyncEngine) -> AbstractContextManager[list[str]]:
    """The statements SQLAlchemy's engine executes meanwhile (not those run on the driver)."""
    return statements(engine)


async def _customer(engine: AsyncEngine, name: str, sender: str, tickets: int = 0) -> int:
    async with session_factory(engine).begin() as s:
        customer = Customer(name=name, created_at=T0)
        s.add(customer)
        await s.flush()
        s.add(
            Identity(
                customer_id=customer.id, channel="telegram", external_id=sender, chat_id=sender
            )
        )
        for i in range(tickets):
            s.add(
                Ticket(
                    customer_id=customer.id,
                    channel="telegram",
                    chat_id=sender,
                    status="new",
                    priority="normal",
                    created_at=T0 + timedelta(minutes=i),
                    updated_at=T0,
                )
            )
        return customer.id


async def test_rows_and_objects_are_what_the_orm_gives(engine: AsyncEngine) -> None:
    first = await _customer(engine, "Ada", "100", tickets=2)
    second = await _customer(engine, "Bo", "200", tickets=1)
    sessions = session_factory(engine)
    with executed(engine) as seen:
        async with sessions.begin() as s:
            found = await IDENTITY_AND_CUSTOMER.first(s, channel="telegram", sender=["100"])
            assert found is not None
            ident, customer = found
            assert (ident.external_id, customer.name, customer.id) == ("100", "Ada", first)
            assert ident in s and customer in s  # persistent: the session's own objects
            again = await IDENTITY_AND_CUSTOMER.first(s, channel="telegram", sender=["100"])
            assert again is not None and again[1] is customer
            assert await IDENTITY_AND_CUSTOMER.first(s, channel="telegram", sender=["9"]) is None
            rows = await TICKETS_OF.rows(s, customers={first, second})  # a set: its items
            assert [(status, at) for _, status, at in rows] == [
                ("new", T0),
                ("new", T0 + timedelta(minutes=1)),
                ("new", T0),
            ]
            assert await TICKETS_OF.rows(s, customers=[]) == []
            reads = sum(1 for statement in seen if statement.startswith("SELECT"))
            customer.name = "Ada Lovelace"  # a change to a loaded object: written at the commit
    async with sessions() as s:
        assert await s.scalar(select(Customer.name).where(Customer.id == first)) == "Ada Lovelace"
    # On SQLite the reads ran on the driver, unseen by the engine; elsewhere through it.
    assert reads == (0 if engine.dialect.name == "sqlite" else 5)
    assert any(statement.startswith("UPDATE") for statement in seen)  # the flush, as ever


async def test_a_read_sees_the_steps_unflushed_changes(engine: AsyncEngine) -> None:
    customer = await _customer(engine, "Cy", "300", tickets=1)
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        ticket = await s.scalar(select(Ticket).where(Ticket.customer_id == customer))
        assert ticket is not None
        ticket.status = "resolved"  # not flushed yet
        s.add(
            Ticket(
                customer_id=customer,
                channel="telegram",
                chat_id="300",
                status="new",
                priority="high",
                created_at=T0 + timedelta(hours=1),
                updated_at=T0,
            )
        )
        rows = await TICKETS_OF.rows(s, customers=[customer])
        assert [at for _, _, at in rows] == [T0 + timedelta(hours=1)]


async def test_writes_go_with_the_savepoint_they_were_made_in(engine: AsyncEngine) -> None:
    customer = await _customer(engine, "Di", "400", tickets=2)
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        ids = [i for i, _, _ in await TICKETS_OF.rows(s, customers=[customer])]
        assert await RESOLVE.run(s, b_id=ids[0], b_at=T0) == 1  # outside the savepoint: stays
        with pytest.raises(RuntimeError):
            async with s.begin_nested():
                # The savepoint's first statement: its SAVEPOINT must come before it.
                assert await RESOLVE.run_many(s, [{"b_id": ids[1], "b_at": T0}]) == 1
                raise RuntimeError("an event that fails")
        after = await TICKETS_OF.rows(s, customers=[customer])
        assert [i for i, _, _ in after] == [ids[1]]
    async with sessions() as s:
        statuses = dict(
            (await s.execute(select(Ticket.id, Ticket.status).where(Ticket.id.in_(ids)))).all()
        )
    assert statuses == {ids[0]: "resolved", ids[1]: "new"}


async def test_a_sealed_address_is_found_under_an_old_key_and_opened(engine: AsyncEngine) -> None:
    crypto.install(Keyring.of(OLD))
    await _customer(engine, "Ed", "555123")  # stored under the old key
    crypto.install(Keyring.of(NEW, [OLD]))  # rotated: the new key writes, both read
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        stored = await s.scalar(select(type_coerce(Identity.external_id, Text)))
        assert stored == Keyring.of(OLD).address("555123")
        found = await IDENTITY_AND_CUSTOMER.first(
            s, channel="telegram", sender=address_forms("555123")
        )
        assert found is not None
        assert found[0].external_id == "555123"  # opened by the column's result processor
        assert len(address_forms("555123")) == 3  # under each key, and in clear


async def test_a_refused_write_is_sqlalchemys_error(engine: AsyncEngine) -> None:
    customer = await _customer(engine, "Flo", "600")
    sessions = session_factory(engine)
    with pytest.raises(IntegrityError):
        async with sessions.begin() as s:
            await CUSTOMER_WITH_ID.run(s, v_id=customer, v_name="again", v_at=T0)
