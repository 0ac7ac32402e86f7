"""``/desk stats`` and ``/desk audit`` typed in Slack, over real HTTP against the stand-ins."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.reports.command import current_agents
from bot.reports.metrics import parse_period, report
from bot.reports.render import metric_lines, title
from storage.models import AuditEntry, Message, Ticket

from .conftest import RULES, SUPPORT, Stack, eventually


async def answer(stack: Stack, text: str, user: str) -> dict[str, object]:
    responses = await stack.standins.slack.slash_command("/desk", text, user, SUPPORT)
    posted = [r for r in responses if "text" in r]
    assert posted, f"/desk {text} got no answer: {responses}"
    return posted[-1]


async def audit_rows(stack: Stack) -> list[tuple[str, str, str]]:
    async with stack.sessions() as s:
        rows = (await s.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
        return [(r.actor, r.action, r.target) for r in rows]


async def test_a_supervisor_gets_the_figures_of_the_real_loop(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(7, "Where is my parcel?", first_name="Ann")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "It left the warehouse today.")
    await tg.wait_for_sent(7, 2)  # the acknowledgement, then Bob's reply

    async def accepted() -> bool:
        async with stack.sessions() as s:
            return bool(
                await s.scalar(
                    select(Message.id).where(Message.direction == "out", Message.delivery == "sent")
                )
            )

    await eventually(accepted, "Telegram to accept Bob's reply")
    ticket = await stack.ticket(1)
    assert ticket.first_response_at is not None
    wait = round((ticket.first_response_at - ticket.created_at).total_seconds())

    got = await answer(stack, "stats today by agent", "U0CAROL")
    text = str(got["text"])
    assert "tickets created 1 · resolutions 0 · tickets resolved 0 · backlog 1" in text
    blocks = got["blocks"]
    assert isinstance(blocks, list) and blocks[0]["type"] == "header"
    shown = " ".join(str(b) for b in blocks)
    # The group is shown, flagged as small, naming the agent (Slack shows a mention as the name).
    assert "<@U0BOB> (n under 5) · n=1" in shown
    # The same figures as `deskbot report` prints (same code, same period).
    async with stack.sessions() as s:
        period = parse_period("today", datetime.now(UTC), ZoneInfo("UTC"))
        figures = await report(s, period, datetime.now(UTC), "agent", current_agents(RULES))
    assert figures["metrics"]["first_response"]["median"] == wait
    assert text.splitlines()[0] == f"*{title(figures)}*"
    assert text.splitlines()[1:] == metric_lines(figures["metrics"])
    assert (await audit_rows(stack))[-1] == ("U0CAROL", "stats", "/desk stats today by agent")


async def test_a_non_supervisor_is_refused_and_the_refusal_is_audited(stack: Stack) -> None:
    got = await answer(stack, "stats", "U0BOB")
    assert str(got["text"]).startswith("`/desk stats` is for supervisors only; nothing was done.")
    assert "blocks" not in got or not got["blocks"]
    assert await audit_rows(stack) == [("U0BOB", "refused", "/desk stats")]

    refused = await answer(stack, "audit", "U0BOB")
    assert str(refused["text"]).startswith("`/desk audit` is for admins only")

    trail = str((await answer(stack, "audit today", "U0CAROL"))["text"])
    assert trail.startswith("*Audit trail* ")
    assert "<@U0BOB> refused `/desk stats`" in trail
    assert "<@U0BOB> refused `/desk audit`" in trail


async def test_stats_after_tickets_are_answered_resolved_and_rated_through_the_loop(
    stack: Stack,
) -> None:
    """Three customers: two answered, resolved and rated (5 and 2), one left waiting. The
    figures a supervisor gets are the ones a person counting by hand would write down."""
    tg, slack = stack.standins.telegram, stack.standins.slack
    for n, (chat, text) in enumerate(((11, "My card was charged twice"), (12, "App logs me out"))):
        await tg.customer_says(chat, text, first_name=f"C{chat}")
        card = await stack.card(n + 1)
        await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "Sorted, sorry about that.")
        await tg.wait_for_sent(chat, 2)  # the acknowledgement, then Bob's reply
        await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
        prompt = (await tg.wait_for_sent(chat, 3))[2]
        keys = [
            b["callback_data"] for row in prompt["reply_markup"]["inline_keyboard"] for b in row
        ]
        stars = 5 if chat == 11 else 2
        await tg.customer_presses(chat, prompt["message_id"], keys[stars - 1])
        assert (await tg.wait_for_sent(chat, 4))[3]["text"] == f"Thank you! You rated us {stars}/5."
    await tg.customer_says(13, "Nobody has answered me yet", first_name="C13")

    async def third_card() -> bool:
        return len(stack.cards()) == 3

    # Behind the thread posts and card updates above: Slack takes about one a second per channel.
    await eventually(third_card, "the third ticket's card", timeout=30)

    async def rated_twice() -> bool:
        async with stack.sessions() as s:
            rated = (await s.scalars(select(Ticket.rating).where(Ticket.rating.is_not(None)))).all()
            return sorted(r for r in rated if r is not None) == [2, 5]

    await eventually(rated_twice, "both ratings to be recorded")
    text = str((await answer(stack, "stats today", "U0CAROL"))["text"])
    lines = text.splitlines()
    assert lines[1] == "tickets created 3 · resolutions 2 · tickets resolved 2 · backlog 1"
    assert "(n=2) · 1 unanswered (oldest open" in lines[2]  # first response: two answered
    assert lines[4].startswith("resolution time: median ") and lines[4].endswith("(n=2)")
    assert lines[5].startswith("CSAT 50.0% (n=2, mean 3.50; 1★0 2★1 3★0 4★0 5★1)")
    assert "response rate 100.0% (n=2)" in lines[5]
    assert lines[6].startswith("reopen rate 0.0% (n=2) · one touch 100.0% (n=2)")


async def test_changing_another_agents_ticket_is_in_the_audit_trail(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(21, "My parcel is late", first_name="Ida")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0BOB")
    await stack.thread_has(card["ts"], "🙋 *Bob* claimed this ticket.")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0CAROL")  # a supervisor
    await stack.thread_has(card["ts"], "✅ *Carol* resolved this ticket.")
    # Bob's own ticket, resolved by Bob: nobody else's business, nothing audited.
    await tg.customer_says(22, "And my other parcel?", first_name="Ida")
    second = await stack.card(2)
    await slack.agent_clicks(SUPPORT, second["ts"], "ticket_claim", "U0BOB")
    await stack.thread_has(second["ts"], "🙋 *Bob* claimed this ticket.")
    await slack.agent_clicks(SUPPORT, second["ts"], "ticket_resolve", "U0BOB")
    await stack.thread_has(second["ts"], "✅ *Bob* resolved this ticket.")

    assert await audit_rows(stack) == [("U0CAROL", "resolved", "ticket #1")]
    trail = str((await answer(stack, "audit today", "U0CAROL"))["text"])
    assert "<@U0CAROL> resolved `ticket #1`, assigned to <@U0BOB>, as supervisor" in trail


async def test_someone_in_no_team_sees_no_customers(stack: Stack) -> None:
    await stack.standins.telegram.customer_says(31, "Hello?", first_name="Ben")
    await stack.card()
    for asked in ("queue", "", "status"):
        got = str((await answer(stack, asked, "U0EVE"))["text"])
        shown = asked or "status"
        assert got == (
            f"`/desk {shown}` is for agents only; nothing was done."
            " An admin can add you to a team in rules.yaml."
        )
    assert "Ben" in str((await answer(stack, "queue", "U0ALICE"))["text"])
    assert [r[:2] for r in await audit_rows(stack)] == [("U0EVE", "refused")] * 3


async def test_a_fellow_agent_is_told_privately_and_nothing_changes(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(23, "My parcel is still not here", first_name="Ola")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0BOB")
    await stack.thread_has(card["ts"], "🙋 *Bob* claimed this ticket.")
    assert await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0ALICE") == 200

    async def told() -> str | None:
        answers = [r for rs in slack.responses.values() for r in rs if "text" in r]
        return str(answers[-1]["text"]) if answers else None

    said = await eventually(told, "the private refusal")
    assert said == (
        "Ticket #1 is assigned to <@U0BOB>: only they, the team's lead or a supervisor can"
        " change it. Nothing was done."
    )
    assert (await stack.ticket(1)).status == "open"
    assert await audit_rows(stack) == [("U0ALICE", "refused", "ticket #1")]
    trail = str((await answer(stack, "audit today", "U0CAROL"))["text"])
    assert "<@U0ALICE> refused `ticket #1`: wanted it resolved, assigned to <@U0BOB>" in trail
