"""The audit trail written in bulk: a step's ticket events as one multi-row ``INSERT``.

A step journals every change of a ticket as a :class:`storage.models.TicketEvent` row. Added to
the session one by one, each was its own ``INSERT … RETURNING id`` at the next flush (the ORM
needs each row's id back, and on SQLite it cannot match a multi-row ``RETURNING`` to its
objects); a new ticket wrote three that way, an assignment two more. Now :func:`note` keeps the
row aside, and :func:`write` writes every row kept so far with one Core ``INSERT`` and gives
each row its id. It is written before anything could read it: before any statement the session
runs (``do_orm_execute``), before a flush and before a commit, and explicitly by the step when
it finishes (the automations read the rows, with their ids, right after). Rows noted outside
a savepoint that has begun since are written once it has ended, never inside it.

The rows never enter the session (the ORM neither flushes nor tracks them); the automations'
journal (:mod:`bot.automations.journal`) is fed them by :func:`note` in the order the step made
them, among the messages the ORM adds, and takes those :func:`written` holds. A savepoint that
rolls back (a failed event of the dispatcher's batch) takes its rows with it: those not yet
written are dropped, and those written are forgotten (the database dropped them).

Ids: on SQLite a multi-row ``INSERT`` (``insertmanyvalues``, the rows given as parameters, so
that the statement is compiled once) gives its rows ascending ids in the order of its
``VALUES``, so the ids returned, sorted, are the rows' in order; on PostgreSQL SQLAlchemy's
``insertmanyvalues`` with ``sort_by_parameter_order`` returns them in the order of the rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, insert
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from storage.models import Message, TicketEvent

# The automations' journal: the rows a step made, in order (bot/automations/journal.py).
NEW = "deskbot.automations.new"
_KEPT = "deskbot.trail.kept"  # noted, not written yet: (row, the transaction it belongs to)
_WRITTEN = "deskbot.trail.written"  # id(row) → (row, its transaction): written, not committed
_COLUMNS = ("ticket_id", "kind", "actor", "from_value", "to_value", "reason", "at")
_CHUNK = 500  # rows a statement (SQLite's limit on bound values is far above 7 × 500)


def note(session: Session, row: TicketEvent) -> None:
    """Keep ``row`` to be written with the step's others, and journal it for the automations."""
    tx = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_KEPT, []).append((row, tx))
    session.info.setdefault(NEW, []).append(row)


def journal(session: Session, row: TicketEvent | Message) -> None:
    """Journal a row the ORM adds (the automations' listener)."""
    session.info.setdefault(NEW, []).append(row)


def written(session: Session, row: object) -> bool:
    """Whether ``row`` is a trail row written by :func:`write` in a transaction that stands."""
    return id(row) in session.info.get(_WRITTEN, {})


def write(session: Session) -> int:
    """Write the rows kept so far (one ``INSERT`` per 500), in the session's transaction."""
    kept: list[tuple[TicketEvent, SessionTransaction | None]] = session.info.pop(_KEPT, [])
    # Rows noted in a transaction that encloses the current savepoint wait for it to end:
    # written inside it, they would go if it rolled back. Those of a savepoint released since
    # belong to the current transaction now.
    current = session.get_nested_transaction() or session.get_transaction()
    later = [(r, tx) for r, tx in kept if tx is not None and not within(tx, current)]
    if later:
        session.info[_KEPT] = later
        kept = [(r, tx) for r, tx in kept if tx is None or within(tx, current)]
    if not kept:
        return 0
    table: Table = TicketEvent.__table__  # type: ignore[assignment]
    conn = session.connection()
    done = session.info.setdefault(_WRITTEN, {})
    for start in range(0, len(kept), _CHUNK):
        chunk = kept[start : start + _CHUNK]
        values = [{c: getattr(row, c) for c in _COLUMNS} for row, _ in chunk]
        for v in values:
            if v["reason"] is None:
                v["reason"] = ""
        if conn.dialect.name == "sqlite":
            # The rows as parameters: SQLAlchemy's insertmanyvalues sends the same multi-row
            # INSERT, from a statement compiled once (``insert().values([...])`` has no cache
            # key, so it was compiled anew for every step).
            ids = sorted(conn.execute(insert(table).returning(table.c.id), values).scalars())
        else:
            ids = list(
                conn.execute(
                    insert(table).returning(table.c.id, sort_by_parameter_order=True), values
                ).scalars()
            )
        for (row, tx), row_id in zip(chunk, ids, strict=True):
            row.id = row_id
            done[id(row)] = (row, tx)
    return len(kept)


async def write_async(session: Any) -> int:
    """:func:`write` for an :class:`~sqlalchemy.ext.asyncio.AsyncSession`."""
    if not session.sync_session.info.get(_KEPT):
        return 0
    return int(await session.run_sync(write))


def within(tx: SessionTransaction | None, outer: SessionTransaction | None) -> bool:
    """Whether ``tx`` is ``outer`` or a savepoint inside it (what a rollback of ``outer``
    takes back)."""
    while tx is not None:
        if tx is outer:
            return True
        tx = tx.parent
    return False


def _before_statement(state: ORMExecuteState) -> None:
    if state.session.info.get(_KEPT):
        write(state.session)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(_KEPT):
        write(session)


def _before_commit(session: Session) -> None:
    if session.info.get(_KEPT):
        write(session)


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    kept = session.info.get(_KEPT)
    if kept:
        session.info[_KEPT] = [(r, tx) for r, tx in kept if not within(tx, previous)]
    done = session.info.get(_WRITTEN)
    if done:
        session.info[_WRITTEN] = {k: v for k, v in done.items() if not within(v[1], previous)}


def _after_commit(session: Session) -> None:
    session.info.pop(_WRITTEN, None)


def listen() -> None:
    """Write kept rows before anything reads them, and drop them with a rollback (idempotent)."""
    for name, fn in (
        ("do_orm_execute", _before_statement),
        ("before_flush", _before_flush),
        ("before_commit", _before_commit),
        ("after_soft_rollback", _after_rollback),
        ("after_commit", _after_commit),
    ):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


listen()
