"""SLA clocks in the running desk: a ticket that breaches shows its warning, its breach and both
escalation levels exactly once each, with two desks on one database and a restart in between.

The shipped rules.yaml has the sandbox's short targets on the `always` calendar: a normal
ticket's first response is due in 1 h, warned at 75 %, escalated at the breach (assignee and
lead) and 15 minutes later (the team's channel, the lead takes it, the priority goes up).
"""

from __future__ import annotations

import dataclasses
import json

from bot.app import DeskApp
from bot.base.clock import OffsetClock
from bot.delivery.outbox import RateLimits

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, free_port, start_standins


async def test_a_breach_warns_breaches_and_escalates_once_each_across_a_restart(
    database_url: str,
) -> None:
    standins = await start_standins(rate_limits=False)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    settings_a = desk_settings(standins, database_url, port)
    settings_b = dataclasses.replace(settings_a, http_port=free_port(), telegram=None)
    clock = OffsetClock()
    lifted = RateLimits.lifted()

    def desk(settings: object) -> DeskApp:
        return DeskApp(settings, RULES, clock=clock, idle_poll=0.05, limits=lifted)  # type: ignore[arg-type]

    a, b = desk(settings_a), desk(settings_b)
    await a.start()
    await b.start()
    stack = Stack(standins, a, database_url)

    async def later(minutes: float) -> None:
        clock.advance(minutes=minutes)
        for d in (a, b):
            d.sla.wakeup.set()

    def thread() -> list[str]:
        return [m["text"] for m in standins.slack.thread(SUPPORT, card["ts"])]

    async def thread_says(needle: str) -> None:
        async def found() -> bool:
            return any(needle in t for t in thread())

        await eventually(found, f"{needle!r} in the thread", timeout=15)

    try:
        await standins.slack.slash_command("/desk", "available", "U0ALICE", SUPPORT)
        await standins.telegram.customer_says(61, "my parcel is late", "Uma")
        card = await stack.card()
        assert "SLA: First response due <!date^" in json.dumps(card["blocks"])

        await later(46)  # 75 % of the hour is used
        await thread_says("⏰ First response due")

        # A restart of one desk: the other keeps going, and the new one takes its share.
        await a.stop()
        a = desk(settings_a)
        await a.start()
        stack = Stack(standins, a, database_url)

        await later(15)  # past the hour
        await thread_says("🚨 First response target breached")
        await thread_says(
            "📣 Escalation level 1, first response breached: the assignee by DM, <@U0CAROL>."
        )

        async def alice_dmed() -> bool:
            return any("#1" in m["text"] for m in standins.slack.messages("D0ALICE"))

        await eventually(alice_dmed, "a DM to the assignee")

        await later(16)  # the second level, 15 minutes after the breach
        await thread_says("📣 Escalation level 2")
        await thread_says("👤 Reassigned to <@U0CAROL>, the team's lead.")
        await thread_says("⬆️ Priority raised to *high*")

        async def posted_in_channel() -> bool:
            return any("escalation level 2" in m["text"] for m in standins.slack.messages(SUPPORT))

        await eventually(posted_in_channel, "the level-2 post in #support")
        # Let every scheduler pass a few more times: nothing fires twice.
        await later(1)
        await later(1)
        for d in (a, b):
            await d.sla.run_once()
        said = thread()
        for line in (
            "⏰ First response due",
            "🚨 First response target breached",
            "📣 Escalation level 1",
            "📣 Escalation level 2",
        ):
            assert sum(line in t for t in said) == 1, (line, said)
        assert len(standins.slack.messages("D0ALICE")) == 1
        posts = [m for m in standins.slack.messages(SUPPORT) if "escalation level" in m["text"]]
        assert len(posts) == 1
        ticket = await stack.ticket(1)
        assert (ticket.assignee_id, ticket.priority) == ("U0CAROL", "high")
        assert ticket.sla is not None and ticket.sla["first_response"]["state"] == "breached"
    finally:
        await b.stop()
        await a.stop()
        await standins.stop()
