"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL (to scale)."""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import ArgumentError, InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from storage import inline_sqlite

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every deskbot process.
_MIGRATION_LOCK_KEY = 727_001


class DatabaseError(RuntimeError):
    pass


# The URL each engine was made from (with its password and ?search_path=), so that a worker
# can open an engine of its own on the same database (:func:`shared_url`).
_URLS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def create_engine(url: str, *, reader: bool = False, **kwargs: Any) -> AsyncEngine:
    """The desk's engine for ``url``. ``reader=True``: an engine that only reads, for a worker
    with its own event loop (no pool kept; on SQLite its transactions are plain deferred
    ``BEGIN``, which in WAL mode read beside the desk's writer instead of taking the write
    lock)."""
    original = url
    if url.startswith("sqlite") and "aiosqlite" not in url:
        raise DatabaseError(f"use sqlite+aiosqlite:// for SQLite, got {url.split(':', 1)[0]}")
    if url.startswith("postgresql") and "asyncpg" not in url:
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"DESK_DATABASE_URL is not a database URL: {problem(exc)}") from None
    if parsed.get_backend_name() == "postgresql" and "search_path" in parsed.query:
        # ?search_path=NAME puts the desk's tables in a schema of their own (asyncpg takes it as
        # a server setting, not a URL option).
        schema = parsed.query["search_path"]
        parsed = parsed.difference_update_query(["search_path"])
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args["server_settings"] = {"search_path": str(schema)}
        kwargs["connect_args"] = connect_args
    # A PostgreSQL connection the server dropped is found at checkout and replaced, instead of
    # failing the work that drew it (without this a dispatcher burned its retries on dead pooled
    # connections: bench.chaos). Not by SQLAlchemy's pool_pre_ping, which costs three round trips
    # a checkout with asyncpg (BEGIN, a query, ROLLBACK): a third of the desk's round trips
    # under load (docs/performance.md). _watch_postgres asks the server only after a rest.
    watch = parsed.get_backend_name() == "postgresql" and "pool_pre_ping" not in kwargs
    if parsed.get_backend_name() == "postgresql":
        # asyncpg waits 60 s for a connection by default; a connect that a cut link left
        # half-open (its TCP accepted, the server's answer never coming) held the dispatcher
        # that long without a word, /healthz saying its loop was fine (tests: the outage test).
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", CONNECT_TIMEOUT)
        kwargs["connect_args"] = connect_args
    if parsed.get_backend_name() == "postgresql" and not reader:
        # Ten kept, not SQLAlchemy's five: under a burst the desk holds six or seven at once
        # (webhooks, the dispatcher, the outbox's claims, outcomes recorded side by side), and
        # a connection beyond the kept ones is closed when given back, so the next one was a
        # new connection (its own handshake, and every statement prepared again on it).
        kwargs.setdefault("pool_size", 10)
    if reader:
        kwargs.setdefault("poolclass", NullPool)
    if parsed.get_backend_name() == "sqlite" and not reader:
        # SQLite has one writer at a time, and a writer that finds the lock taken waits in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms. One connection per
        # process, handed out by the pool's async queue, makes the wait a cheap await instead
        # (measured: loop throughput 23 → see the README).
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
    if parsed.get_backend_name() == "sqlite" and inline_sqlite_enabled():
        # Statements run on the event loop's thread instead of aiosqlite's (see
        # storage/inline_sqlite.py for why, and what it trades away).
        path = parsed.database or ":memory:"
        kwargs.setdefault("async_creator", lambda: inline_sqlite.connect(path))
    try:
        engine = create_async_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:  # an unknown database, a driver not installed
        raise DatabaseError(f"the desk cannot use {where_url(url)}: {problem(exc)}") from None
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine, reader=reader)
    if watch and not reader:
        _watch_postgres(engine)
    _URLS[engine.sync_engine] = original
    return engine


def shared_url(engine: AsyncEngine) -> str | None:
    """The URL ``engine`` was made from, for another thread or process to open an engine of
    its own on the same database (``create_engine(url, reader=True)``); None for an in-memory
    SQLite database, which no other connection can see. Never log it: it holds the password."""
    url = _URLS.get(engine.sync_engine)
    if url is None:
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return None
    return url


def inline_sqlite_enabled() -> bool:
    """SQLite statements run inline unless ``DESK_SQLITE_THREAD=1`` asks for aiosqlite's thread."""
    return os.environ.get("DESK_SQLITE_THREAD", "") not in ("1", "true", "yes")


