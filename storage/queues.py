"""The durable inbox and outbox: write, dedupe, and claim rows safely across processes.

A claim takes the *head* row of each conversation (inbox) or destination (outbox): the oldest
row not yet finished, so that order is kept per key while different keys run in parallel.
On PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED`` inside the claiming
transaction, so two processes never claim the same row; a claimed row carries a lease, and a
row whose lease ran out (its process died) is claimed again. SQLite has one writer at a time
(``BEGIN IMMEDIATE``), which gives the same guarantee within the one process it serves.

A claim records its ``lease_owner`` (``host:pid:boot id``, see :mod:`bot.delivery.leases`), so a
desk
that restarts can tell its dead predecessor's leases from a live process's and take them over
at once (:func:`open_leases` and the two below it) instead of waiting them out.

With a data key the order keys are sealed addresses (storage/crypto.Address), one form per
key (and the clear one of rows stored before the desk had a key). A new row of a
conversation whose unfinished rows are still under an old key's form (or clear) takes that
form (:func:`_follow_open`), so the conversation's rows stay one group, in id order;
``deskbot keys rotate`` moves a conversation's rows to the current key's form all at once,
under a per-form lock the new rows take too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Integer,
    Row,
    Table,
    Text,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage import crypto
from storage.models import AutomationTimer, InboxRow, OutboxRow, Process, SlaTimer, SurgeLock
from storage.statements import Statement

Timer = TypeVar("Timer", SlaTimer, AutomationTimer)

INBOX_OPEN = ("pending", "processing")
OUTBOX_OPEN = ("pending", "sending")
# Outbox rows that still wait their turn in their destination's order (held: bot/window).
OUTBOX_WAITING = (*OUTBOX_OPEN, "held")


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _lock_key(form: str) -> int:
    return int.from_bytes(hashlib.sha256(form.encode()).digest()[:8], "big", signed=True)


async def lock_address(session: AsyncSession, form: str, *, shared: bool = False) -> None:
    """On PostgreSQL, hold a transaction's lock on one stored form of an order key: new rows
    choosing their form (shared among themselves) and the rotation moving the form's rows
    (exclusive) take turns. SQLite has one writer at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await session.execute(text(f"SELECT {lock}(:k)"), {"k": _lock_key(form)})


# (table, key id) where this process found no unfinished row under another form than the key's
_settled: set[tuple[str, str]] = set()


async def _follow_open(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    column: Any,
    field: str,
    status: Any,
    waiting: Sequence[str],
) -> Sequence[dict[str, Any]]:
    """``rows`` with their order key in the stored form of the key's unfinished rows, when
    those are still under an old key or clear (the rotation has not moved them yet)."""
    ring = crypto.keyring()
    if ring is None or not rows:
        return rows
    raw = type_coerce(column, Text)
    if not ring.old_ids:
        # No rotation due: other forms can only be rows stored in clear before the desk had a
        # key. Once none of them is unfinished, this process stops asking (a fleet turns the
        # key on together: docs/deploying.md), so the steady state costs no query.
        settled = (column.class_.__tablename__, ring.key_id)
        if settled in _settled:
            return rows
        unsettled = await session.scalar(
            select(raw)
            .where(
                status.in_(waiting),
                ~raw.startswith(f"{crypto.ADDRESS_PREFIX}{ring.key_id}:", autoescape=True),
                *(~raw.startswith(p, autoescape=True) for p in crypto.CLEAR_PREFIXES),
            )
            .limit(1)
        )
        if unsettled is None:
            _settled.add(settled)
            return rows
    others = {v: crypto.address_forms(v)[1:] for v in {str(r[field]) for r in rows}}
    for form in sorted({f for forms in others.values() for f in forms}, key=_lock_key):
        await lock_address(session, form, shared=True)
    chosen: dict[str, str] = {}
    for value, forms in others.items():
        found = None
        if forms:
            found = await session.scalar(
                select(raw).where(raw.in_(forms), status.in_(waiting)).limit(1)
            )
        chosen[value] = found or value  # a stored form is written as it is (sealed already)
    return [{**row, field: chosen[str(row[field])]} for row in rows]


