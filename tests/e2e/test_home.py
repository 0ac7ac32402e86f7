"""The agent's App Home over real HTTP: opened, then kept current after each kind of change
(a new ticket in my team, a claim from the Home, availability, a reassignment, a resolve), for
the people concerned only, debounced, and with the desk's totals for a supervisor."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.models import Agent, OutboxRow

from .conftest import SUPPORT, Stack, eventually


async def home_shows(stack: Stack, user: str, *needles: str) -> str:
    slack = stack.standins.slack

    async def probe() -> str | None:
        text = slack.home_text(user)
        return text if all(n in text for n in needles) else None

    return await eventually(probe, f"{needles!r} on {user}'s Home")


async def home_rows(stack: Stack, user: str) -> int:
    async with stack.sessions() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(OutboxRow)
                .where(OutboxRow.destination_key == f"slack:home:{user}")
            )
            or 0
        )


async def test_the_home_follows_each_kind_of_change(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    assert await slack.opens_home("U0BOB") == 200
    await home_shows(
        stack,
        "U0BOB",
        "You are *away*",
        "*My open tickets* (0)",
        "*Waiting in your teams* (0)",
        "[Go available]",
    )
    await slack.opens_home("U0DAN")  # billing only: support's tickets are none of his business
    await home_shows(stack, "U0DAN", "*Waiting in your teams* (0)")

    # A new ticket in Bob's team (nobody available: it waits) appears with a Claim button.
    await tg.customer_says(42, "My parcel never came", first_name="Ann")
    card = await stack.card()
    text = await home_shows(stack, "U0BOB", "*Waiting in your teams* (1)", "[Claim]")
    assert "Telegram · Ann" in text and "> My parcel never came" in text
    assert f"/archives/{SUPPORT}/p{card['ts'].replace('.', '')}|#1>" in text  # the card's link
    assert await home_rows(stack, "U0DAN") == 1  # only the publish of his opening

    # Claimed from the Home: the ticket is Bob's, the card and thread say so, the Home too.
    assert await slack.clicks_home("U0BOB", "home_claim", "1") == 200
    await stack.thread_has(card["ts"], "🙋 *Bob* claimed this ticket.")
    await home_shows(stack, "U0BOB", "*My open tickets* (1)", "*Waiting in your teams* (0)")
    ticket = await stack.ticket()
    assert (ticket.assignee_id, ticket.status) == ("U0BOB", "open")

    # Availability from the Home: recorded where the routing reads it.
    await slack.clicks_home("U0BOB", "home_availability")
    await home_shows(stack, "U0BOB", "You are *available*", "[Go away]")
    async with stack.sessions() as s:
        agent = await s.get(Agent, "U0BOB")
        assert agent is not None and agent.available

    # Carol (the team's lead) gives Bob's ticket to Alice: both Homes change.
    await slack.opens_home("U0ALICE")
    await home_shows(stack, "U0ALICE", "*My open tickets* (0)")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reassign", "U0CAROL", "U0ALICE")
    await home_shows(stack, "U0BOB", "*My open tickets* (0)")
    await home_shows(stack, "U0ALICE", "*My open tickets* (1)", "Ann")

    # Resolved: it leaves Alice's Home.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0ALICE")
    await home_shows(stack, "U0ALICE", "*My open tickets* (0)", "Nothing assigned to you")
    assert await home_rows(stack, "U0DAN") == 1


async def test_a_supervisor_sees_the_desks_totals(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    await slack.opens_home("U0CAROL")  # supervisor in rules.yaml
    await home_shows(stack, "U0CAROL", "*The desk* · 0 new · 0 open")
    await tg.customer_says(43, "Question about my last invoice", first_name="Ida")  # billing
    await stack.card()
    # Carol is not in billing, but the desk's totals changed: her Home follows.
    await home_shows(stack, "U0CAROL", "*The desk* · 1 new", "1 unassigned")
    await slack.opens_home("U0BOB")
    assert "*The desk*" not in await home_shows(stack, "U0BOB", "*Waiting in your teams* (1)")


async def test_changes_close_together_publish_the_home_once(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    await slack.opens_home("U0ALICE")
    await home_shows(stack, "U0ALICE", "*Waiting in your teams* (0)")
    opened = slack.home_publishes["U0ALICE"]
    for chat in range(50, 56):
        await tg.customer_says(chat, "my parcel is late", first_name=f"C{chat}")
    await home_shows(stack, "U0ALICE", "*Waiting in your teams* (6)")
    # Six new tickets within the debounce window (2 s): one or two publishes, not six.
    assert slack.home_publishes["U0ALICE"] - opened <= 2
    assert await home_rows(stack, "U0ALICE") <= 3


async def test_a_transfer_moves_the_ticket_from_one_teams_homes_to_the_others(
    stack: Stack,
) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    await slack.opens_home("U0ALICE")  # support and vip
    await slack.opens_home("U0DAN")  # billing
    await tg.customer_says(44, "My parcel never came", first_name="Ann")
    card = await stack.card()
    await home_shows(stack, "U0ALICE", "*Waiting in your teams* (1)")
    await home_shows(stack, "U0DAN", "*Waiting in your teams* (0)")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_transfer", "U0CAROL", "1:billing")
    await home_shows(stack, "U0DAN", "*Waiting in your teams* (1)", "Ann")
    await home_shows(stack, "U0ALICE", "*Waiting in your teams* (0)")
