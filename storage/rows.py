"""New rows written with a Core ``INSERT … RETURNING id`` instead of the ORM's flush.

A step makes a customer, their identity, a ticket, its first message and its surge signature,
and needs most of their ids at once. Added to the session, each cost an ORM flush (the unit of
work sorting, the mapper's bookkeeping, then the same one-row ``INSERT``): about 0.6 ms a
flush in a profiled burst, where :func:`insert_row` costs about half that (docs/performance.md,
"Issue 27, fourth slice"). It writes the object's row with one cached Core statement, gives
the object its id, and attaches it to the session as a persistent object, exactly as if it had
been flushed: what the step changes on it afterwards is an ``UPDATE`` at the next flush, and
``session.get`` finds it in the identity map.

The values are the object's attributes and, for those it was not given, the columns' Python
defaults (as the ORM's flush would take them); the object holds every column afterwards, so
nothing of it is expired or read back. On PostgreSQL the statement goes through
``Session.execute``, so the session's ``do_orm_execute`` listeners run before it (the trail's
kept rows are written first, :mod:`storage.trail`); on the inline SQLite connection it runs on
the driver, after writing the trail's kept rows itself (:class:`storage.statements.Statement`).
On SQLite it does not autoflush, which it does not need: the parents of the rows written
here (customer → identity, ticket) are written here too, and earlier. Column types seal as they
do in a flush (``storage/crypto.py``'s type decorators are the table's own).

A savepoint that rolls back takes the rows written inside it with it: their objects are
expunged from the session (the ORM does the same with the objects its flush inserted), so that
a later row given the same id (SQLite reuses the highest rowid) is not mistaken for them. The
automations' journal sees nothing of this by itself (its listener hears objects *added*): a
caller writing a :class:`storage.models.Message` feeds it explicitly (``trail.journal``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, event, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, SessionTransaction, make_transient_to_detached

from storage.statements import Statement, column_default
from storage.trail import within

T = TypeVar("T")

_INSERTED = "deskbot.rows.inserted"  # (object, the transaction it was written in)


class _Plan:
    """How one mapped class's rows are written: its statement and its columns' defaults."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        table = mapper.local_table
        assert isinstance(table, Table)
        auto = table.autoincrement_column  # the id the database gives, if it gives one
        self.id_key = mapper.get_property_by_column(auto).key if auto is not None else None
        self.columns: list[tuple[str, str, Callable[[], Any] | None]] = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if prop.key == self.id_key:
                continue
            if column.server_default is not None and column.default is None:
                raise TypeError(f"{table.name}.{column.name}: a server default is not read back")
            self.columns.append((prop.key, column.key, column_default(column)))
        # The values as named parameters (not a column's own name: Core keeps those for itself).
        values: dict[str, Any] = {
            column_key: bindparam(f"v_{column_key}") for _, column_key, _ in self.columns
        }
        self.statement = (
            Statement(insert(table).values(values).returning(auto), autoflush=False)
            if auto is not None
            else None
        )
        self.plain = Statement(insert(table).values(values), autoflush=False)
        self.cls: type[Any] = mapper.class_


_PLANS: dict[type[Any], _Plan] = {}


def _plan(cls: type[Any]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(inspect(cls))
    return plan


def _values(plan: _Plan, obj: Any) -> dict[str, Any]:
    """The statement's parameters: the object's attributes, and for those it was not given
    its columns' Python defaults, which it then holds too (as after a flush)."""
    given = obj.__dict__
    values: dict[str, Any] = {}
    for key, column_key, default in plan.columns:
        if key in given:
            value = given[key]
        else:
            value = default() if default is not None else None
            setattr(obj, key, value)  # the object holds every column, as after a flush
        values[f"v_{column_key}"] = value
    return values


async def insert_row(session: AsyncSession, obj: T) -> T:
    """Write ``obj`` (a new, transient ORM object) with one ``INSERT`` now and attach it to
    the session as persistent, its id set; returns it.

    On the inline SQLite connection the statement runs on the driver (storage/statements.py:
    compiled once, the values through the columns' own bind processors, sealing included; the
    trail's kept rows written first, as the session's ``do_orm_execute`` does before a
    statement): about 0.07 ms a row against 0.35 ms through ``Session.execute`` on the sixth
    slice's machine (docs/performance.md)."""
    plan = _plan(type(obj))
    values = _values(plan, obj)
    if plan.statement is not None:
        setattr(obj, plan.id_key or "id", int(await plan.statement.scalar(session, **values)))
    else:
        await plan.plain.run(session, **values)
    _attach(session.sync_session, obj)
    return obj


def _attach(session: Session, obj: Any) -> None:
    make_transient_to_detached(obj)  # what it holds is what the database holds
    session.add(obj)  # persistent, in the identity map
    tx = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_INSERTED, []).append((obj, tx))


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    inserted = session.info.get(_INSERTED)
    if not inserted:
        return
    kept = []
    for obj, tx in inserted:
        if within(tx, previous):
            if obj in session:
                session.expunge(obj)
        else:
            kept.append((obj, tx))
    session.info[_INSERTED] = kept


def _after_commit(session: Session) -> None:
    session.info.pop(_INSERTED, None)


def listen() -> None:
    """Expunge what a rolled-back savepoint wrote (idempotent)."""
    for name, fn in (("after_soft_rollback", _after_rollback), ("after_commit", _after_commit)):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


listen()
