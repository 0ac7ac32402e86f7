"""``/desk`` and its subcommands, answered from the tables: help, status, mine, queue."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.console import desk_command as supervisor
from bot.console.desk_command import SUBCOMMANDS, desk_command
from bot.console.invocation import Invocation, Subcommand
from bot.domain.events import SlashCommand
from storage.models import Customer, Ticket

from .test_desk_core import RULES, Harness, make_harness


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


async def ask(h: Harness, text: str, user: str = "U0BOB", domain: str = "acme") -> str:
    command = SlashCommand(
        external_id=f"command:{next(h.seq)}",
        conversation="slack:C0SUPPORT:commands",
        command="/desk",
        text=text,
        user_id=user,
        slack_channel="C0SUPPORT",
        team_domain=domain,
    )
    async with h.sessions() as s:
        return await desk_command(wiring.desks(RULES)(s, h.clock.now()), command)


async def new_ticket(h: Harness, text: str, chat: str) -> Ticket:
    await h.inbox.accept([h.customer(text, chat=chat)], {})
    await h.settle()
    return await h.ticket()


def link(ticket: Ticket) -> str:
    assert ticket.slack_ts is not None
    stamp = ticket.slack_ts.replace(".", "")
    return f"<https://acme.slack.com/archives/C0SUPPORT/p{stamp}|#{ticket.id}>"


async def test_help_lists_every_subcommand_one_line_each(desk: Harness) -> None:
    answer = await ask(desk, "help")
    lines = answer.splitlines()
    assert lines[0] == "*`/desk` commands*"
    named = [re.match(r"• `/desk ([\w-]+)`: \S", line) for line in lines[1:]]
    assert [m.group(1) if m else None for m in named] == list(SUBCOMMANDS)
    assert {"status", "mine", "queue", "available", "away", "help"} <= set(SUBCOMMANDS)


async def test_bare_desk_and_status_give_the_summary_and_help_does_not(desk: Harness) -> None:
    await new_ticket(desk, "the site is down, outage", "1")
    bare, status, mine, helped = [await ask(desk, t) for t in ("", "status", "mine", "help")]
    assert bare == status
    assert bare.startswith("*Desk status* · 1 active ticket\n") and "urgent 1" in bare
    assert len({bare, mine, helped}) == 3  # the arguments are read now


async def test_an_unknown_subcommand_is_named_and_answered_with_the_help(desk: Harness) -> None:
    answer = await ask(desk, "avaliable now")
    first, _, rest = answer.partition("\n\n")
    assert first == "`/desk avaliable` is not a /desk command."
    assert rest == await ask(desk, "help")
    sneaky = await ask(desk, "<@U0ALICE>`x`")
    assert "<@U0ALICE>" not in sneaky and "&lt;@U0ALICE&gt;x" in sneaky


async def test_mine_lists_the_callers_open_tickets_with_links(desk: Harness) -> None:
    first = await new_ticket(desk, "refund please", "1")  # high
    desk.clock.advance(minutes=30)
    second = await new_ticket(desk, "the system down since 9", "2")  # urgent
    third = await new_ticket(desk, "hello", "3")
    fourth = await new_ticket(desk, "question", "4")
    for t, user in ((first, "U0BOB"), (second, "U0BOB"), (third, "U0CAROL"), (fourth, "U0BOB")):
        await desk.inbox.accept([desk.action(t, "claim", user)], {})
    await desk.inbox.accept([desk.action(fourth, "resolve", "U0BOB")], {})
    await desk.settle()
    desk.clock.advance(hours=2, minutes=5)
    first, second = [await _get(desk, t.id) for t in (first, second)]

    answer = await ask(desk, "mine")
    lines = answer.splitlines()
    assert lines[0] == "*Your open tickets* · 2, most urgent first"
    assert lines[1] == f"• {link(second)} 🔴 urgent · open · 2h 05m old · Ann"
    assert lines[2] == f"• {link(first)} 🟠 high · open · 2h 35m old · Ann"
    assert len(lines) == 3  # not Carol's, not the resolved one
    assert await ask(desk, "mine", user="U0DAVE") == "You have no open tickets."


async def test_queue_lists_unclaimed_tickets_oldest_first(desk: Harness) -> None:
    assert await ask(desk, "queue") == "Nothing waiting: every active ticket is claimed."
    old = await new_ticket(desk, "hello", "1")
    desk.clock.advance(days=1, hours=3)
    claimed = await new_ticket(desk, "hi", "2")
    desk.clock.advance(minutes=7)
    young = await new_ticket(desk, "the system down", "3")
    await desk.inbox.accept([desk.action(claimed, "claim", "U0BOB")], {})
    await desk.settle()
    old, young = [await _get(desk, t.id) for t in (old, young)]
    lines = (await ask(desk, "queue")).splitlines()
    assert lines == [
        "*Unclaimed tickets* · 2, oldest first",
        f"• {link(old)} 🟢 normal · waiting 1d 3h · Ann",
        f"• {link(young)} 🔴 urgent · waiting 0m · Ann",
    ]


async def test_without_the_workspace_domain_the_link_opens_the_channel(desk: Harness) -> None:
    await new_ticket(desk, "hello", "1")
    answer = await ask(desk, "queue", domain="")
    assert "<https://slack.com/app_redirect?channel=C0SUPPORT|#1>" in answer


async def test_long_lists_are_clipped_within_slacks_limits(desk: Harness) -> None:
    now = desk.clock.now()
    async with desk.sessions.begin() as s:
        customer = Customer(name="A" * 150, created_at=now)
        s.add(customer)
        await s.flush()
        for n in range(75):
            s.add(
                Ticket(
                    customer_id=customer.id,
                    channel="telegram",
                    chat_id=str(n),
                    status="new",
                    priority="normal",
                    slack_channel="C0SUPPORT",
                    slack_ts=f"1700000000.{n:06d}",
                    created_at=now - timedelta(minutes=n),
                    updated_at=now,
                )
            )
    answer = await ask(desk, "queue")
    assert len(answer) <= 4000
    listed = [line for line in answer.splitlines() if line.startswith("• ")]
    assert 0 < len(listed) < 75
    assert answer.splitlines()[-1] == f"… and {75 - len(listed)} more"
    assert answer.splitlines()[0] == "*Unclaimed tickets* · 75, oldest first"


async def test_a_new_subcommand_is_one_entry_in_the_table(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(inv: Invocation) -> str:
        return f"<@{inv.user_id}> is away ({inv.args})"

    table = dict(supervisor.SUBCOMMANDS)
    table["away"] = Subcommand("mark yourself away", away)
    monkeypatch.setattr(supervisor, "SUBCOMMANDS", table)
    assert await ask(desk, "away until 3pm") == "<@U0BOB> is away (until 3pm)"
    assert "• `/desk away`: mark yourself away" in await ask(desk, "help")


async def _get(h: Harness, ticket_id: int) -> Ticket:
    async with h.sessions() as s:
        return await s.get_one(Ticket, ticket_id)
