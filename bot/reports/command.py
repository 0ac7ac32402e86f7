"""``deskbot report``: the figures of a period, printed from the same code as ``/desk stats``."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.reports.metrics import day_range, report
from bot.reports.render import RENDER
from bot.rules import Rules
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
) -> str:
    period = day_range(first, last, ZoneInfo(tz))
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            figures = await report(session, period, now, by, current_agents(rules))
    finally:
        await engine.dispose()
    return RENDER[fmt](figures)