_INBOX: Table = InboxRow.__table__  # type: ignore[assignment]
_OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]
_INSERTS: dict[str, Any] = {"postgresql": pg_insert, "sqlite": sqlite_insert}
# One row a statement, the row as its parameters: built once (building an INSERT with its
# values for every row was about a tenth of the PostgreSQL burst's Python), compiled once per
# set of columns. With a list of rows on PostgreSQL (no RETURNING) SQLAlchemy sends them as the
# driver's executemany (asyncpg: one pipeline of single-row executions, in order), not as one
# multi-row VALUES.
_INBOX_ADD_ONE = {
    name: insert(_INBOX).on_conflict_do_nothing(index_elements=["channel", "external_id"])
    for name, insert in _INSERTS.items()
}
_OUTBOX_ADD_ONE = {
    name: insert(_OUTBOX).on_conflict_do_nothing(index_elements=["idempotency_key"])
    for name, insert in _INSERTS.items()
}
# The SQLite forms of inbox_add and outbox_add for many rows: the one-row INSERT run for each
# row in the order given, so the rows take ascending ids in that order, on the driver
# (storage/statements.py: compiled once for each set of columns, sqlite3's executemany, which
# counts the rows it inserted). Through the session it was SQLAlchemy's ``insertmanyvalues``
# with a RETURNING to count them, about 0.4 ms of Python a statement.
_INBOX_ADD = Statement(_INBOX_ADD_ONE["sqlite"], by_column=True)
_OUTBOX_ADD = Statement(_OUTBOX_ADD_ONE["sqlite"], by_column=True)


