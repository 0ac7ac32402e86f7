"""Who may claim a ticket (``claim:`` per team in rules.yaml), over real HTTP on both
databases: by default a team's agents, its lead and supervisors; anyone in the channel with
``claim: channel`` or when the team lists no agents. A refusal is said only to the person and
kept in the audit trail; claiming by replying in the thread follows the same rule."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bot.domain.rules import load_rules
from storage.models import AuditEntry, Message

from .conftest import ROOT, Stack, eventually, running_stack

ZH = "C0ZH"
BILLING = "C0BILLING"


async def _zh_card(stack: Stack, chat: int = 77) -> dict[str, object]:
    # Chinese script routes to team zh (agents: Carol); nobody is available, so it waits.
    await stack.standins.telegram.customer_says(chat, "我的订单还没有到", first_name="Li")
    card = await stack.card()
    assert card["channel"] == ZH
    return card


async def _trail(stack: Stack) -> list[tuple[str, str, str, dict[str, object]]]:
    async with stack.sessions() as s:
        rows = (await s.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    return [(e.actor, e.action, e.target, e.detail) for e in rows]


async def test_only_the_team_may_claim_and_a_refusal_is_private(stack: Stack) -> None:
    slack = stack.standins.slack
    card = await _zh_card(stack)
    ts = str(card["ts"])
    # Alice is no agent of team zh, nor its lead, nor a supervisor.
    assert await slack.agent_clicks(ZH, ts, "ticket_claim", "U0ALICE") == 200

    async def told() -> list[str]:
        return [t for t in slack.ephemerals("U0ALICE") if "can claim ticket #1" in t]

    (said,) = await eventually(told, "Alice told privately")
    assert said == (
        "🚫 Only the agents of team *zh*, its lead and supervisors can claim ticket #1."
        " Nothing was done."
    )
    await stack.outbox_idle()
    ticket = await stack.ticket(1)
    assert (ticket.assignee_id, ticket.status) == (None, "new")
    assert not any("claimed" in m["text"] for m in slack.thread(ZH, ts))  # nothing in public
    assert await _trail(stack) == [
        (
            "U0ALICE",
            "refused",
            "ticket #1",
            {"team": "zh", "role": "not an agent", "via": "button", "wanted": "claim"},
        )
    ]
    # Carol, the team's agent, claims it.
    await slack.agent_clicks(ZH, ts, "ticket_claim", "U0CAROL")
    await stack.thread_has(ts, "claimed this ticket")
    assert (await stack.ticket(1)).assignee_id == "U0CAROL"


async def test_replying_in_the_thread_claims_only_for_those_who_may(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    card = await _zh_card(stack, chat=78)
    ts = str(card["ts"])
    reply = await slack.agent_replies(ZH, ts, "U0ALICE", "我们马上查看")

    async def told() -> list[str]:
        return [t for t in slack.ephemerals("U0ALICE") if "Not sent to the customer" in t]

    (said,) = await eventually(told, "Alice told privately in the thread")
    assert "only the agents of team *zh*, its lead and supervisors can claim it" in said
    shown = next(p for p in slack.ephemeral_posts if p["user"] == "U0ALICE")
    assert (shown["channel"], shown["thread_ts"]) == (ZH, ts)

    async def failed_mark() -> bool:
        return "x" in slack.reactions(ZH, reply)

    await eventually(failed_mark, "the ❌ on Alice's reply")
    await stack.outbox_idle()
    assert len(tg.sent_to(78)) == 1  # only the desk's acknowledgement: nothing relayed
    ticket = await stack.ticket(1)
    assert ticket.assignee_id is None
    async with stack.sessions() as s:
        kept = (await s.scalars(select(Message.direction).where(Message.author == "U0ALICE"))).all()
    assert kept == ["note"]
    trail = await _trail(stack)
    assert [(a, act, d["via"]) for a, act, _, d in trail] == [
        ("U0ALICE", "refused", "thread_reply")
    ]
    # Carol's reply claims it and reaches the customer.
    await slack.agent_replies(ZH, ts, "U0CAROL", "您好，我们正在处理。")
    sent = await tg.wait_for_sent(78, 2)
    assert sent[1]["text"] == "您好，我们正在处理。"
    assert (await stack.ticket(1)).assignee_id == "U0CAROL"


async def test_a_supervisor_outside_the_team_claims_and_is_audited(stack: Stack) -> None:
    slack = stack.standins.slack
    await stack.standins.telegram.customer_says(79, "My invoice is wrong", first_name="Ivy")
    card = await stack.card()
    assert card["channel"] == BILLING  # agents Bob and Dan, no lead
    await slack.agent_clicks(BILLING, str(card["ts"]), "ticket_claim", "U0CAROL")
    await stack.thread_has(str(card["ts"]), "claimed this ticket")
    assert (await stack.ticket(1)).assignee_id == "U0CAROL"
    assert await _trail(stack) == [
        (
            "U0CAROL",
            "claimed",
            "ticket #1",
            {"team": "billing", "role": "supervisor", "via": "button"},
        )
    ]


async def test_claim_channel_opens_the_team_to_its_channel(
    database_url: str, tmp_path: Path
) -> None:
    text = (ROOT / "rules.yaml").read_text(encoding="utf-8")
    opened = text.replace(
        "  zh:\n    channel: C0ZH\n", "  zh:\n    channel: C0ZH\n    claim: channel\n", 1
    )
    assert opened != text
    path = tmp_path / "rules.yaml"
    path.write_text(opened, encoding="utf-8")
    async with running_stack(database_url, rules=load_rules(path)) as stack:
        slack = stack.standins.slack
        card = await _zh_card(stack, chat=80)
        await slack.agent_clicks(ZH, str(card["ts"]), "ticket_claim", "U0ALICE")
        await stack.thread_has(str(card["ts"]), "claimed this ticket")
        assert (await stack.ticket(1)).assignee_id == "U0ALICE"
        assert await _trail(stack) == []  # nothing privileged happened
