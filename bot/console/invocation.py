"""What every ``/desk`` subcommand works with: the invocation, the answer, who may do what,
the audit trail, and clipped lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.roles import has_role
from bot.core.tickets import Desk
from storage.models import AuditEntry

MAX_CHARS = 3500  # under Slack's advised 4,000, with room for the "… and N more" line
MAX_ITEMS = 30  # a list longer than this is not read anyway; /desk status has the counts


@dataclass(frozen=True, slots=True)
class Invocation:
    """One ``/desk`` typed by someone: what a subcommand may use to answer.

    ``desk`` is the state machine of the dispatcher's step: a subcommand that changes
    something (``available``) does it there, in the step's one transaction.
    """

    desk: Desk
    user_id: str
    args: str  # whatever followed the subcommand's name
    team_domain: str = ""  # the workspace's subdomain, for links to cards
    channel: str = ""  # the Slack conversation where the command was typed
    # What was worked out before the step, off the event loop (bot/reports/offloop.py).
    ready: object = None

    @property
    def session(self) -> AsyncSession:
        return self.desk.s

    @property
    def now(self) -> datetime:
        return self.desk.now


@dataclass(frozen=True, slots=True)
class Subcommand:
    help: str  # one line, shown by /desk help
    run: Callable[[Invocation], Awaitable[str]]


class Answer(str):
    """An answer's mrkdwn text (also the notification fallback) with its Block Kit blocks."""

    blocks: tuple[dict[str, Any], ...]

    def __new__(cls, text: str, blocks: Sequence[dict[str, Any]] = ()) -> Answer:
        answer = super().__new__(cls, text)
        answer.blocks = tuple(blocks)
        return answer


async def is_agent(inv: Invocation) -> bool:
    """A member of a team, or a supervisor. With no team listing its agents (Claim-only desks),
    the desk cannot tell agents apart, and everyone in its channels is one."""
    members = {a for team in inv.desk.rules.all_teams.values() for a in team.agents}
    return not members or inv.user_id in members or await is_supervisor(inv)


async def is_supervisor(inv: Invocation) -> bool:
    return await has_role(inv.session, inv.desk.rules, inv.user_id, "supervisor")


async def is_admin(inv: Invocation) -> bool:
    return await has_role(inv.session, inv.desk.rules, inv.user_id, "admin")


def audit(inv: Invocation, action: str, target: str, **detail: Any) -> None:
    """A privileged action or a refusal, in the step's transaction: no answer, no entry."""
    inv.session.add(
        AuditEntry(at=inv.now, actor=inv.user_id, action=action, target=target, detail=detail)
    )


def refuse(inv: Invocation, command: str, role: str) -> str:
    audit(inv, "refused", command, needs=role)
    inv.desk.decided("desk.refused user=%s command=%s needs=%s", inv.user_id, command, role)
    return f"`{command}` is for {role}s only; nothing was done." + (
        " An admin can add you to a team in rules.yaml."
        if role == "agent"
        else " An admin can add you under `roles:` in rules.yaml."
    )


def listing(header: str, lines: list[str], total: int) -> str:
    """``header`` and as many ``lines`` as fit in :data:`MAX_CHARS`, then "… and N more"."""
    shown = [header]
    size = len(header)
    for line in lines:
        if size + len(line) + 3 > MAX_CHARS:
            break
        shown.append("• " + line)
        size += len(line) + 3
    more = total - (len(shown) - 1)
    if more > 0:
        shown.append(f"… and {more} more")
    return "\n".join(shown)
