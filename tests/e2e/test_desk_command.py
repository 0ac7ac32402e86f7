"""``/desk`` subcommands typed in Slack, answered through the response_url, over real HTTP."""

from __future__ import annotations

import re

from .conftest import SUPPORT, Stack, eventually


async def desk(stack: Stack, text: str, user: str = "U0BOB") -> str:
    responses = await stack.standins.slack.slash_command("/desk", text, user, SUPPORT)
    posted = [r for r in responses if "text" in r]
    assert posted, f"/desk {text} got no answer: {responses}"
    return str(posted[-1]["text"])


async def test_help_mine_queue_and_status_answer_differently(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(1, "the site is down, outage everywhere", first_name="Ann")
    await tg.customer_says(2, "question about invoices", first_name="Ben")
    await stack.card(2)
    # Found by customer: the two cards go to different teams' channels, in either order.
    first = next(c for c in stack.cards() if "Ann" in c["text"])
    second = next(c for c in stack.cards() if "Ben" in c["text"])
    # Their numbers too: which message the desk stored first is not promised.
    ann, ben = (int(re.findall(r"#(\d+)", c["text"])[0]) for c in (first, second))
    await slack.agent_clicks(SUPPORT, first["ts"], "ticket_claim", "U0BOB")

    async def claimed() -> bool:
        return (await stack.ticket(ann)).assignee_id == "U0BOB"

    await eventually(claimed, "Bob's claim")

    helped = await desk(stack, "help")
    assert helped.startswith("*`/desk` commands*")
    for name in ("status", "mine", "queue", "help"):
        assert f"• `/desk {name}`: " in helped

    status = await desk(stack, "")
    assert status.startswith("*Desk status* · 2 active tickets")
    # The same answer, but for the last line's inbox lag, which moves between two asks.
    assert (await desk(stack, "status")).splitlines()[:-1] == status.splitlines()[:-1]

    mine = await desk(stack, "mine")
    # The sandbox workspace is "sandbox": the link is the card's permalink.
    permalink = f"https://sandbox.slack.com/archives/{SUPPORT}/p{first['ts'].replace('.', '')}"
    assert mine.splitlines()[1].startswith(f"• <{permalink}|#{ann}> 🔴 urgent · open · ")
    assert len(mine.splitlines()) == 2

    queue = await desk(stack, "queue")
    assert queue.splitlines()[0] == "*Unclaimed tickets* · 1, oldest first"
    assert f"p{second['ts'].replace('.', '')}|#{ben}> 🟢 normal · waiting " in queue
    assert "Ben" in queue

    unknown = await desk(stack, "dashboard")
    assert unknown.startswith("`/desk dashboard` is not a /desk command.")
    assert helped in unknown
