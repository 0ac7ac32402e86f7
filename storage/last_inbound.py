"""When customers last wrote (``identities.last_inbound_at``), written once per transaction.

Every message, button or contact from a customer moves their identities' ``last_inbound_at``
forward (WhatsApp's 24-hour window counts from it, ``bot/window``). It was one ``UPDATE`` a
message, run as an ORM bulk update that also searched the session for the rows it changed.
Now :func:`note` keeps the time aside in the session, and the transaction writes everything
kept in one ``UPDATE`` just before it commits (an executemany of one cached statement; under a
data key, where a chat is looked up in each of its stored forms, one statement whose ``CASE``
gives each chat its own time), each row still only moved forward. Until then, :func:`kept`
tells a reader what the database does not hold yet: the one reader inside a transaction, the
window line of a card, App Home or the Reply modal (``bot/workspace/window_line.py``), takes
the later of the two.

A savepoint that rolls back (a failed event of the dispatcher's batch) takes what it noted
with it. A chat's rows are matched by channel and chat, as before, through the
:class:`storage.crypto.Address` comparison (every stored form of a sealed address).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, event, literal, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from storage.crypto import address_forms
from storage.models import Identity
from storage.trail import within

_KEPT = "deskbot.last_inbound.kept"  # (channel, chat_id, at, the transaction it belongs to)
_CHUNK = 200  # chats an UPDATE (each a few bound values)


_TABLE: Table = Identity.__table__  # type: ignore[assignment]
_PLAIN = (
    update(_TABLE)
    .where(
        _TABLE.c.channel == bindparam("b_channel"),
        _TABLE.c.chat_id == bindparam("b_chat"),
        or_(_TABLE.c.last_inbound_at.is_(None), _TABLE.c.last_inbound_at < bindparam("b_at")),
    )
    .values(last_inbound_at=bindparam("b_at"))
)


def note(session: AsyncSession | Session, channel: str, chat_id: str, at: datetime) -> None:
    """The customer of ``channel``/``chat_id`` wrote at ``at``: written at the commit."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    tx = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(_KEPT, []).append((channel, chat_id, at, tx))


def kept(session: AsyncSession | Session, channel: str, chat_id: str) -> datetime | None:
    """The latest time noted for this chat and not written yet, if any."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    times = [at for ch, chat, at, _ in sync.info.get(_KEPT, ()) if (ch, chat) == (channel, chat_id)]
    return max(times, default=None)


def write(session: Session) -> int:
    """Write what was noted (one ``UPDATE`` per 200 chats); returns the chats written."""
    noted: list[tuple[str, str, datetime, Any]] = session.info.pop(_KEPT, [])
    if not noted:
        return 0
    latest: dict[tuple[str, str], datetime] = {}
    for channel, chat_id, at, _ in noted:
        key = (channel, chat_id)
        if key not in latest or at > latest[key]:
            latest[key] = at
    chats = sorted(latest.items())
    conn = session.connection()
    if all(len(address_forms(chat_id)) == 1 for (_, chat_id), _ in chats):
        # Every chat is stored as given (no data key): one cached statement, an executemany.
        conn.execute(
            _PLAIN,
            [{"b_channel": ch, "b_chat": chat, "b_at": at} for (ch, chat), at in chats],
        )
        return len(chats)
    # Sealed chats are looked up under every key still read (a CASE gives each its time).
    when = Identity.last_inbound_at.type  # UTC, stored as the column stores it
    for start in range(0, len(chats), _CHUNK):
        chunk = chats[start : start + _CHUNK]
        whose = [
            (and_(Identity.channel == channel, Identity.chat_id == chat_id), literal(at, when))
            for (channel, chat_id), at in chunk
        ]
        at_of = case(*whose, else_=None)
        conn.execute(
            update(Identity)
            .where(
                or_(*(match for match, _ in whose)),
                or_(Identity.last_inbound_at.is_(None), Identity.last_inbound_at < at_of),
            )
            .values(last_inbound_at=at_of)
            .execution_options(synchronize_session=False)
        )
    return len(chats)


def _before_commit(session: Session) -> None:
    if session.info.get(_KEPT):
        write(session)


def _after_rollback(session: Session, previous: SessionTransaction) -> None:
    noted = session.info.get(_KEPT)
    if noted:
        session.info[_KEPT] = [n for n in noted if not within(n[3], previous)]


def listen() -> None:
    """Write what was noted before a commit, drop it with a rollback (idempotent)."""
    for name, fn in (("before_commit", _before_commit), ("after_soft_rollback", _after_rollback)):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


listen()
