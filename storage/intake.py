"""The intake spool: on SQLite, where a platform's events are made durable before the desk
answers it, without waiting for the desk's one writer.

SQLite has one writer at a time, and the desk's one connection is usually in the dispatcher's
transaction (one event's step, 10–30 ms under load, run on the event loop). A webhook whose
events went straight into the inbox waited for that transaction to end, for its own group
commit and for the loop's turns between them: the acknowledgement's p99 was three steps long
(docs/performance.md, "Issue 27, eighth slice"). So the events are written first into a
SQLite file of their own beside the database (``desk.db`` → ``desk-intake.db``), whose lock
nobody else holds, and the platform is answered; :class:`bot.delivery.dispatcher.DbInbox`
moves them into the inbox as soon as the one writer is free, in arrival order, and deletes
them from the spool only once the inbox has them. A desk that stops between the two finds
them at its next start; the inbox's unique key (channel, external id) makes a second move of
the same row do nothing, so no event is lost and none is taken twice.

Both connections here are synchronous SQLAlchemy connections on the event loop's thread, like
the desk's inline SQLite statements (storage/inline_sqlite.py): a spool write is a few hundred
microseconds, and nothing else writes the spool (no lock to wait for). A platform's
redelivery is answered as a duplicate when the inbox or the spool has its id already (the
inbox read through a connection of its own: in WAL mode a reader never waits for the writer).

The spool keeps each row as one JSON document, sealed whole under the desk's data key like
the inbox's payloads (storage/crypto.py), so the spool's schema does not follow the inbox's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    make_url,
    select,
)
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.pool import StaticPool

from storage.crypto import Address, EncryptedJSON
from storage.models import InboxRow

_META = MetaData()
SPOOL = Table(
    "intake",
    _META,
    Column("id", Integer, primary_key=True),  # arrival order
    Column("channel", String(20), nullable=False),
    Column("external_id", Address(), nullable=False),
    Column("row", EncryptedJSON(), nullable=False),  # the inbox row to write
    UniqueConstraint("channel", "external_id"),
)
# The inbox row's times, kept as ISO 8601 in the JSON document.
_TIMES = ("received_at", "processed_at")
_INBOX = InboxRow.__table__


def database_path(database_url: str | None) -> Path | None:
    """The file of the SQLite database at ``database_url``; None for PostgreSQL and for an
    in-memory database (no other connection can see it, nor would a spool outlive it)."""
    if database_url is None:
        return None
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database))


def _engine(path: Path, *, busy_ms: int, writes: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        poolclass=StaticPool,
        connect_args={"check_same_thread": False, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # as the database's own (storage/db.py)
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    if writes:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # A reader runs each SELECT alone (autocommit: the driver's isolation_level None), which
    # reads a snapshot beside the writer, never taking its lock; no BEGIN and ROLLBACK around
    # it, two statements fewer for every webhook.
    return engine


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _from_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        k: datetime.fromisoformat(v) if k in _TIMES and isinstance(v, str) else v
        for k, v in doc.items()
    }


class Spool:
    """The spool beside the SQLite database ``database`` (``desk.db`` → ``desk-intake.db``)."""

    def __init__(self, database: Path) -> None:
        path = self.path_beside(database)
        self.path = path
        self._spool = _engine(path, busy_ms=1000, writes=True)
        # Reads only (is an event's id in the inbox already?), beside the desk's writer.
        self._inbox = _engine(database, busy_ms=100, writes=False)
        _META.create_all(self._spool)

    @staticmethod
    def path_beside(database: Path) -> Path:
        return database.with_name(f"{database.stem}-intake{database.suffix or '.db'}")

    def add(self, rows: Sequence[dict[str, Any]]) -> int:
        """Write inbox rows (each with ``channel`` and ``external_id``) durably, in order,
        dropping those whose id the inbox or the spool has already; how many were new."""
        ids = sorted({str(row["external_id"]) for row in rows})
        channels = sorted({str(row["channel"]) for row in rows})
        with self._inbox.connect() as conn:
            known = {
                (channel, external_id)
                for channel, external_id in conn.execute(
                    # By channel and id: the inbox's unique index. By the id alone this read
                    # every event the desk ever took in, for every spooled webhook.
                    select(_INBOX.c.channel, _INBOX.c.external_id).where(
                        _INBOX.c.channel.in_(channels), _INBOX.c.external_id.in_(ids)
                    )
                )
            }
        fresh = [row for row in rows if (row["channel"], str(row["external_id"])) not in known]
        if not fresh:
            return 0
        params = [
            {"channel": row["channel"], "external_id": row["external_id"], "row": _to_json(row)}
            for row in fresh
        ]
        with self._spool.begin() as conn:
            result = conn.execute(insert(SPOOL).on_conflict_do_nothing(), params)
        return max(result.rowcount, 0)

    def take(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest ``limit`` rows waiting to be moved into the inbox, with their spool ids."""
        with self._spool.connect() as conn:
            found = conn.execute(select(SPOOL.c.id, SPOOL.c.row).order_by(SPOOL.c.id).limit(limit))
            return [(spool_id, _from_json(doc)) for spool_id, doc in found]

    def drop(self, spool_ids: Sequence[int]) -> None:
        """Forget rows the inbox has now."""
        with self._spool.begin() as conn:
            conn.execute(delete(SPOOL).where(SPOOL.c.id.in_(spool_ids)))

    def waiting(self) -> int:
        """How many rows wait to be moved."""
        with self._spool.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(SPOOL)).scalar_one())

    def close(self) -> None:
        self._spool.dispose()
        self._inbox.dispose()
