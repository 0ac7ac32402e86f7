"""Who is a supervisor or an admin: user ids in ``roles:``, and members of the user groups there.

User groups (S…) let a company say "whoever is in @support-leads" instead of listing people. Their
members are read from Slack with ``usergroups.users.list`` (scope ``usergroups:read``) by
:class:`GroupRefresher`, and kept in the ``role_groups`` table: every process reads the same
members, and when Slack cannot answer (a free workspace has no user groups, a revoked scope, an
outage) the last members read stay in force and the error is kept beside them. User ids listed
directly always work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.repeat import repeat
from bot.domain.rules import GROUP_ID, Rules
from storage.models import RoleGroup

log = logging.getLogger("deskbot.roles")

Role = Literal["supervisor", "admin"]


class GroupLookupError(Exception):
    """Slack did not list a group's members; ``error`` is Slack's error string."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def entries_for(rules: Rules, role: Role) -> tuple[str, ...]:
    """The ids that hold ``role``: admins may do whatever supervisors may."""
    if role == "admin":
        return rules.roles.admins
    return (*rules.roles.supervisors, *rules.roles.admins)


async def has_role(session: AsyncSession, rules: Rules, user: str, role: Role) -> bool:
    entries = entries_for(rules, role)
    if user in entries:
        return True
    groups = [e for e in entries if GROUP_ID.fullmatch(e)]
    if not groups:
        return False
    rows = await session.scalars(select(RoleGroup).where(RoleGroup.group_id.in_(groups)))
    return any(user in row.members for row in rows)


async def may_claim(session: AsyncSession, rules: Rules, team_name: str, user: str) -> str | None:
    """Why ``user`` may claim a ticket of ``team_name`` (``claim:`` in rules.yaml), or None.

    ``claim: channel``, or a team that lists no agents: anyone in its channel. ``claim: team``
    (the default): its agents, its lead, and supervisors and admins.
    """
    team = rules.team(team_name)
    if team.claim == "channel" or not team.agents:
        return "channel"
    if user in team.agents:
        return "agent"
    if team.lead == user:
        return "lead"
    if await has_role(session, rules, user, "supervisor"):
        return "supervisor"
    return None


class GroupRefresher:
    """Reads the members of every user group in ``roles:`` now, then every ``interval``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules: Rules,
        clock: Clock,
        members: Callable[[str], Awaitable[list[str]]],
        *,
        interval: float = 300.0,
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._clock = clock
        self._members = members
        self.interval = interval

    async def run_once(self) -> dict[str, int | str]:
        """One pass; returns each group's member count, or Slack's error for it."""
        seen: dict[str, int | str] = {}
        for group in self._rules.roles.groups:
            try:
                members: list[str] | None = sorted(set(await self._members(group)))
                error = None
            except GroupLookupError as exc:
                members, error = None, exc.error
                log.warning("roles.group_unreadable group=%s error=%s", group, exc.error)
            seen[group] = len(members) if members is not None else (error or "error")
            await self._store(group, members, error)
        return seen

    async def _store(self, group: str, members: list[str] | None, error: str | None) -> None:
        now = self._clock.now()
        try:
            async with self._sessions.begin() as session:
                row = await session.get(RoleGroup, group)
                if row is None:
                    session.add(
                        RoleGroup(
                            group_id=group, members=members or [], refreshed_at=now, error=error
                        )
                    )
                    return
                if members is not None:
                    if set(row.members) != set(members):
                        log.info("roles.group_changed group=%s members=%d", group, len(members))
                    row.members = members
                    row.refreshed_at = now
                row.error = error
        except IntegrityError:
            pass  # another process stored the same group at the same moment

    async def run(self, stop: asyncio.Event) -> None:
        if self._rules.roles.groups:
            await repeat(self.run_once, stop, self.interval, "roles")