# How long opening a PostgreSQL connection may take (seconds), its TLS request and
# authentication included.
CONNECT_TIMEOUT = 10.0

# How long a PostgreSQL connection may rest in the pool before its checkout asks the server
# whether it is still there (seconds).
PING_AFTER_REST = 10.0


def _watch_postgres(engine: AsyncEngine) -> None:
    """Replace a dead pooled connection at checkout, as ``pool_pre_ping`` does, for less.

    A connection the server closed (a restart, a failover, ``pg_terminate_backend``, a cut
    link's proxy) is known to asyncpg as soon as the event loop reads the end of its stream:
    checking ``is_closed()`` costs no round trip. Only a connection that rested in the pool
    for ``PING_AFTER_REST`` seconds or more is also pinged (what ``pool_pre_ping`` does at
    every checkout): a firewall or a balancer that forgot an idle connection answers only
    when something is sent. Either failure invalidates the pool, as a failed pre-ping does,
    and the checkout is given a new connection."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _rests(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["rests_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _alive(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        driver = record.driver_connection
        if driver is not None and driver.is_closed():
            raise InvalidatePoolError("the server closed the connection")
        rests_since = record.info.pop("rests_since", None)
        if rests_since is not None and time.monotonic() - rests_since >= PING_AFTER_REST:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except Exception as exc:
                raise InvalidatePoolError(f"ping: {type(exc).__name__}") from exc


def _tune_sqlite(engine: AsyncEngine, *, reader: bool = False) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transactions into our own hands (see _on_begin) and set WAL once per connection.
        inline = isinstance(dbapi_conn.driver_connection, inline_sqlite.InlineConnection)
        if not inline:
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        if not inline:  # an inline connection waits for a lock outside SQLite, never inside
            cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred SQLite transaction that reads and then writes can fail with SQLITE_BUSY
        # without waiting on busy_timeout; taking the write lock up front makes it wait instead.
        # A reader never writes: its deferred transaction reads one snapshot beside the writer.
        conn.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")


class HoldingSession(Session):
    """A session that holds every object it has loaded or added until the session ends.

    SQLAlchemy's identity map references objects weakly, so a row a step loaded, or a ticket it
    created, and then stopped referencing was read again by the next ``session.get`` of it (a
    new ticket was SELECTed twice after its INSERT). The desk's sessions are short, one step
    each, so holding what they touched costs little; SQLAlchemy's documentation gives this
    recipe ("Session Referencing Behavior").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.info["held"] = set()


def _hold(session: Session, instance: object) -> None:
    session.info["held"].add(instance)


def _let_go(session: Session, instance: object) -> None:
    session.info["held"].discard(instance)


for _to_persistent in (
    "pending_to_persistent",
    "deleted_to_persistent",
    "detached_to_persistent",
    "loaded_as_persistent",
):
    event.listen(HoldingSession, _to_persistent, _hold)
for _from_persistent in (
    "persistent_to_detached",
    "persistent_to_deleted",
    "persistent_to_transient",
):
    event.listen(HoldingSession, _from_persistent, _let_go)


def one_writer(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Whether the database behind ``sessions`` has one writer at a time (SQLite): the desk's
    loops then group their writes and let webhooks go first."""
    return bool(sessions.kw["bind"].dialect.name == "sqlite")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=HoldingSession)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several processes may start at once; only one may migrate at a time.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration. Safe to call from every process at start."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def problem(exc: BaseException) -> str:
    """A database error as an operator may read it in /healthz: its kind and message, without
    credentials (a URL's user:password part is masked), on one line, at most 200 characters."""
    text = " ".join(str(exc).split())
    text = _CREDENTIALS.sub("://***@", text)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def where(engine: AsyncEngine) -> str:
    """The engine's database as an operator may read it: its URL without the password."""
    return engine.url.render_as_string(hide_password=True)


def where_url(url: str) -> str:
    return _CREDENTIALS.sub("://***@", url)


async def reach(engine: AsyncEngine, timeout: float = 10.0) -> None:
    """Connect once, or raise :class:`DatabaseError` with one line that says which database
    did not answer and why (refused, unknown host, wrong password, no such database, silence
    for ``timeout`` seconds). The start and ``deskbot check`` ask this before anything else."""
    try:
        await asyncio.wait_for(ping(engine), timeout)
    except TimeoutError:
        raise DatabaseError(
            f"the database at {where(engine)} did not answer within {timeout:g} s"
        ) from None
    except Exception as exc:
        raise DatabaseError(
            f"cannot reach the database at {where(engine)}: {problem(exc)}"
        ) from None
