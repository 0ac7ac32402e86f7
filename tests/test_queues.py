"""Inbox and outbox claims with several workers: each row once, in order per key."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import create_engine, session_factory
from storage.models import InboxRow
from storage.queues import inbox_add, inbox_claim

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_workers_in_two_engines_claim_each_row_once_in_order(
    engine: AsyncEngine, database_url: str
) -> None:
    sessions = session_factory(engine)
    rows = [
        {
            "channel": "telegram",
            "external_id": f"{conv}-{n}",
            "conversation": f"c{conv}",
            "kind": "customer_message",
            "payload": {"n": n},
            "raw": {},
            "status": "pending",
            "attempts": 0,
            "received_at": NOW,
        }
        for n in range(4)
        for conv in range(10)
    ]
    async with sessions.begin() as s:
        assert await inbox_add(s, rows) == 40
        assert await inbox_add(s, rows[:5]) == 0  # dedupe on (channel, external_id)

    other = create_engine(database_url)  # a second "process": its own pool of connections
    seen: list[tuple[str, int, int]] = []  # (conversation, n, worker)
    in_flight: set[str] = set()
    overlaps: list[str] = []

    async def worker(eng: AsyncEngine, wid: int) -> None:
        factory = session_factory(eng)
        idle = 0
        while idle < 3:
            async with factory.begin() as s:
                claimed = await inbox_claim(s, now=NOW, lease=timedelta(seconds=60), limit=3)
                got = [(r.id, r.conversation, r.payload["n"]) for r in claimed]
            if not got:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for row_id, conv, n in got:
                if conv in in_flight:
                    overlaps.append(conv)
                in_flight.add(conv)
                seen.append((conv, n, wid))
                await asyncio.sleep(0)
                async with factory.begin() as s:
                    await s.execute(
                        update(InboxRow).where(InboxRow.id == row_id).values(status="done")
                    )
                in_flight.discard(conv)

    try:
        await asyncio.gather(worker(engine, 1), worker(other, 2), worker(engine, 3))
    finally:
        await other.dispose()
    assert len(seen) == 40 and len(set(seen)) == 40
    assert overlaps == []  # never two events of one conversation at once
    for conv in {c for c, _, _ in seen}:
        assert [n for c, n, _ in seen if c == conv] == [0, 1, 2, 3]
    async with sessions() as s:
        assert set((await s.scalars(select(InboxRow.status))).all()) == {"done"}
