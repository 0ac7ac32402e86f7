"""Supervisors named by a Slack user group: read with usergroups.users.list from the stand-in."""

from __future__ import annotations

from sqlalchemy import select

from bot.app import DeskApp
from bot.delivery.outbox import RateLimits
from bot.domain.rules import Roles
from storage.models import RoleGroup

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, start_standins

GROUP_RULES = RULES.model_copy(
    update={"roles": Roles(supervisors=("S0LEADS", "S0GONE"), admins=("U0CAROL",))}
)


async def test_a_member_of_a_supervisors_user_group_gets_the_figures(database_url: str) -> None:
    standins = await start_standins(rate_limits=False)
    standins.slack.usergroups = {"S0LEADS": ["U0DAN"]}
    port: int = standins.desk_port  # type: ignore[attr-defined]
    desk = DeskApp(
        desk_settings(standins, database_url, port),
        GROUP_RULES,
        idle_poll=0.05,
        limits=RateLimits.lifted(),
    )
    await desk.start()
    stack = Stack(standins, desk, database_url)
    try:

        async def read() -> list[tuple[str, list[str], str | None]]:
            async with stack.sessions() as s:
                rows = (await s.scalars(select(RoleGroup).order_by(RoleGroup.group_id))).all()
                return [(r.group_id, r.members, r.error) for r in rows] if len(rows) == 2 else []

        groups = await eventually(read, "both groups to be read from Slack")
        assert groups == [("S0GONE", [], "no_such_subteam"), ("S0LEADS", ["U0DAN"], None)]

        answered = await standins.slack.slash_command("/desk", "stats", "U0DAN", SUPPORT)
        assert str(answered[-1]["text"]).startswith("*Desk figures ")
        refused = await standins.slack.slash_command("/desk", "stats", "U0BOB", SUPPORT)
        assert str(refused[-1]["text"]).startswith("`/desk stats` is for supervisors only")
    finally:
        await desk.stop()
        await standins.stop()
