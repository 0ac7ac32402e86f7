"""The demo history the README's charts are drawn from: the figures count every ticket it wrote."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.reports.metrics import day_range, report
from sandbox.demo import fill
from storage.db import create_engine, session_factory


async def test_the_demo_desk_is_counted_whole_and_the_same_every_time(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    written = await fill(url, date(2026, 12, 3), days=5)
    again = await fill(f"sqlite+aiosqlite:///{tmp_path / 'again.db'}", date(2026, 12, 3), days=5)
    assert written == again and written >= 5 * 4
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            period = day_range("2026-11-29", "2026-12-03", ZoneInfo("UTC"))
            figures = await report(s, period, datetime(2026, 12, 4, tzinfo=UTC))
    finally:
        await engine.dispose()
    m = figures["metrics"]
    assert m["tickets_created"] == written == figures["n"]
    assert m["tickets_resolved"] + m["backlog"] == written
    assert m["first_response"]["n"] + m["first_response"]["unanswered"] == written
    assert 0 < m["csat"]["n"] <= m["resolutions"]
