"""SQLite statements run on the event loop's own thread, for SQLAlchemy's aiosqlite dialect.

aiosqlite runs every call on a thread of its own and hands the answer back through the event
loop; SQLAlchemy's adapter makes four such calls for one statement (open a cursor, execute,
fetch, close). Measured on this 2-core machine, that hand-off costs about a millisecond a
statement under load, while SQLite itself answers the desk's indexed one-row statements in a
few microseconds: the loop spent its time passing messages between threads, not in the
database. So this module gives SQLAlchemy's dialect a connection with aiosqlite's interface
whose calls run inline, on the loop's thread. No library offers that (aiosqlite is thread-only
by design), hence this small shim.

What that trades away, and how it is kept safe:

* A statement blocks the event loop while it runs. The desk's statements are indexed and take
  microseconds; a supervisor's report over months of tickets may take tens of milliseconds,
  during which webhooks wait as long. On PostgreSQL (for several processes, or big desks)
  nothing changes.
* The connection never waits inside SQLite for another process's write lock (which would
  freeze the loop): ``busy_timeout`` is 0, and a statement refused with ``SQLITE_BUSY`` (which
  SQLite guarantees did nothing) is tried again after an ``await asyncio.sleep``, for up to
  ``busy_seconds``, so the rest of the desk goes on meanwhile.
* A run of statements with no await between them that yields (one event's step: tens of
  statements and the ORM's work around them, 10–30 ms under load) would hold the loop as long,
  and a webhook waited that long to be read and answered. So a statement first lets the loop
  turn once when ``SLICE`` has passed since the connection last did (``asyncio.sleep(0)``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

# Pauses between tries of a statement refused because another connection holds the lock.
_BUSY_FIRST = 0.001
_BUSY_MAX = 0.05
# The longest a connection's statements keep the event loop to themselves (seconds).
SLICE = 0.002


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class InlineCursor:
    """An aiosqlite-like cursor over a sqlite3 cursor, running inline."""

    def __init__(self, owner: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._owner = owner
        self._cursor = cursor

    async def _retrying(self, call: Any, *args: Any) -> Any:
        await self._owner.share_the_loop()
        deadline = time.monotonic() + self._owner.busy_seconds
        pause = _BUSY_FIRST
        while True:
            try:
                return call(*args)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, _BUSY_MAX)

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        await self._retrying(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        await self._retrying(self._cursor.executemany, sql, list(parameters))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        return None

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _OpenCursor:
    """What ``connection.cursor()`` returns in aiosqlite: awaitable, and an async context."""

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor: InlineCursor | None = None

    async def __aenter__(self) -> InlineCursor:
        self._cursor = InlineCursor(self._owner, self._owner.raw.cursor())
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        if self._cursor is not None:
            await self._cursor.close()

    def __await__(self) -> Any:
        return self.__aenter__().__await__()


class InlineConnection:
    """The parts of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, raw: sqlite3.Connection, busy_seconds: float) -> None:
        self.raw = raw
        self.busy_seconds = busy_seconds
        self._turned = time.perf_counter()  # when the loop last turned for this connection

    async def share_the_loop(self) -> None:
        """Let the event loop turn once if this connection has kept it for ``SLICE``."""
        if time.perf_counter() - self._turned >= SLICE:
            await asyncio.sleep(0)
            self._turned = time.perf_counter()

    # SQLAlchemy's adapter looks at these two aiosqlite internals.
    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self.raw

    @property
    def _conn(self) -> sqlite3.Connection:
        return self.raw

    @property
    def isolation_level(self) -> str | None:
        return self.raw.isolation_level

    def cursor(self) -> _OpenCursor:
        return _OpenCursor(self)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        cursor = InlineCursor(self, self.raw.cursor())
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        await InlineCursor(self, self.raw.cursor())._retrying(self.raw.commit)

    async def rollback(self) -> None:
        self.raw.rollback()

    async def close(self) -> None:
        self.raw.close()

    def stop(self) -> None:
        self.raw.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self.raw.create_function(*args, **kwargs)


async def connect(path: str, *, busy_seconds: float = 10.0) -> InlineConnection:
    """A connection in autocommit mode (the desk issues BEGIN IMMEDIATE itself), never waiting
    inside SQLite for a lock (see the module's docstring)."""
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    raw.execute("PRAGMA busy_timeout=0")
    return InlineConnection(raw, busy_seconds)
