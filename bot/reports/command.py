"""``deskbot report``: the figures of a period, printed from the same code as ``/desk stats``."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.domain.rules import Rules
from bot.reports.charts import Chart, chart_data, draw_async
from bot.reports.metrics import agent_names, build, day_range, load_histories, self_service
from bot.reports.render import RENDER
from storage.db import create_engine, session_factory


def current_agents(rules: Rules) -> set[str]:
    """Everyone in a team today; anyone else found in the history is a former agent."""
    return {agent for team in rules.all_teams.values() for agent in team.agents}


async def print_report(
    database_url: str,
    rules: Rules,
    tz: str,
    first: str,
    last: str,
    by: str | None,
    fmt: str,
    now: datetime,
    charts: bool = False,
) -> tuple[str, list[Chart]]:
    """The report in ``fmt``, and its PNG charts when asked."""
    period = day_range(first, last, ZoneInfo(tz))
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            histories = await load_histories(session, period.start, period.end)
            kb = await self_service(session, period.start, period.end)
            names = await agent_names(session)
    finally:
        await engine.dispose()
    agents = current_agents(rules)
    drawn: list[Chart] = []
    if charts:
        drawn = await draw_async(chart_data(histories, period, now, agents, names))
    figures = build(histories, period, now, by, agents, names)
    figures["self_service"] = kb
    return RENDER[fmt](figures), drawn
