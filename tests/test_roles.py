"""Roles by user group: members read from Slack, kept in the database, and kept when Slack
cannot answer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.base.clock import FrozenClock
from bot.console.desk_command import desk_command
from bot.console.invocation import Answer
from bot.core.roles import GroupLookupError, GroupRefresher, has_role
from bot.domain.events import SlashCommand
from bot.domain.rules import parse_rules
from storage.db import session_factory
from storage.models import RoleGroup

from .test_desk_core import Harness, make_harness

RULES = parse_rules(
    {"version": 1, "roles": {"supervisors": ["S0LEADS", "U0CAROL"], "admins": ["S0ADMINS"]}}
)


async def ask(h: Harness, text: str, user: str) -> str:
    command = SlashCommand(
        external_id=f"command:{next(h.seq)}",
        conversation="slack:C0SUPPORT:commands",
        command="/desk",
        text=text,
        user_id=user,
        slack_channel="C0SUPPORT",
        team_domain="acme",
    )
    async with h.sessions.begin() as s:
        return await desk_command(wiring.desks(RULES)(s, h.clock.now()), command)


class Directory:
    """Slack's usergroups.users.list as the refresher sees it."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] | None = {"S0LEADS": ["U0DAN", "U0DAN"], "S0ADMINS": []}

    async def members(self, group: str) -> list[str]:
        if self.groups is None:
            raise GroupLookupError("paid_teams_only")
        if group not in self.groups:
            raise GroupLookupError("no_such_subteam")
        return self.groups[group]


async def test_group_members_hold_the_role_and_keep_it_while_slack_cannot_say(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    slack = Directory()
    refresher = GroupRefresher(sessions, RULES, FrozenClock(), slack.members)
    async with sessions() as s:
        assert not await has_role(s, RULES, "U0DAN", "supervisor")  # not read yet

    assert await refresher.run_once() == {"S0LEADS": 1, "S0ADMINS": 0}
    async with sessions() as s:
        assert await has_role(s, RULES, "U0DAN", "supervisor")
        assert not await has_role(s, RULES, "U0DAN", "admin")
        assert await has_role(s, RULES, "U0CAROL", "supervisor")  # ids always work
        assert not await has_role(s, RULES, "U0BOB", "supervisor")

    slack.groups = None  # the workspace lost its user groups (or the scope was revoked)
    assert await refresher.run_once() == {
        "S0LEADS": "paid_teams_only",
        "S0ADMINS": "paid_teams_only",
    }
    async with sessions() as s:
        assert await has_role(s, RULES, "U0DAN", "supervisor")  # the last members stay
        row = await s.get(RoleGroup, "S0LEADS")
        assert row is not None and row.members == ["U0DAN"] and row.error == "paid_teams_only"

    slack.groups = {"S0LEADS": ["U0BOB"], "S0ADMINS": ["U0DAN"]}  # Dan moved to the admins
    await refresher.run_once()
    async with sessions() as s:
        assert await has_role(s, RULES, "U0DAN", "supervisor")  # admins are supervisors too
        assert await has_role(s, RULES, "U0DAN", "admin")
        assert await has_role(s, RULES, "U0BOB", "supervisor")
        row = await s.get(RoleGroup, "S0LEADS")
        assert row is not None and row.error is None


async def test_a_group_member_gets_stats_and_a_stranger_is_refused(engine: AsyncEngine) -> None:
    desk = make_harness(engine, RULES)
    refused = await ask(desk, "stats", user="U0DAN")
    assert refused.startswith("`/desk stats` is for supervisors only; nothing was done.")
    await GroupRefresher(desk.sessions, RULES, desk.clock, Directory().members).run_once()
    got = await ask(desk, "stats", user="U0DAN")
    assert isinstance(got, Answer) and got.startswith("*Desk figures ")
    audit = await ask(desk, "audit", user="U0DAN")
    assert audit.startswith("`/desk audit` is for admins only")
