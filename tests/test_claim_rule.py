"""``claim:`` per team in rules.yaml, as the desk reads it (both databases: user groups of
supervisors are read from the database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.roles import may_claim
from bot.domain.rules import RulesError, parse_rules
from storage.db import session_factory
from storage.models import RoleGroup

DESK = {
    "version": 1,
    "teams": {
        "support": {"channel": "C0SUPPORT", "agents": ["U0ALICE", "U0CAROL"], "lead": "U0CAROL"},
        "zh": {"channel": "C0ZH", "agents": ["U0CAROL"], "lead": "U0DAN"},
        "open": {"channel": "C0OPEN", "agents": ["U0CAROL"], "claim": "channel"},
        "billing": {"channel": "C0BILLING", "agents": ["U0DAN"]},
    },
    "roles": {"supervisors": ["U0EVE", "S0LEADS"]},
}


async def test_who_may_claim(engine: AsyncEngine) -> None:
    rules = parse_rules(DESK)
    sessions = session_factory(engine)
    async with sessions.begin() as s:
        s.add(RoleGroup(group_id="S0LEADS", members=["U0FRANK"], refreshed_at=datetime.now(UTC)))
    async with sessions() as s:
        assert await may_claim(s, rules, "zh", "U0CAROL") == "agent"
        assert await may_claim(s, rules, "zh", "U0DAN") == "lead"  # its lead, not its agent
        assert await may_claim(s, rules, "zh", "U0EVE") == "supervisor"
        assert await may_claim(s, rules, "zh", "U0FRANK") == "supervisor"  # by user group
        assert await may_claim(s, rules, "zh", "U0ALICE") is None  # another team's agent
        assert await may_claim(s, rules, "open", "U0ALICE") == "channel"
        # A desk without teams: its one implied team lists no agents, so it is open.
        bare = parse_rules({"version": 1, "slack": {"channel": "C0SUPPORT"}})
        assert await may_claim(s, bare, bare.default_team, "U0ANYONE") == "channel"


def test_claim_takes_team_or_channel_only() -> None:
    bad = {**DESK, "teams": {"support": {"channel": "C0SUPPORT", "claim": "anyone"}}}
    with pytest.raises(RulesError, match=r"teams\.support\.claim"):
        parse_rules(bad)
