"""retention.raw_days: old raw platform payloads are erased once their event was dealt with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.base.clock import FrozenClock
from bot.customers.privacy import RawPurger
from bot.domain.rules import RulesError, parse_rules
from storage.db import session_factory
from storage.models import InboxRow

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def row(n: int, age_days: float, status: str) -> InboxRow:
    return InboxRow(
        channel="telegram",
        external_id=f"update:{n}",
        conversation="telegram:42",
        kind="customer_message",
        payload={"text": "hi"},
        raw={"update_id": n, "message": {"text": "my phone is +44 7700 900123"}},
        status=status,
        attempts=1,
        received_at=NOW - timedelta(days=age_days),
    )


async def test_old_handled_payloads_are_purged_and_nothing_else(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        s.add_all(
            [
                row(1, 40, "done"),
                row(2, 31, "ignored"),
                row(3, 40, "pending"),  # not dealt with yet: kept whatever its age
                row(4, 29.5, "done"),  # young enough
            ]
        )
    clock = FrozenClock(NOW)
    rules = parse_rules({"version": 1, "retention": {"raw_days": 30}})
    purger = RawPurger(sessions, rules, clock)

    async def raws() -> dict[str, bool]:
        async with sessions() as s:
            rows = (await s.scalars(select(InboxRow).order_by(InboxRow.id))).all()
            return {r.external_id: bool(r.raw) for r in rows}

    assert await purger.run_once() == 2
    assert await raws() == {
        "update:1": False,
        "update:2": False,
        "update:3": True,
        "update:4": True,
    }
    clock.advance(days=1)  # row 4 ages past the line
    await purger.run_once()
    assert await raws() == {
        "update:1": False,
        "update:2": False,
        "update:3": True,
        "update:4": False,
    }
    async with sessions() as s:
        kept = await s.scalar(select(InboxRow).where(InboxRow.external_id == "update:4"))
        assert kept is not None and kept.payload == {"text": "hi"}  # only the raw copy goes


async def test_no_setting_keeps_everything_and_a_bad_one_is_named(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        s.add(row(1, 400, "done"))
    assert await RawPurger(sessions, parse_rules({"version": 1}), FrozenClock(NOW)).run_once() == 0
    with pytest.raises(RulesError, match=r"retention\.raw_days: Input should be greater than"):
        parse_rules({"version": 1, "retention": {"raw_days": 0}})
