"""A burst of new tickets with the stand-ins' real rate limits on: Slack takes about one post a
second per channel, so the cards queue up; the urgent ones must not wait behind the rest."""

from __future__ import annotations

import asyncio
import json

from bot.app import DeskApp

from .conftest import RULES, SUPPORT, Stack, desk_settings, eventually, start_standins

NORMAL = 20  # the last card waits about 15 s for its turn: well past the 10 s note
URGENT = ("The whole system is down, outage since 10:00", "Outage: nobody can pay", "OUTAGE!!")


async def test_urgent_cards_jump_the_queue_and_late_cards_say_they_waited(
    database_url: str,
) -> None:
    standins = await start_standins(rate_limits=True)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    desk = DeskApp(desk_settings(standins, database_url, port), RULES, idle_poll=0.05)
    await desk.start()
    stack = Stack(standins, desk, database_url)
    wa = standins.whatsapp
    try:
        await asyncio.gather(
            *(
                wa.customer_says(f"155501{n:05d}", f"Where is my order {n}?", name=f"N{n}")
                for n in range(NORMAL)
            )
        )
        await asyncio.gather(
            *(
                wa.customer_says(f"155509{n:05d}", text, name=f"U{n}")
                for n, text in enumerate(URGENT)
            )
        )

        def urgent_positions() -> list[int]:
            cards = [c for c in stack.cards() if c["channel"] == SUPPORT]
            return [
                n for n, c in enumerate(cards) if "priority *urgent*" in json.dumps(c["blocks"])
            ]

        async def all_urgent_posted() -> list[int]:
            found = urgent_positions()
            return found if len(found) == len(URGENT) else []

        posted = await eventually(all_urgent_posted, "the three urgent cards", timeout=15)
        # Arrival order would put them last (20, 21, 22). The first cards go out at once (the
        # desk's burst for a channel, 8) and more at one a second while the urgent messages are
        # still being turned into tickets (how many depends on the machine and the database);
        # once queued, each urgent card goes next: all three ahead of at least three normal
        # cards that were waiting before them.
        assert max(posted) <= NORMAL + len(URGENT) - 1 - 3, posted

        async def all_posted() -> bool:
            return len(stack.cards()) == NORMAL + len(URGENT)

        await eventually(all_posted, "every card", timeout=40)
        last = stack.cards()[-1]
        assert "priority *normal*" in json.dumps(last["blocks"])
        held = [b for b in last["blocks"] if b.get("block_id") == "held_back"]
        assert held and "after the customer wrote" in held[0]["elements"][0]["text"]
        first = stack.cards()[0]
        assert not [b for b in first["blocks"] if b.get("block_id") == "held_back"]
    finally:
        await desk.stop()
        await standins.stop()
