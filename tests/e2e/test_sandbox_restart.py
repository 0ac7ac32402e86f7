"""`make sandbox` twice: the second continues the first, and a new customer is still answered.

A real ``deskbot sandbox`` process in a scratch folder, driven over the control API as the
sandbox page drives it, stopped with Ctrl-C (SIGINT) and started again. Then the same without
the stand-ins' state file (as if it had been deleted), and ``--fresh``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.app import DeskApp
from storage.db import create_engine, session_factory
from storage.models import Ticket, TicketEvent

from .conftest import ROOT, RULES, SUPPORT, desk_settings, eventually, free_port, start_standins


@dataclass
class Sandbox:
    proc: asyncio.subprocess.Process
    control: str
    desk: str
    log: Path

    async def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        async with aiohttp.ClientSession() as http:
            if body is None:
                async with http.get(self.control + path) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()
            async with http.post(self.control + path, json=body) as r:
                assert r.status == 200, await r.text()
                return await r.json()

    async def stop(self) -> str:
        """Ctrl-C; returns what it printed (the banner)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]
        return out.decode()


@pytest.fixture
async def sandboxes() -> AsyncIterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for s in started:
        if s.proc.returncode is None:
            s.proc.kill()
            await s.proc.wait()


async def _start(
    folder: Path, n: int, started: list[Sandbox], env_db: str | None, *args: str
) -> Sandbox:
    desk_port, standin_port = free_port(), free_port()
    env = {**os.environ, "DESK_MODEL": "rules", "DESK_RULES": str(ROOT / "rules.yaml")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("DESK_DATABASE_URL", None)
    if env_db:
        env["DESK_DATABASE_URL"] = env_db
    log = folder / f"sandbox-{n}.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "sandbox",
        "--port",
        str(desk_port),
        "--standin-port",
        str(standin_port),
        *args,
        cwd=str(folder),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("wb"),
    )
    box = Sandbox(
        proc, f"http://127.0.0.1:{standin_port}/control", f"http://127.0.0.1:{desk_port}", log
    )
    started.append(box)

    async def healthy() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(box.desk + "/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(healthy, "the sandbox to start", timeout=40)
    return box


async def _texts_to(box: Sandbox, chat_id: int, n: int) -> list[str]:
    async def probe() -> list[str] | None:
        sent = await box.call(f"/telegram/sent?chat_id={chat_id}")
        return [m["text"] for m in sent] if len(sent) >= n else None

    return await eventually(probe, f"{n} message(s) to chat {chat_id}")


async def test_a_second_sandbox_continues_where_the_first_stopped(
    tmp_path: Path, sandboxes: list[Sandbox], backend: str, database_url: str
) -> None:
    # SQLite: the sandbox's own file in the working folder; PostgreSQL: DESK_DATABASE_URL.
    env_db = database_url if backend == "postgresql" else None
    first = await _start(tmp_path, 1, sandboxes, env_db)
    await first.call("/telegram/customer_says", {"chat_id": 42, "text": "My order arrived damaged"})
    assert (await _texts_to(first, 42, 1))[0].endswith("#1; an agent will reply here.")
    banner1 = await first.stop()

    clock = time.monotonic()
    second = await _start(tmp_path, 2, sandboxes, env_db)
    ready = time.monotonic() - clock
    # A brand-new customer: before, the stand-in reused update_id 100001 and the desk dropped
    # this as a duplicate: no acknowledgement, no card.
    await second.call("/telegram/customer_says", {"chat_id": 43, "text": "the app is down!"})
    assert await _texts_to(second, 43, 1) == [
        "Thanks, we got your message. Your ticket number is #2; an agent will reply here."
    ]

    async def both_cards() -> list[dict[str, Any]] | None:
        cards = [m for m in await second.call(f"/slack/messages?channel={SUPPORT}") if m["blocks"]]
        return cards if len(cards) == 2 else None

    old_card, _new_card = await eventually(both_cards, "the old and the new card")
    # The page still shows the first conversation, and its card still works: an agent's
    # answer there (a new Slack event_id, not a reused one) reaches customer 42.
    await second.call(
        "/slack/agent_replies",
        {"channel": SUPPORT, "thread_ts": old_card["ts"], "user": "U0ALICE", "text": "Shipped!"},
    )
    assert (await _texts_to(second, 42, 2))[1] == "Shipped!"
    banner2 = await second.stop()
    print(
        f"second sandbox healthy after {ready:.1f} s; it said: {banner2.strip().splitlines()[-1]}"
    )

    assert "Started a fresh sandbox" in banner1
    assert "Continuing the sandbox in" in banner2 and "1 ticket so far" in banner2
    assert "chats and channels from deskbot-sandbox" in banner2
    assert any(n.endswith(".standins.json") for n in os.listdir(tmp_path))

    if env_db:
        return  # --fresh never deletes a database the sandbox does not own
    third = await _start(tmp_path, 3, sandboxes, None, "--fresh")
    assert await third.call("/telegram/sent?chat_id=42") == []
    await third.call("/telegram/customer_says", {"chat_id": 44, "text": "hello"})
    assert (await _texts_to(third, 44, 1))[0].endswith("#1; an agent will reply here.")
    banner3 = await third.stop()
    assert (
        "Started a fresh sandbox (removed deskbot-sandbox.db, deskbot-sandbox.standins.json)"
        in banner3
    )


async def test_fresh_refuses_a_database_it_does_not_own(tmp_path: Path) -> None:
    env = {**os.environ, "DESK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "sandbox",
        "--fresh",
        cwd=str(tmp_path),
        env={**env, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "--fresh only deletes the sandbox's own database file" in err.decode()


async def test_without_the_state_file_ids_continue_and_lost_cards_come_back(
    database_url: str,
) -> None:
    """Stand-ins that start empty (no state file): ids still continue from the database, and
    the returning customer's ticket, whose card this "new workspace" never had, gets a new one."""
    standins = await start_standins()
    port: int = standins.desk_port  # type: ignore[attr-defined]
    desk = DeskApp(desk_settings(standins, database_url, port), RULES, idle_poll=0.05)
    await desk.start()
    try:
        await standins.telegram.customer_says(42, "My order never came", first_name="Kim")
        await standins.telegram.wait_for_sent(42, 1)
        await standins.slack.wait_for(lambda: len(standins.slack.messages(SUPPORT)) == 1, 10)
        card = standins.slack.messages(SUPPORT)[0]
        await standins.slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Looking into it")
        await standins.telegram.wait_for_sent(42, 2)
        await standins.whatsapp.customer_says("15551230001", "Hi there", name="Ana")
        await standins.whatsapp.wait_for_sent("15551230001", 1)
    finally:
        await desk.stop()
        await standins.stop()

    from bot.commands.sandbox import desk_history  # here, so the tests above also run on old code

    standins = await start_standins()  # nothing from before: no chats, no channels' messages
    standins.continue_after(await desk_history(database_url))
    port = standins.desk_port  # type: ignore[attr-defined]
    desk = DeskApp(desk_settings(standins, database_url, port), RULES, idle_poll=0.05)
    await desk.start()
    try:
        await standins.telegram.customer_says(43, "the app is down!", first_name="Lee")
        assert [m["text"] for m in await standins.telegram.wait_for_sent(43, 1)] == [
            "Thanks, we got your message. Your ticket number is #3; an agent will reply here."
        ]
        await standins.whatsapp.customer_says("15551230002", "hello", name="Bo")
        await standins.whatsapp.wait_for_sent("15551230002", 1)
        # Kim comes back; her ticket's card is not in this Slack: it is posted again, with the
        # conversation so far, and her message follows in the new thread.
        await standins.telegram.customer_says(42, "Any news?", first_name="Kim")

        def reposted() -> bool:
            return any("#1" in m["text"] for m in standins.slack.messages(SUPPORT))

        assert await standins.slack.wait_for(reposted, 10)
        new_card = next(m for m in standins.slack.messages(SUPPORT) if "#1" in m["text"])

        def thread() -> list[str]:
            return [m["text"] for m in standins.slack.thread(SUPPORT, new_card["ts"])]

        assert await standins.slack.wait_for(lambda: len(thread()) == 2, 10), thread()
        summary, follow_up = thread()
        # Whichever of the ticket's messages reached Slack first found the card gone.
        assert re.match(r"📋 This ticket's card was gone \((thread|message)_not_found\)", summary)
        assert "*Kim:* My order never came" in summary
        assert "*<@U0ALICE> → customer:* Looking into it" in summary
        assert "Any news?" not in summary
        assert follow_up == "*Kim:* Any news?"
        # The agent answers in the new thread, and the customer gets it.
        await standins.slack.agent_replies(SUPPORT, new_card["ts"], "U0ALICE", "Tomorrow")
        assert [m["text"] for m in await standins.telegram.wait_for_sent(42, 1)] == ["Tomorrow"]
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as s:
                ticket = await s.get_one(Ticket, 1)
                assert ticket.slack_ts == new_card["ts"]
                events = (
                    await s.scalars(select(TicketEvent).where(TicketEvent.kind == "card"))
                ).all()
                assert [e.reason for e in events] in (
                    ["card was gone (thread_not_found); re-posted"],
                    ["card was gone (message_not_found); re-posted"],
                )
        finally:
            await engine.dispose()
    finally:
        await desk.stop()
        await standins.stop()


async def test_the_fast_forwarded_clock_is_kept_across_a_restart_and_fresh_resets_it(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    """⏩ +15 min, a ticket, Ctrl-C, `make sandbox` again: the desk's clock is still 15 minutes
    ahead, so the ticket is today's (not in the future) and `/desk stats today` counts it."""
    first = await _start(tmp_path, 1, sandboxes, None)
    assert await first.call("/clock/advance", {"minutes": 15}) == {"offset_minutes": 15}
    await first.call("/telegram/customer_says", {"chat_id": 42, "text": "My order arrived damaged"})
    assert "Your ticket number is #1" in (await _texts_to(first, 42, 1))[0]
    await first.stop()

    second = await _start(tmp_path, 2, sandboxes, None)
    state = await second.call("/state")
    assert abs(state["now"] - (time.time() + 15 * 60)) < 10, "the state's now is the desk's clock"
    assert state["clock"]["offset_minutes"] == 15
    stats = await second.call(
        "/slack/slash_command",
        {"command": "/desk", "text": "stats today", "user": "U0CAROL", "channel": SUPPORT},
    )
    assert "tickets created 1" in json.dumps(stats), stats
    banner = await second.stop()
    assert "The desk's clock is +15 min ahead of real time" in banner

    third = await _start(tmp_path, 3, sandboxes, None, "--fresh")
    state = await third.call("/state")
    assert abs(state["now"] - time.time()) < 10 and state["clock"]["offset_minutes"] == 0
    assert "ahead of real time" not in await third.stop()
