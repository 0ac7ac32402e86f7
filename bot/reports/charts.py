"""The period's figures as PNG charts, drawn with matplotlib's Agg backend (no display).

:func:`chart_data` says what the charts show, from the same facts as the report, so it can be
tested without reading pixels; :func:`draw` paints it. Drawing takes a CPU for a moment: call
:func:`draw_async` from the event loop, which runs it in the desk's worker process
(bot/reports/worker.py). matplotlib is imported where a chart is drawn, not with this module:
the desk's own process never loads it (about 40 MB) unless that worker has died. Figures are
made with ``matplotlib.figure.Figure`` (never pyplot), so no global state is shared.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.reports.metrics import History, Period, build, period_facts
from bot.reports.render import duration
from bot.reports.worker import in_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRIORITIES = ("urgent", "high", "normal", "low")
COLOURS = {"urgent": "#d62728", "high": "#ff7f0e", "normal": "#2ca02c", "low": "#7f7f7f"}
FIRST_RESPONSE_BUCKETS: tuple[tuple[float, str], ...] = (
    (5 * 60, "0–5 m"),
    (15 * 60, "5–15 m"),
    (60 * 60, "15–60 m"),
    (4 * 3600, "1–4 h"),
    (8 * 3600, "4–8 h"),
    (24 * 3600, "8–24 h"),
    (math.inf, "24 h+"),
)
WEEKLY_AFTER_DAYS = 31  # CSAT per day up to a month, per week beyond


@dataclass(frozen=True, slots=True)
class Chart:
    name: str  # a file name: created.png
    title: str
    png: bytes


def _span(period: Period) -> str:
    if period.first == period.last:
        return period.first.isoformat()
    return f"{period.first}..{period.last}"


def _bucket_of(seconds: float) -> int:
    return next(i for i, (upper, _) in enumerate(FIRST_RESPONSE_BUCKETS) if seconds < upper)


def chart_data(
    histories: Sequence[History],
    period: Period,
    now: datetime,
    agents: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the charts show: per-day counts, the first-response histogram, CSAT per day or
    week, and the agents' table (the report's own figures, grouped by agent)."""
    facts = period_facts(histories, period, now)
    days = [period.first + timedelta(days=i) for i in range((period.last - period.first).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    created = {p: [0] * len(days) for p in PRIORITIES}
    resolved = [0] * len(days)
    histogram = [0] * len(FIRST_RESPONSE_BUCKETS)
    weekly = len(days) > WEEKLY_AFTER_DAYS
    csat_keys: list[date] = sorted(
        {d - timedelta(days=d.weekday()) for d in days} if weekly else set(days)
    )
    csat_good = dict.fromkeys(csat_keys, 0)
    csat_n = dict.fromkeys(csat_keys, 0)
    for f in facts:
        day = period.day_of(f.at) if f.at is not None else None
        if f.kind == "created" and day in index:
            created.setdefault(f.dims["priority"], [0] * len(days))[index[day]] += 1
        elif f.kind == "resolution" and day in index:
            resolved[index[day]] += 1
        elif f.kind == "first_response":
            histogram[_bucket_of(f.value or 0.0)] += 1
        elif f.kind == "rating" and day is not None:
            key = day - timedelta(days=day.weekday()) if weekly else day
            if key in csat_n:
                csat_n[key] += 1
                csat_good[key] += 1 if (f.value or 0) >= 4 else 0
    figures = build(histories, period, now, "agent", agents, names)
    return {
        "period": _span(period),
        "tz": period.tz.key,
        "days": [d.isoformat() for d in days],
        "created": created,
        "resolved": resolved,
        "first_response": {
            "buckets": [label for _, label in FIRST_RESPONSE_BUCKETS],
            "counts": histogram,
            **figures["metrics"]["first_response"],
        },
        "csat": {
            "per": "week" if weekly else "day",
            "keys": [k.isoformat() for k in csat_keys],
            "value": [
                round(100 * csat_good[k] / csat_n[k], 1) if csat_n[k] else None for k in csat_keys
            ],
            "n": [csat_n[k] for k in csat_keys],
        },
        "agents": [
            {
                "agent": g["key"],
                "name": g.get("name") or g["key"],
                "former": g.get("former", False),
                "low_n": g["low_n"],
                "replies": g["metrics"]["first_response"]["n"] + g["metrics"]["reply_time"]["n"],
                "first_response_median": g["metrics"]["first_response"]["median"],
                "tickets_resolved": g["metrics"]["tickets_resolved"],
                "csat": g["metrics"]["csat"]["value"],
                "csat_n": g["metrics"]["csat"]["n"],
            }
            for g in figures["groups"]
        ],
    }


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def _figure(title: str, subtitle: str) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax.set_title(subtitle, fontsize=9, color="#555555")
    return fig, ax


def _created_chart(data: dict[str, Any]) -> Chart:
    days = data["days"]
    n = sum(sum(v) for v in data["created"].values())
    title = "Tickets created per day, by priority; resolutions as a line"
    fig, ax = _figure(title, f"{data['period']} · {data['tz']} · n={n} tickets created")
    x = list(range(len(days)))
    bottom = [0] * len(days)
    for priority, counts in data["created"].items():
        ax.bar(x, counts, bottom=bottom, label=priority, color=COLOURS.get(priority, "#1f77b4"))
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.plot(x, data["resolved"], color="black", marker="o", label="resolutions")
    ax.set_xticks(x, [d[5:] for d in days], rotation=45 if len(days) > 10 else 0, fontsize=8)
    ax.set_ylabel("tickets")
    ax.yaxis.set_major_locator(_integer_ticks())
    ax.legend(fontsize=8)
    return Chart("created.png", title, _png(fig))


def _first_response_chart(data: dict[str, Any]) -> Chart:
    fr = data["first_response"]
    title = "First response times"
    sub = (
        f"{data['period']} · {data['tz']} · n={fr['n']} · median {duration(fr['median'])}"
        f" · p90 {duration(fr['p90'])} · {fr['unanswered']} unanswered"
    )
    fig, ax = _figure(title, sub)
    x = list(range(len(fr["buckets"])))
    ax.bar(x, fr["counts"], color="#1f77b4")
    ax.set_xticks(x, fr["buckets"], fontsize=8)
    ax.set_ylabel("tickets")
    ax.yaxis.set_major_locator(_integer_ticks())
    top = max(fr["counts"] or [1])
    for (text, at), style in zip(first_response_marks(fr), ("--", ":"), strict=False):
        ax.axvline(at, color="black", linestyle=style)
        ax.annotate(text, (at, top), fontsize=8, rotation=90, va="top")
    return Chart("first_response.png", title, _png(fig))


def first_response_marks(fr: dict[str, Any]) -> list[tuple[str, int]]:
    """The median and p90 lines of the first-response histogram: (label, bucket). When one
    bucket holds both they are one line with one label (two labels would be drawn over each
    other)."""
    pairs = (("median", fr["median"]), ("p90", fr["p90"]))
    marks = [(label, v) for label, v in pairs if v is not None]
    if len(marks) == 2 and _bucket_of(marks[0][1]) == _bucket_of(marks[1][1]):
        median, p90 = duration(marks[0][1]), duration(marks[1][1])
        text = f"median = p90 {median}" if median == p90 else f"median {median} · p90 {p90}"
        return [(text, _bucket_of(marks[0][1]))]
    return [(f"{label} {duration(value)}", _bucket_of(value)) for label, value in marks]


def _csat_chart(data: dict[str, Any]) -> Chart:
    csat = data["csat"]
    title = f"CSAT per {csat['per']} (ratings 4–5 ÷ all ratings)"
    fig, ax = _figure(title, f"{data['period']} · {data['tz']} · n={sum(csat['n'])} ratings")
    x = list(range(len(csat["keys"])))
    values = [v if v is not None else 0 for v in csat["value"]]
    bars = ax.bar(x, values, color="#9467bd")
    for bar, n, v in zip(bars, csat["n"], csat["value"], strict=True):
        ax.annotate(
            f"n={n}" if v is not None else "no ratings",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
            color="#555555" if n < 5 else "black",
        )
    ax.set_ylim(0, 110)
    ax.set_ylabel("%")
    ax.set_xticks(x, [k[5:] for k in csat["keys"]], rotation=45 if len(x) > 10 else 0, fontsize=8)
    return Chart("csat.png", title, _png(fig))


def _agent_table(data: dict[str, Any]) -> Chart:
    title = "Agents"
    rows = data["agents"]
    fig, ax = _figure(title, f"{data['period']} · {data['tz']} · n={len(rows)} agents")
    ax.axis("off")
    header = ["agent", "timed replies", "first response (median)", "tickets resolved", "CSAT (n)"]
    cells = [
        [
            r["name"] + (" (former)" if r["former"] else ""),
            str(r["replies"]),
            duration(r["first_response_median"]),
            str(r["tickets_resolved"]),
            ("–" if r["csat"] is None else f"{r['csat']:.0f}%") + f" ({r['csat_n']})",
        ]
        for r in rows
    ] or [["no activity", "", "", "", ""]]
    table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for i, r in enumerate(rows, start=1):  # a group under five tickets is greyed, not hidden
        if r["low_n"]:
            for j in range(len(header)):
                table[i, j].get_text().set_color("#999999")
    return Chart("agents.png", title, _png(fig))


def draw(data: dict[str, Any]) -> list[Chart]:
    return [
        _created_chart(data),
        _first_response_chart(data),
        _csat_chart(data),
        _agent_table(data),
    ]


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


async def draw_async(data: dict[str, Any]) -> list[Chart]:
    """:func:`draw` in the desk's worker process, so neither the desk's loop nor its memory
    carries matplotlib; in a thread when the worker has died."""
    drawn = await in_process(draw, data)
    return drawn if drawn is not None else await asyncio.to_thread(draw, data)
