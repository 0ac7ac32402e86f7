"""A real ``deskbot run`` killed with SIGKILL in the moment after Telegram accepted a message and
before the desk heard so, then restarted.

Before: the restarted desk waited out the dead process's 60-second lease, then sent the
acknowledgement again (the customer got two), and everything queued behind it waited too.
Now: the restart takes its dead predecessor's leases over at once; the desk's own notice is not
sent again and the ticket's thread says the customer may not have got it; an agent's reply is
sent again and the thread says it may have arrived twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select

from sandbox import StandIns
from storage.db import create_engine, session_factory
from storage.models import InboxRow, OutboxRow

from .conftest import (
    ROOT,
    SLACK_SECRET,
    SLACK_TOKEN,
    SUPPORT,
    TELEGRAM_TOKEN,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    eventually,
    start_standins,
)

ACK = "Thanks, we got your message. Your ticket number is #1; an agent will reply here."


def _env(standins: StandIns, database_url: str) -> dict[str, str]:
    port: int = standins.desk_port  # type: ignore[attr-defined]
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DESK_DATABASE_URL": database_url,
        "DESK_HTTP_PORT": str(port),
        "DESK_RULES": str(ROOT / "rules.yaml"),
        "DESK_MODEL": "rules",
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
        "TELEGRAM_API_BASE": standins.telegram_api_base,
        "TELEGRAM_POLL_TIMEOUT": "1",
        "WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": WA_PHONE_ID,
        "WHATSAPP_APP_SECRET": WA_SECRET,
        "WHATSAPP_VERIFY_TOKEN": "v",
        "WHATSAPP_API_BASE": standins.whatsapp_api_base,
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_BASE": standins.slack_api_base,
    }


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    running: list[asyncio.subprocess.Process] = []
    yield running
    for p in running:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def _start(env: dict[str, str], procs: list[asyncio.subprocess.Process]) -> float:
    """Start a desk; returns the monotonic time at which it answered /healthz."""
    procs.append(
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    )
    url = f"http://127.0.0.1:{env['DESK_HTTP_PORT']}/healthz"

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(healthy, "the desk to start", timeout=30)
    return time.monotonic()


async def _kill(procs: list[asyncio.subprocess.Process]) -> None:
    procs[-1].send_signal(signal.SIGKILL)
    await procs[-1].wait()


def _texts(standins: StandIns, chat_id: int) -> list[str]:
    return [m["text"] for m in standins.telegram.sent_to(chat_id)]


async def test_a_crash_after_telegram_accepted_neither_doubles_a_notice_nor_waits_a_minute(
    database_url: str, procs: list[asyncio.subprocess.Process]
) -> None:
    standins = await start_standins()
    tg, slack = standins.telegram, standins.slack
    env = _env(standins, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)

    async def reply_queued(text: str) -> bool:
        async with sessions() as s:
            rows = (
                await s.scalars(select(OutboxRow).where(OutboxRow.message_id.is_not(None)))
            ).all()
            return any(r.payload["text"] == text for r in rows)

    async def thread_says(needle: str) -> list[str]:
        async def probe() -> list[str]:
            return [m["text"] for m in slack.thread(SUPPORT, card["ts"]) if needle in m["text"]]

        return await eventually(probe, f"{needle!r} in the ticket's thread")

    try:
        await _start(env, procs)
        # 1. Telegram takes the acknowledgement, and the desk dies before it hears so.
        tg.hold_after_accept("sendMessage")
        await tg.customer_says(11, "the app is down!", first_name="Kim")
        assert [m["text"] for m in await tg.wait_for_sent(11, 1)] == [ACK]
        assert await slack.wait_for(lambda: bool(slack.messages(SUPPORT)), 10)
        card = slack.messages(SUPPORT)[0]
        # An agent answers meanwhile: queued behind the acknowledgement, in order.
        await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "We're on it")
        await eventually(lambda: reply_queued("We're on it"), "the reply queued")
        await _kill(procs)

        healthy = await _start(env, procs)

        async def reply_arrived() -> bool:
            return len(_texts(standins, 11)) >= 2

        await eventually(reply_arrived, "the queued reply delivered", timeout=30)
        took = time.monotonic() - healthy
        assert took < 5, f"the queued reply took {took:.1f} s after the restart"
        notice = await thread_says("The desk restarted while sending this to the customer")
        assert notice == [
            f'⚠️ The desk restarted while sending this to the customer: "{ACK}". '
            "They may not have got it; it was not sent again, to avoid a duplicate."
        ]
        await asyncio.sleep(1.5)  # anything sent twice would have arrived by now
        assert _texts(standins, 11) == [ACK, "We're on it"]  # one acknowledgement
        async with sessions() as s:
            ack = await s.scalar(select(OutboxRow).where(OutboxRow.id == 1))
            assert ack is not None and ack.status == "unknown"
            assert (
                ack.last_error == "outcome unknown after a crash; not re-sent to avoid a duplicate"
            )

        # 2. The same moment for an agent's reply: losing it is worse than a duplicate.
        tg.hold_after_accept("sendMessage")
        await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Fixed, please retry")
        await tg.wait_for_sent(11, 3)

        async def reply_sending() -> bool:
            async with sessions() as s:
                row = await s.scalar(
                    select(OutboxRow).where(
                        OutboxRow.status == "sending", OutboxRow.message_id.is_not(None)
                    )
                )
                return row is not None

        await eventually(reply_sending, "the reply in flight")
        await _kill(procs)
        healthy = await _start(env, procs)

        async def resent() -> bool:
            return len(_texts(standins, 11)) >= 4

        await eventually(resent, "the reply sent again", timeout=30)
        took = time.monotonic() - healthy
        assert took < 5, f"the reply took {took:.1f} s after the restart"
        assert _texts(standins, 11)[2:] == ["Fixed, please retry"] * 2
        assert await thread_says("may get it twice") == [
            "⚠️ The desk restarted while sending this reply to the customer: "
            '"Fixed, please retry". It is being sent again, so they may get it twice.'
        ]
        async with sessions() as s:
            left = await s.scalar(
                select(InboxRow.id).where(InboxRow.status.in_(("pending", "processing")))
            )
            assert left is None
        procs[-1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(procs[-1].wait(), 15) == 0
    finally:
        tg.release_held()
        await engine.dispose()
        await standins.stop()
