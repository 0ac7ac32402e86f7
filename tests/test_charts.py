"""The charts: what they show (from the report's own facts) and that they are real PNGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from matplotlib.image import imread
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cli import main
from bot.reports.charts import chart_data, draw_async, first_response_marks
from bot.reports.metrics import day_range, load_histories

from .test_metrics import Story, s  # noqa: F401  (s is the session fixture)
from .test_report_command import desk_db  # noqa: F401  (a migrated SQLite desk with history)

TOKYO = ZoneInfo("Asia/Tokyo")
LATER = datetime(2027, 1, 1, tzinfo=UTC)


async def _data(s: AsyncSession) -> dict[str, Any]:  # noqa: F811
    period = day_range("2026-11-02", "2026-11-03", TOKYO)
    # 14:30 UTC on the 2nd is 23:30 in Tokyo; 15:30 UTC is 00:30 on the 3rd.
    late = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
    a = await Story.start(s, late, priority="urgent")
    a.reply(late + timedelta(minutes=3), "U0BOB")  # 0–5 m
    prompt = await a.resolve(late + timedelta(hours=1), "U0BOB")  # the 3rd in Tokyo
    a.rate(late + timedelta(hours=2), 5, prompt)
    b = await Story.start(s, late + timedelta(hours=1), priority="low")
    b.reply(late + timedelta(hours=3), "U0EVE")  # 1–4 h
    await s.commit()
    return chart_data(await load_histories(s, period.start, period.end), period, LATER, {"U0BOB"})


async def test_chart_data_counts_in_desk_tz_days(s: AsyncSession) -> None:  # noqa: F811
    data = await _data(s)
    assert data["days"] == ["2026-11-02", "2026-11-03"]
    assert data["created"]["urgent"] == [1, 0] and data["created"]["low"] == [0, 1]
    assert data["resolved"] == [0, 1]
    fr = data["first_response"]
    assert fr["counts"] == [1, 0, 0, 1, 0, 0, 0]
    assert fr["median"] == 3690 and fr["n"] == 2  # the report's own figure: (180 + 7200) / 2
    assert data["csat"]["per"] == "day"
    assert data["csat"]["value"] == [None, 100.0] and data["csat"]["n"] == [0, 1]
    agents = {r["agent"]: r for r in data["agents"]}
    assert agents["U0EVE"]["former"] is True and agents["U0BOB"]["csat"] == 100.0


async def test_charts_are_pngs_drawn_off_the_loop(s: AsyncSession) -> None:  # noqa: F811
    charts = await draw_async(await _data(s))
    assert [c.name for c in charts] == [
        "created.png",
        "first_response.png",
        "csat.png",
        "agents.png",
    ]
    for chart in charts:
        pixels = imread(io.BytesIO(chart.png), format="png")
        assert pixels.shape[0] >= 400 and pixels.shape[1] >= 700  # 8 × 4.2 in at 100 dpi


def test_the_desk_process_never_loads_matplotlib_the_worker_draws() -> None:
    """matplotlib (about 40 MB) is loaded by the worker process that draws, not by the desk:
    a desk that starts and has a chart drawn still has not imported it."""
    script = (
        "import asyncio, sys, os\n"
        "import bot.app, bot.wiring\n"
        "from bot.reports.charts import draw_async\n"
        "assert 'matplotlib' not in sys.modules, 'imported at start'\n"
        "from datetime import UTC, datetime\n"
        "from zoneinfo import ZoneInfo\n"
        "from bot.reports.charts import chart_data\n"
        "from bot.reports.metrics import day_range\n"
        "period = day_range('2026-11-02', '2026-11-03', ZoneInfo('UTC'))\n"
        "data = chart_data([], period, datetime(2027, 1, 1, tzinfo=UTC), set())\n"
        "charts = asyncio.run(draw_async(data))\n"
        "print(len(charts), all(c.png[:8] == b'\\x89PNG\\r\\n\\x1a\\n' for c in charts),"
        " 'matplotlib' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "True", "False"]


def test_report_writes_the_charts(
    desk_db: dict[str, object],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "charts"
    args = ["report", "--from", "2026-11-03", "--to", "2026-11-03", "--charts", str(out)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["tickets_created"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "agents.png",
        "created.png",
        "csat.png",
        "first_response.png",
    ]
    assert (out / "created.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_the_agents_table_names_agents(s: AsyncSession) -> None:  # noqa: F811
    period = day_range("2026-11-02", "2026-11-03", TOKYO)
    data = await _data(s)
    named = chart_data(
        await load_histories(s, period.start, period.end),
        period,
        LATER,
        {"U0BOB"},
        {"U0BOB": "Bob"},
    )
    rows = {r["agent"]: r["name"] for r in named["agents"]}
    assert rows["U0BOB"] == "Bob"
    assert rows["U0EVE"] == "U0EVE"  # a name the desk never learnt: the id
    assert {"U0BOB", "U0EVE"} <= {r["agent"] for r in data["agents"]}


def test_median_and_p90_in_one_bucket_are_one_label() -> None:
    same = {"median": 120, "p90": 120}
    assert first_response_marks(same) == [("median = p90 2m 00s", 0)]
    near = {"median": 60, "p90": 240}  # both under 5 minutes
    assert first_response_marks(near) == [("median 1m 00s · p90 4m 00s", 0)]
    apart = {"median": 60, "p90": 7200}
    assert [text for text, _ in first_response_marks(apart)] == ["median 1m 00s", "p90 2h 00m"]
