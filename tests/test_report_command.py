"""``deskbot report``: the same figures as the library, as JSON, CSV or text."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.cli import main
from bot.reports.metrics import day_range, report
from storage.db import create_engine, migrate, session_factory

from .test_metrics import Story

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 2, 22, 30, tzinfo=UTC)  # 07:30 on the 3rd in Tokyo


async def _history(url: str) -> dict[str, object]:
    engine = create_engine(url)
    await migrate(engine)
    async with session_factory(engine)() as s:
        a = await Story.start(s, T0, priority="high")
        a.reply(T0 + timedelta(minutes=5), "U0BOB")
        prompt = await a.resolve(T0 + timedelta(hours=1), "U0BOB")
        a.rate(T0 + timedelta(hours=2), 4, prompt)
        b = await Story.start(s, T0 + timedelta(minutes=10), channel="whatsapp")
        b.reply(T0 + timedelta(minutes=40), "U0EVE")  # U0EVE is in no team of rules.yaml
        await s.commit()
        period = day_range("2026-11-03", "2026-11-03", ZoneInfo("Asia/Tokyo"))
        expected = await report(
            s, period, datetime.now(UTC), "agent", {"U0ALICE", "U0BOB", "U0CAROL"}
        )
    await engine.dispose()
    return expected


@pytest.fixture
def desk_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESK_DATABASE_URL", url)
    monkeypatch.setenv("DESK_RULES", str(ROOT / "rules.yaml"))
    monkeypatch.setenv("DESK_TZ", "Asia/Tokyo")
    return asyncio.run(_history(url))


def test_json_is_the_library_report_to_the_second(
    desk_db: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--from", "2026-11-03", "--to", "2026-11-03", "--by", "agent"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == desk_db
    assert printed["tz"] == "Asia/Tokyo" and printed["from"] == "2026-11-03"
    metrics = printed["metrics"]
    assert metrics["tickets_created"] == 2  # both are on the 3rd in Tokyo (the 2nd in UTC)
    assert metrics["first_response"]["median"] == 1050  # (300 + 1800) / 2
    assert metrics["csat"]["value"] == 100.0 and metrics["csat"]["n"] == 1
    groups = {g["key"]: g for g in printed["groups"]}
    assert groups["U0EVE"]["former"] is True and groups["U0BOB"]["former"] is False
    assert groups["U0BOB"]["low_n"] is True


def test_csv_has_one_row_for_the_desk_and_one_per_group(
    desk_db: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--from", "2026-11-03", "--to", "2026-11-03", "--by", "channel"]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["group"] for r in rows] == ["all", "telegram", "whatsapp"]
    assert rows[0]["tickets_created"] == "2"
    assert rows[0]["first_response_median"] == "1050"
    assert rows[2]["first_response_median"] == "1800"
    assert rows[0]["csat_counts_4"] == "1"
    assert rows[0]["tz"] == "Asia/Tokyo"


def test_text_names_each_figure_with_its_n(
    desk_db: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--from", "2026-11-03", "--to", "2026-11-03", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "Desk figures 2026-11-03 (Asia/Tokyo) · 2 tickets" in out
    assert "first response: median 17m 30s, p90 30m 00s, mean 17m 30s (n=2)" in out
    assert "CSAT 100.0% (n=1" in out


def test_a_period_ending_before_it_starts_is_refused(
    desk_db: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--from", "2026-11-03", "--to", "2026-11-01"]) == 2
    assert "ends (2026-11-01) before it starts (2026-11-03)" in capsys.readouterr().err
