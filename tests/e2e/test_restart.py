"""A real ``deskbot run`` process, killed with SIGKILL between inbox and outbox, then restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import func, select

from storage.db import create_engine, session_factory
from storage.models import InboxRow, Message, OutboxRow

from .conftest import (
    ROOT,
    SLACK_SECRET,
    SLACK_TOKEN,
    TELEGRAM_TOKEN,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    eventually,
    start_standins,
)


async def _spawn(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    running: list[asyncio.subprocess.Process] = []
    yield running
    for p in running:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def test_kill_between_inbox_and_outbox_loses_and_doubles_nothing(
    database_url: str, procs: list[asyncio.subprocess.Process]
) -> None:
    standins = await start_standins()
    port: int = standins.desk_port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DESK_DATABASE_URL": database_url,
        "DESK_HTTP_PORT": str(port),
        "DESK_RULES": str(ROOT / "rules.yaml"),
        "DESK_MODEL": "rules",  # this test is about durability; the model has its own
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
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        procs.append(await _spawn(env))
        await eventually(lambda: _healthy(url), "the desk to start", timeout=30)

        # Slack and Telegram are down for a while: the replies wait in the outbox.
        standins.slack.fail_next("chat.postMessage", status=503, times=3)
        standins.telegram.fail_next("sendMessage", status=502, times=3)
        await standins.telegram.customer_says(11, "before the crash", first_name="Kim")

        async def queued() -> bool:
            async with sessions() as s:
                done = await s.scalar(select(InboxRow.status).where(InboxRow.kind != "ignored"))
                # Both replies failed once and wait for their retry: not in flight, so the
                # kill lands between inbox and outbox, not inside a send.
                waiting = await s.scalar(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(OutboxRow.status == "pending", OutboxRow.attempts >= 1)
                )
                return done == "done" and waiting == 2

        await eventually(queued, "the message processed and its replies queued")
        procs[0].send_signal(signal.SIGKILL)
        await procs[0].wait()

        procs.append(await _spawn(env))
        await eventually(lambda: _healthy(url), "the desk to restart", timeout=30)

        async def delivered() -> bool:
            async with sessions() as s:
                left = await s.scalar(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "sent")
                )
                return left == 0

        await eventually(delivered, "every queued reply delivered", timeout=30)
        # Let a second poll confirm Telegram's offset, then count what everybody saw.
        await asyncio.sleep(1.5)
        assert [m["text"] for m in standins.telegram.sent_to(11)] == [
            "Thanks, we got your message. Your ticket number is #1; an agent will reply here."
        ]
        cards = [m for m in standins.slack.messages("C0SUPPORT") if m.get("blocks")]
        assert len(cards) == 1
        async with sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Message)) == 1
            assert await s.scalar(select(func.count()).select_from(OutboxRow)) == 2
        procs[1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(procs[1].wait(), 15) == 0
    finally:
        await engine.dispose()
        await standins.stop()
