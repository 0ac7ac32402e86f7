"""A real ``deskbot run`` killed while Slack holds its answer to a card post, then restarted.

Before: the restarted desk posted the card again; the ticket pointed at the second copy, and an
agent who answered in the first copy's thread (the one they had seen first) reached no one.
Now: every Slack post carries its outbox row id in message metadata; the restarted desk finds
the first copy by it, records it as the card, and posts nothing twice.
"""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy import select

from storage.db import create_engine, session_factory
from storage.models import OutboxRow, Ticket

from .conftest import SUPPORT, eventually, start_standins
from .test_crash_window import _env, _kill, _start, procs

__all__ = ["procs"]  # the fixture, shared with the crash-window test


async def test_a_card_whose_post_outcome_was_unknown_is_found_not_posted_twice(
    database_url: str, procs: list[asyncio.subprocess.Process]
) -> None:
    standins = await start_standins()
    tg, slack = standins.telegram, standins.slack
    env = _env(standins, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)

    async def card_in_flight() -> bool:
        async with sessions() as s:
            row = await s.scalar(
                select(OutboxRow).where(OutboxRow.payload["kind"].as_string() == "slack_card")
            )
            return row is not None and row.status == "sending"

    try:
        await _start(env, procs)
        # Slack posts the card, and the desk dies before it hears so.
        slack.hold_after_accept("chat.postMessage")
        await tg.customer_says(21, "I was charged twice", first_name="Lou")
        assert await slack.wait_for(lambda: bool(slack.messages(SUPPORT)), 10)
        first = slack.messages(SUPPORT)[0]
        await eventually(card_in_flight, "the card's post in flight")
        await _kill(procs)

        await _start(env, procs)

        async def card_recorded() -> str | None:
            async with sessions() as s:
                ticket = await s.scalar(select(Ticket))
                return ticket.slack_ts if ticket is not None else None

        assert await eventually(card_recorded, "the card recorded", timeout=15) == first["ts"]
        # The agent answers in the thread of the card they saw: the customer gets it.
        await slack.agent_replies(SUPPORT, first["ts"], "U0ALICE", "Refunded the second charge")

        async def answered() -> bool:
            return any(m["text"] == "Refunded the second charge" for m in tg.sent_to(21))

        await eventually(answered, "the agent's reply at the customer", timeout=15)
        await asyncio.sleep(1.0)  # a second copy would have been posted by now
        assert [m["ts"] for m in slack.messages(SUPPORT)] == [first["ts"]]
        async with sessions() as s:
            card = await s.scalar(
                select(OutboxRow).where(OutboxRow.payload["kind"].as_string() == "slack_card")
            )
            assert card is not None and card.status == "sent" and card.attempts == 2
            assert card.platform_message_id == first["ts"]
        assert slack.messages(SUPPORT)[0]["metadata"] == {
            "event_type": "deskbot_outbox",
            "event_payload": {"outbox_id": card.id},
        }
        procs[-1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(procs[-1].wait(), 15) == 0
    finally:
        slack.release_held()
        await engine.dispose()
        await standins.stop()
