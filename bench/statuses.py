"""What a WhatsApp ``statuses`` webhook costs the dispatcher, measured.

    .venv/bin/python -m bench.statuses [--statuses 1000] [--database URL]

Every message the desk sends on WhatsApp (acknowledgements, prompts, agents' replies) comes back
as one to three status webhooks (sent, delivered, read), each an inbox row and a dispatcher
step: under sustained load they are most of the desk's events. This writes ``--statuses``
status events into the inbox of a fresh database, then lets the desk's own dispatcher (the
shipped rules) take them all, twice: about sends the desk knows (an outbox row with the wamid
and no ticket message: acknowledgements, the usual case) and about wamids it never sent.
Prints the CPU time a status cost and the rate; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.loop import _drop_schema, _fresh_schema
from bot import wiring
from bot.base.clock import SystemClock
from bot.delivery.dispatcher import DbInbox
from bot.domain.classifier import RulesClassifier
from bot.domain.events import DeliveryStatus
from bot.domain.rules import load_rules
from storage.db import create_engine, migrate, session_factory
from storage.models import OutboxRow

ROOT = Path(__file__).resolve().parent.parent


async def measure(url: str, statuses: int, known: bool) -> tuple[float, float]:
    """(ms of CPU a status, statuses a second) for ``statuses`` events on a fresh database."""
    engine = create_engine(url)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        clock = SystemClock()
        rules = load_rules(ROOT / "rules.yaml")
        inbox = DbInbox(sessions, clock)
        dispatcher = wiring.dispatcher(
            sessions, wiring.desks(rules), RulesClassifier(rules.priority), clock, inbox
        )
        now = clock.now()
        if known:  # the desk's acknowledgements, sent: a row each with its wamid, no message
            async with sessions.begin() as s:
                s.add_all(
                    OutboxRow(
                        idempotency_key=f"bench:{i}",
                        channel="whatsapp",
                        destination_key=f"whatsapp:{15550000000 + i}",
                        payload={"kind": "text", "channel": "whatsapp"},
                        status="sent",
                        rank=5,
                        attempts=1,
                        next_attempt_at=now,
                        created_at=now,
                        sent_at=now,
                        platform_message_id=f"wamid.bench{i}",
                    )
                    for i in range(statuses)
                )
        for i in range(statuses):  # one webhook each, as WhatsApp sends them
            status = DeliveryStatus(
                channel="whatsapp",
                external_id=f"wamid.bench{i}:delivered",
                conversation=f"whatsapp:{15550000000 + i % 50}",
                platform_message_id=f"wamid.bench{i}",
                status="delivered",
            )
            await inbox.accept([status], {})
        cpu, wall, done = time.process_time(), time.perf_counter(), 0
        while taken := await dispatcher.run_once():
            done += taken
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert done == statuses, f"the dispatcher took {done} of {statuses}"
        return 1000 * cpu / statuses, statuses / wall
    finally:
        await engine.dispose()


async def run(statuses: int, database: str | None) -> None:
    for known, what in ((True, "about sends the desk knows"), (False, "about unknown wamids")):
        with tempfile.TemporaryDirectory() as tmp:
            schema = None
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            if database is not None:
                schema, url = await _fresh_schema(database)
            try:
                ms, rate = await measure(url, statuses, known)
            finally:
                if database is not None and schema is not None:
                    await _drop_schema(database, schema)
        kind = "postgresql" if database else "sqlite"
        print(f"  {statuses} statuses {what} ({kind}): {ms:.2f} ms CPU each, {rate:.0f}/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--statuses", type=int, default=1000)
    p.add_argument("--database", default=None, help="a PostgreSQL URL (default SQLite)")
    a = p.parse_args()
    asyncio.run(run(a.statuses, a.database))


if __name__ == "__main__":
    main()
