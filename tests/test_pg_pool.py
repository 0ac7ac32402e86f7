"""PostgreSQL's pool (storage/db.py): a dead pooled connection is replaced at checkout, without
a round trip for a connection that did not rest, and with a ping for one that rested."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.db
from storage.db import create_engine
from tests.conftest import PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg() -> str:
    if not PG_URL:
        pytest.skip("DESK_TEST_POSTGRES_URL not set")
    return PG_URL


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


def _pings(engine: AsyncEngine, fail: int = 0) -> list[int]:
    """Count the pings the pool sends (the first ``fail`` of them fail as a dead link's)."""
    sent: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        sent.append(1)
        if len(sent) <= fail:
            raise OSError("connection reset by peer")
        return bool(ping(dbapi_conn))

    setattr(engine.dialect, "do_ping", counted)  # noqa: B010 (a method of this engine alone)
    return sent


async def test_a_connection_the_server_closed_is_replaced_at_checkout(pg: str) -> None:
    engine = create_engine(pg, pool_size=1, max_overflow=0)
    admin = create_engine(pg)
    try:
        pings = _pings(engine)
        first = await _pid(engine)
        async with admin.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        await asyncio.sleep(0.2)  # the loop reads the end of the dead connection's stream
        # The work that draws the pooled connection next does not fail: it gets a new one.
        second = await _pid(engine)
        assert second != first
        assert await _pid(engine) == second  # and keeps it
        assert pings == []  # found without asking the server
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_a_rested_connection_is_pinged_and_replaced_if_the_ping_fails(
    pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(pg, pool_size=1, max_overflow=0)
    try:
        first = await _pid(engine)
        pings = _pings(engine, fail=1)
        # Checked out again at once: no ping (under load a connection rests milliseconds).
        assert await _pid(engine) == first
        assert pings == []
        monkeypatch.setattr(storage.db, "PING_AFTER_REST", 0.05)
        await asyncio.sleep(0.1)
        # Rested: pinged; the ping fails as a link a firewall forgot would, and the work is
        # given a new connection instead of the error.
        second = await _pid(engine)
        assert len(pings) == 1  # the failed one; the new connection, fresh, is not pinged
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connect_that_gets_no_answer_fails_in_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server (or a cut link's proxy) that takes the TCP connection and never answers: the
    desk's connect fails after CONNECT_TIMEOUT, so its loops say the database is lost, instead
    of waiting asyncpg's own 60 s."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(storage.db, "CONNECT_TIMEOUT", 0.5)
    engine = create_engine(f"postgresql+asyncpg://desk@127.0.0.1:{port}/desk")
    try:
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await storage.db.ping(engine)
        assert held  # the connection was taken, and never answered
    finally:
        await engine.dispose()
        for writer in held:
            writer.transport.abort()
        server.close()