async def inbox_add(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert inbox rows, silently dropping any whose (channel, external_id) exists already.

    On SQLite one multi-row INSERT (a poll of Telegram's brings up to 100 updates at once),
    whose rows take ascending ids in the order given: a conversation's order is the id order.
    On PostgreSQL one INSERT a row, for the reason :func:`outbox_add` gives."""
    if not rows:
        return 0
    added = 0
    rows = await _follow_open(
        session, rows, InboxRow.conversation, "conversation", InboxRow.status, INBOX_OPEN
    )
    ring = crypto.keyring()
    if ring is not None and ring.old_ids and rows:
        # During a rotation a platform's redelivery may find its first delivery's id still
        # sealed under the old key, where the unique key does not see it: look under each.
        ids = {str(row["external_id"]) for row in rows}
        channels = {str(row["channel"]) for row in rows}
        found = await session.execute(
            select(InboxRow.channel, InboxRow.external_id).where(
                InboxRow.channel.in_(channels), InboxRow.external_id.in_(ids)
            )
        )
        seen = {(channel, external_id) for channel, external_id in found}
        rows = [r for r in rows if (r["channel"], str(r["external_id"])) not in seen]
    if session.get_bind().dialect.name == "sqlite" and len({tuple(r) for r in rows}) == 1:
        return await _INBOX_ADD.run_many(session, rows)
    add = _INBOX_ADD_ONE[session.get_bind().dialect.name]
    for row in rows:
        result = await session.execute(add, row)
        added += max(getattr(result, "rowcount", 0) or 0, 0)
    return added


def _locking(stmt: Any, session: AsyncSession) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=stmt.selected_columns[0].table)
    return stmt


def _claim(
    model: type[InboxRow] | type[OutboxRow],
    key: Any,
    still_open: Sequence[str],
    claimable: Any,
    order: Sequence[Any],
    leased: str,
    returning: Sequence[Any],
) -> Callable[[str], Any]:
    """A claim's statement for a dialect: one ``UPDATE … RETURNING`` that leases up to
    ``limit`` heads (each ``key``'s first row still open) of the rows ``claimable`` at ``now``,
    in ``order``; on PostgreSQL locked with ``SKIP LOCKED``. Built once per dialect (building it
    was more than running it), its time, lease, owner and limit as parameters."""
    table: Table = model.__table__  # type: ignore[assignment]
    earlier = aliased(model)
    blocked_by_earlier = exists().where(
        getattr(earlier, key.key) == key,
        earlier.id < model.id,
        earlier.status.in_(still_open),
    )
    built: dict[str, Any] = {}

    def statement(dialect: str) -> Any:
        if dialect not in built:
            heads = (
                select(model.id)
                .where(claimable, ~blocked_by_earlier)
                .order_by(*order)
                .limit(bindparam("limit", type_=Integer))
            )
            if dialect == "postgresql":
                heads = heads.with_for_update(skip_locked=True)
            built[dialect] = (
                update(table)
                .where(table.c.id.in_(heads.scalar_subquery()))
                .values(
                    status=leased,
                    lease_until=bindparam("lease_until", type_=model.lease_until.type),
                    lease_owner=bindparam("owner", type_=model.lease_owner.type),
                    attempts=table.c.attempts + 1,
                )
                .returning(*returning)
            )
        return built[dialect]

    return statement


async def _leased(
    session: AsyncSession,
    claim: Callable[[str], Any],
    now: datetime,
    lease: timedelta,
    limit: int,
    owner: str | None,
) -> Sequence[Row[Any]]:
    params = {"now": now, "limit": limit, "lease_until": now + lease, "owner": owner}
    return (await session.execute(claim(session.get_bind().dialect.name), params)).all()


_NOW = bindparam("now", type_=InboxRow.lease_until.type)
_INBOX_CLAIM = _claim(
    InboxRow,
    InboxRow.conversation,
    INBOX_OPEN,
    or_(
        InboxRow.status == "pending",
        and_(InboxRow.status == "processing", InboxRow.lease_until < _NOW),
    ),
    [InboxRow.id],
    "processing",
    [_INBOX.c.id, _INBOX.c.attempts, _INBOX.c.payload, _INBOX.c.conversation, _INBOX.c.external_id],
)


async def inbox_claim(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    owner: str | None = None,
) -> list[Row[Any]]:
    """Claim up to ``limit`` head rows (one per conversation) and lease them: each row's id,
    attempts (this one counted), payload, conversation and external id, in id order.

    One statement, its rows never ORM objects: the claim runs before every batch, and on an
    idle desk after every message (the ORM's select, then its flush, was about a millisecond
    of the path from a customer's message to the card)."""
    rows = await _leased(session, _INBOX_CLAIM, now, lease, limit, owner)
    return sorted(rows, key=lambda row: int(row.id))  # RETURNING's order is not the ids'


async def inbox_behind(session: AsyncSession, claimed: Sequence[Row[Any]]) -> bool:
    """Whether a conversation of the ``claimed`` rows has a later message waiting, claimable
    once the claimed one is done (the claim takes only a conversation's first open row)."""
    if not claimed:
        return False
    later = await session.scalar(
        select(InboxRow.id)
        .where(
            InboxRow.status == "pending",
            InboxRow.conversation.in_({row.conversation for row in claimed}),
            InboxRow.id.not_in([row.id for row in claimed]),
        )
        .limit(1)
    )
    return later is not None


async def timers_claim(
    session: AsyncSession,
    model: type[Timer],
    now: datetime,
    lease: timedelta,
    owner: str,
    limit: int,
) -> list[Timer]:
    """Due timers (the SLA's, the automations') no live lease holds, oldest due first, leased
    to ``owner``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so processes claim different ones."""
    stmt = (
        select(model)
        .where(model.due_at <= now, or_(model.lease_until.is_(None), model.lease_until < now))
        .order_by(model.due_at, *model.__table__.primary_key)
        .limit(limit)
    )
    rows = list((await session.scalars(_locking(stmt, session))).all())
    for row in rows:
        row.lease_until = now + lease
        row.lease_owner = owner
    return rows


async def outbox_add(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Queue ``rows`` in this order (a row whose idempotency key is queued already is skipped).

    On SQLite one multi-row INSERT, whose rows take ascending ids in the order given (the
    outbox's order per destination is the id order). On PostgreSQL one INSERT a row, which
    makes that order certain there too (the order in which a multi-row VALUES list draws from
    a sequence is not documented): as one executemany, which asyncpg sends as one pipeline
    (each row's execution in turn, in the order given, then one answer) instead of a round
    trip a row."""
    if not rows:
        return
    rows = await _follow_open(
        session,
        rows,
        OutboxRow.destination_key,
        "destination_key",
        OutboxRow.status,
        OUTBOX_WAITING,
    )
    uniform = len({tuple(r) for r in rows}) == 1
    if session.get_bind().dialect.name == "sqlite" and uniform:
        await _OUTBOX_ADD.run_many(session, rows)
    elif uniform:
        await session.execute(_OUTBOX_ADD_ONE["postgresql"], list(rows))
    else:
        add = _OUTBOX_ADD_ONE[session.get_bind().dialect.name]
        for row in rows:
            await session.execute(add, row)


_OUTBOX_CLAIM = _claim(
    OutboxRow,
    OutboxRow.destination_key,
    OUTBOX_OPEN,
    or_(
        and_(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= _NOW),
        and_(OutboxRow.status == "sending", OutboxRow.lease_until < _NOW),
    ),
    # Urgent cards first when many are due (a burst waiting on Slack's rate limit).
    [OutboxRow.rank, OutboxRow.next_attempt_at, OutboxRow.id],
    "sending",
    list(_OUTBOX.c),
)


async def outbox_claim(
    session: AsyncSession,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    owner: str | None = None,
) -> list[Row[Any]]:
    """Claim due head rows, one per destination, and lease them: each row's columns as they
    are now (attempts counting this one), urgent first, in one statement, as the inbox's."""
    rows = await _leased(session, _OUTBOX_CLAIM, now, lease, limit, owner)
    # RETURNING's order is not the claim's
    return sorted(rows, key=lambda row: (row.rank, row.next_attempt_at, row.id))


async def open_leases(session: AsyncSession) -> set[str]:
    """The owners of every lease still held on an inbox or outbox row."""
    owners: set[str] = set()
    for table, held in ((InboxRow, "processing"), (OutboxRow, "sending")):
        found = await session.scalars(
            select(table.lease_owner)
            .where(table.status == held, table.lease_owner.is_not(None))
            .distinct()
        )
        owners.update(o for o in found.all() if o)
    return owners


async def expire_inbox_leases(
    session: AsyncSession, owners: Sequence[str], expired: datetime
) -> int:
    """Make the inbox rows these (dead) owners held claimable now. Returns how many."""
    if not owners:
        return 0
    result = await session.execute(
        update(InboxRow)
        .where(InboxRow.status == "processing", InboxRow.lease_owner.in_(list(owners)))
        .values(lease_until=expired, lease_owner=None)
    )
    return max(getattr(result, "rowcount", 0) or 0, 0)


async def release_lost_claims(
    session: AsyncSession,
    model: type[InboxRow] | type[OutboxRow],
    owner: str,
    leased_until_from: datetime,
) -> int:
    """Give back the rows ``owner`` leased in a claim it never heard the answer of (the database
    committed it as the link was cut): every row of ``model`` leased to ``owner`` until
    ``leased_until_from`` or later, that is by a claim made at or after the failed one began
    (the claim's time plus the lease). They are pending again: nothing was done with them.
    Returns how many."""
    held = "processing" if model is InboxRow else "sending"
    result = await session.execute(
        update(model)
        .where(
            model.status == held,
            model.lease_owner == owner,
            model.lease_until >= leased_until_from,
        )
        .values(status="pending", lease_until=None, lease_owner=None)
    )
    return max(getattr(result, "rowcount", 0) or 0, 0)


async def outbox_held_by(session: AsyncSession, owners: Sequence[str]) -> list[OutboxRow]:
    """The outbox rows these (dead) owners were sending, locked, oldest first."""
    if not owners:
        return []
    stmt = (
        select(OutboxRow)
        .where(OutboxRow.status == "sending", OutboxRow.lease_owner.in_(list(owners)))
        .order_by(OutboxRow.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list((await session.scalars(stmt)).all())


async def inbox_lag_seconds(session: AsyncSession, now: datetime) -> float:
    oldest = await session.scalar(
        select(func.min(InboxRow.received_at)).where(InboxRow.status.in_(INBOX_OPEN))
    )
    return max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0


async def outbox_backlog(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.status.in_(OUTBOX_OPEN))
        )
        or 0
    )


async def release_outbox(
    session: AsyncSession,
    row_id: int,
    *,
    status: str,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "lease_until": None, "last_error": error}
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    await session.execute(update(OutboxRow).where(OutboxRow.id == row_id).values(**values))


async def lock_key_row(session: AsyncSession, team: str, now: datetime) -> None:
    """Hold the team's ``surge_locks`` row until the transaction ends (made on first use), so
    incident decisions for one team are taken one at a time, across processes."""
    await session.execute(
        _insert(session)(SurgeLock)
        .values(team=team, updated_at=now)
        .on_conflict_do_nothing(index_elements=["team"])
    )
    await session.execute(select(SurgeLock.team).where(SurgeLock.team == team).with_for_update())


async def process_beat(session: AsyncSession, owner: str, now: datetime) -> None:
    """A desk's heartbeat: its ``processes`` row registered, or its ``heartbeat_at`` moved on.

    One upsert, so two beats of one owner at once (a desk restarted inside one process, as the
    tests do, beside another desk of that process; or a beat racing another desk's reaping of
    the row) cannot both insert it and fail on the key."""
    host, pid, _ = owner.rsplit(":", 2)
    stmt = _insert(session)(Process).values(
        owner=owner, host=host, pid=int(pid), started_at=now, heartbeat_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["owner"], set_={"heartbeat_at": now})
    )
