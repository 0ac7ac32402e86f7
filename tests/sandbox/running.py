"""A desk wired to the stand-ins as ``deskbot sandbox`` wires them, for the sandbox's tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from bot.app import DeskApp
from bot.commands.sandbox import sandbox_settings
from bot.domain.rules import Rules, load_rules
from sandbox import StandIns
from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def running_sandbox(
    database_url: str, rules: Rules | None = None
) -> AsyncIterator[tuple[StandIns, DeskApp]]:
    """The stand-ins (their rate limits lifted) and a started desk on them, with ``rules``
    (default: the shipped rules.yaml); both stopped on leaving, the desk first. The Telegram
    long-poll is short, so the desk stops at once (the sandbox waits 10 s for a person)."""
    port = free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    try:
        settings = sandbox_settings(standins, desk_port=port, database_url=database_url)
        assert settings.telegram is not None
        settings = replace(settings, telegram=replace(settings.telegram, poll_timeout=1))
        desk = DeskApp(settings, rules or load_rules(ROOT / "rules.yaml"), idle_poll=0.05)
        await desk.start()
        try:
            yield standins, desk
        finally:
            await desk.stop()
    finally:
        await standins.stop()
