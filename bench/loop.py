"""How fast the loop turns customer messages into Slack posts, measured with the stand-ins.

    .venv/bin/python -m bench.loop [--messages 300] [--latency-samples 40] [--database URL]

Prints figures; asserts nothing. The stand-ins' and the desk's rate limits are lifted, so this
measures the desk (webhook/poll → inbox → dispatcher → outbox → Slack), not Telegram's limits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bot.app import DeskApp
from bot.outbox import RateLimits
from bot.rules import parse_rules
from bot.sandbox_cmd import sandbox_settings
from sandbox import StandIns

CHANNEL = "C0SUPPORT"


def _cards_with(standins: StandIns, marker: str) -> int:
    return sum(
        1
        for m in standins.slack.messages(CHANNEL)
        if m.get("blocks") and marker in str(m.get("text", ""))
    )


async def _wait_cards(standins: StandIns, marker: str, n: int, timeout: float) -> None:
    # Woken by the stand-in when Slack changes: a polling loop here would hold the GIL and
    # slow the desk's database threads down, measuring the harness instead of the desk.
    if not await standins.slack.wait_for(lambda: _cards_with(standins, marker) >= n, timeout):
        raise TimeoutError(f"only {_cards_with(standins, marker)}/{n} cards arrived")


async def run(messages: int, samples: int, database: str | None, channel: str) -> None:
    port = 18080
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    with tempfile.TemporaryDirectory() as tmp:
        db = database or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        desk = DeskApp(
            sandbox_settings(standins, desk_port=port, database_url=db),
            parse_rules({"version": 1}),
            limits=RateLimits.lifted(),
            idle_poll=0.05,
        )
        await desk.start()
        try:

            async def say(i: int, text: str) -> None:
                if channel == "telegram":
                    await standins.telegram.customer_says(100_000 + i, text, first_name=f"C{i}")
                else:
                    await standins.whatsapp.customer_says(str(15_550_000_000 + i), text)

            # Latency: one message at a time on an idle desk, customer message → Slack card.
            latencies = []
            for i in range(samples):
                marker = f"latency-{i}-"
                t0 = time.perf_counter()
                await say(i, f"{marker} where is my parcel?")
                await _wait_cards(standins, marker, 1, 30)
                latencies.append((time.perf_counter() - t0) * 1000)
            # Throughput: a burst from many customers at once.
            t0 = time.perf_counter()
            await asyncio.gather(
                *(say(samples + i, f"burst-{i}- my order is late") for i in range(messages))
            )
            sent = time.perf_counter() - t0
            await _wait_cards(standins, "burst-", messages, 600)
            elapsed = time.perf_counter() - t0
        finally:
            await desk.stop()
            await standins.stop()
    kind = desk.engine.dialect.name if desk.engine else "?"
    print(f"loop benchmark: {channel} → Slack, database {kind}, rate limits lifted")
    print(
        f"  latency (idle, n={samples}): median {statistics.median(latencies):.1f} ms, "
        f"p90 {sorted(latencies)[int(0.9 * (samples - 1))]:.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        f"  throughput: {messages} customer messages → {messages} Slack cards in {elapsed:.2f} s"
        f" = {messages / elapsed:.1f} msg/s (customers finished sending after {sent:.2f} s)"
    )


async def _fresh_schema(url: str) -> tuple[str, str]:
    """A new PostgreSQL schema for this run, and the URL that uses it.

    The stand-ins number Telegram updates from 1 at every start, and the desk rightly drops an
    update id it has already seen, so each run needs tables of its own.
    """
    from sqlalchemy import text

    from storage.db import create_engine

    schema = f"bench_{secrets.token_hex(6)}"
    admin = create_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    return schema, f"{url}{'&' if '?' in url else '?'}search_path={schema}"


async def _drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import text

    from storage.db import create_engine

    admin = create_engine(url)
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


async def _run(messages: int, samples: int, database: str | None, channel: str) -> None:
    if database is None or not database.startswith("postgresql"):
        await run(messages, samples, database, channel)
        return
    schema, url = await _fresh_schema(database)
    try:
        await run(messages, samples, url, channel)
    finally:
        await _drop_schema(database, schema)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--latency-samples", type=int, default=40)
    p.add_argument("--database", default=None)
    p.add_argument("--channel", choices=["telegram", "whatsapp"], default="telegram")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_run(a.messages, a.latency_samples, a.database, a.channel))


if __name__ == "__main__":
    main()
