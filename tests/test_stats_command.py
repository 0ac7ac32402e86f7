"""``/desk stats`` arguments: periods in DESK_TZ, grouping keys, and what a mistake gets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.console.invocation import Answer
from bot.domain.rules import RulesError, parse_rules

from .test_desk_command import ask
from .test_desk_core import Harness, make_harness


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


async def test_stats_counts_days_in_desk_tz(desk: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # 09:00 UTC on 1 January is 23:00 on 31 December in Honolulu: "today" is the 31st there.
    assert desk.clock.now().isoformat() == "2026-01-01T09:00:00+00:00"
    monkeypatch.setenv("DESK_TZ", "Pacific/Honolulu")
    got = await ask(desk, "stats today", user="U0CAROL")
    assert isinstance(got, Answer) and got.blocks
    assert got.blocks[0]["text"]["text"] == "Desk figures 2025-12-31 (Pacific/Honolulu) · 0 tickets"


async def test_stats_mistakes_are_explained(desk: Harness) -> None:
    by = await ask(desk, "stats 7d by mood", user="U0CAROL")
    assert by == (
        "Cannot group by `mood`: use one of agent, channel, priority, intent, team, language."
    )
    period = await ask(desk, "stats last-week", user="U0CAROL")
    assert period.startswith("unknown period 'last-week': use today, yesterday, 7d, 30d")
    backwards = await ask(desk, "stats 2026-11-03..2026-11-01", user="U0CAROL")
    assert "ends (2026-11-01) before it starts (2026-11-03)" in backwards


async def test_help_lists_stats_and_audit(desk: Harness) -> None:
    helped = await ask(desk, "help")
    assert "• `/desk stats`: supervisors: the figures of `today`" in helped
    assert "• `/desk audit`: admins: " in helped


def test_roles_take_user_ids_and_user_groups_and_name_anything_else_as_a_mistake() -> None:
    rules = parse_rules(
        {
            "version": 1,
            "roles": {"supervisors": ["U0CAROL", "W0BOSS", "S0LEADS"], "admins": ["S0LEADS"]},
        }
    )
    assert rules.roles.supervisors == ("U0CAROL", "W0BOSS", "S0LEADS") and rules.roles.groups == (
        "S0LEADS",
    )
    with pytest.raises(RulesError, match=r"roles\.admins: Value error, '#leads' is neither a"):
        parse_rules({"version": 1, "roles": {"admins": ["#leads"]}})
