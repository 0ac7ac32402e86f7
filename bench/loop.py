"""How fast the loop turns customer messages into Slack posts, measured with the stand-ins.

    .venv/bin/python -m bench.loop [--messages 300] [--latency-samples 40] [--database URL]
        [--encrypted] (encryption at rest under a throwaway DESK_DATA_KEY)
        [--processes 1 2 3] (PostgreSQL: that many desk processes, each N in turn)
        [--model local] (classify with the local model; the priority rules alone by default)
        [--rules shipped] (rules.yaml as shipped: teams, agents, SLA clocks on business hours;
            by default one team and no SLA, the issue's bare loop)
        [--statements] (also count the SQL statements the burst costs a message, by kind)
        [--history 730] (a grown desk: that many days of sandbox.demo's made-up history, about
            13 tickets a day, and an inbox row for every event those tickets took in)
        [--json bench-results/loop.json] [--plot bench-results/loop.png]

Prints figures, each beside a reference measured in the same run on the same machine (the same
database doing nothing but one-row insert transactions, the floor under any desk built on it);
asserts nothing. The stand-ins' and the desk's rate limits are lifted, so this measures the desk
(webhook/poll → inbox → dispatcher → outbox → Slack), not the platforms' limits. ``--json``
writes every figure and sample; ``--plot`` draws the latency distribution and the cards posted
over time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import DeskApp, _make_classifier
from bot.base import heap
from bot.commands.sandbox import sandbox_settings
from bot.delivery.outbox import RateLimits
from bot.domain.rules import parse_rules
from sandbox import StandIns
from sandbox.demo import fill
from storage.crypto import Keyring, new_key
from storage.db import create_engine
from storage.inline_sqlite import InlineConnection
from storage.models import InboxRow, Message, TicketEvent

CHANNEL = "C0SUPPORT"
ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.loop")


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


async def _quiet(standins: StandIns, channel: str, i: int) -> None:
    """Let the desk go idle before the next latency sample: the customer has the
    acknowledgement too, and 50 ms pass (the sends' outcomes recorded, a WhatsApp message's
    statuses taken in). A sample sent the moment the card arrived raced the previous one's
    acknowledgement and outcomes: a busy desk, not an idle one."""
    if channel == "telegram":
        await standins.telegram.wait_for_sent(100_000 + i, 1)
    else:
        await standins.whatsapp.wait_for_sent(str(15_550_000_000 + i), 1)
    await asyncio.sleep(0.05)


@dataclass
class LoopResult:
    channel: str
    database: str
    messages: int
    latencies_ms: list[float] = field(default_factory=list)
    burst_seconds: float = 0.0
    sent_seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time during the burst (desk and stand-ins)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s since burst, cards)
    reference_inserts_per_s: float = 0.0  # one-row insert transactions, same database
    # The bare encoder's batched rate (batch 32) in the same run: issue 27's reference for the
    # loop with the rules alone (0 when not measured: --processes, or no model installed).
    reference_encoder_per_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""
    cpu_of: str = "this process's CPU time per message in the burst (desk and stand-ins; less"
    # With --statements: the statements the desk's engine ran in the burst, by first word.
    statements: dict[str, int] = field(default_factory=dict)
    rules: str = "minimal"  # or "shipped" (--rules)
    history_tickets: int = 0  # --history: the grown desk's tickets and inbox rows before the run
    history_inbox: int = 0

    @property
    def throughput(self) -> float:
        return self.messages / self.burst_seconds if self.burst_seconds else 0.0

    def median(self) -> float:
        return statistics.median(self.latencies_ms)

    def p90(self) -> float:
        return sorted(self.latencies_ms)[int(0.9 * (len(self.latencies_ms) - 1))]

    def summary(self) -> str:
        per_ticket = self.reference_inserts_per_s / self.throughput if self.throughput else 0
        return "\n".join(
            [
                f"loop benchmark: {self.channel} → Slack, database {self.database},"
                f" {self.rules} rules, rate limits lifted",
                *(
                    [
                        f"  a grown desk: {self.history_tickets} tickets of made-up history and"
                        f" {self.history_inbox} inbox rows before the run"
                    ]
                    if self.history_tickets
                    else []
                ),
                f"  latency (idle, n={len(self.latencies_ms)}): median {self.median():.1f} ms,"
                f" p90 {self.p90():.1f} ms, max {max(self.latencies_ms):.1f} ms",
                f"  throughput: {self.messages} customer messages → {self.messages} Slack cards"
                f" in {self.burst_seconds:.2f} s = {self.throughput:.1f} msg/s"
                f" (customers finished sending after {self.sent_seconds:.2f} s)",
                f"  CPU: {1000 * self.cpu_seconds / self.messages:.1f} ms of {self.cpu_of}"
                " sensitive to other work on the machine than the rate)",
                f"  reference: the same database alone does {self.reference_inserts_per_s:.0f}"
                f" one-row insert transactions/s, so a new ticket costs about"
                f" {per_ticket:.0f} of them",
                *([self.encoder_line()] if self.reference_encoder_per_s else []),
                *([self.statements_line()] if self.statements else []),
            ]
        )

    def encoder_line(self) -> str:
        ratio = self.throughput / self.reference_encoder_per_s
        return (
            f"  reference: the bare encoder embeds {self.reference_encoder_per_s:.0f} messages/s"
            f" in batches of 32 in this run; the loop turned {ratio:.2f} of that into cards"
        )

    def statements_line(self) -> str:
        each = ", ".join(f"{k} {v / self.messages:.2f}" for k, v in self.statements.items())
        total = sum(self.statements.values()) / self.messages
        return f"  statements: {total:.2f} a customer message in the burst ({each})"


async def reference_inserts(url: str, seconds: float = 2.0) -> float:
    """One-row insert transactions per second on this database, through the desk's own engine
    settings: the floor under anything built on it."""
    from storage.db import create_engine

    engine = create_engine(url)
    table = Table(
        f"bench_ref_{secrets.token_hex(4)}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("payload", String(200)),
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.create)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            async with engine.begin() as conn:
                await conn.execute(insert(table).values(payload="x" * 120))
            done += 1
        rate = done / (time.perf_counter() - t0)
        async with engine.begin() as conn:
            await conn.run_sync(table.drop)
        return rate
    finally:
        await engine.dispose()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def plot(result: LoopResult, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.hist(result.latencies_ms, bins=20, color="#4C78A8")
    left.axvline(result.median(), color="#E45756", label=f"median {result.median():.0f} ms")
    left.set_title(f"message → card, idle desk (n={len(result.latencies_ms)})")
    left.set_xlabel("ms")
    left.set_ylabel("messages")
    left.legend()
    if result.timeline:
        xs, ys = zip(*result.timeline, strict=True)
        right.plot(xs, ys, color="#4C78A8")
    right.set_title(f"{result.messages} at once: {result.throughput:.0f} msg/s")
    right.set_xlabel("seconds since the burst began")
    right.set_ylabel("cards in Slack")
    fig.suptitle(f"deskbot loop · {result.channel} → Slack · {result.database}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def _encoder_reference() -> float:
    """The bare encoder's batched rate, measured before the desk starts (0 without a model)."""
    try:
        from nlp.bench import bare_encoder_rate

        return bare_encoder_rate()
    except (ImportError, FileNotFoundError) as exc:  # a lean install: no encoder to measure
        log.warning("no encoder reference: %s", exc)
        return 0.0


async def _trace_sqlite(engine: AsyncEngine, counted: Counter[str]) -> sqlite3.Connection | None:
    """Count every statement SQLite runs on the desk's one connection, by first word, with
    sqlite3's trace (COMMIT included): the rows storage/rows.py writes on the driver itself
    pass no SQLAlchemy event. None when the desk's connection is not the inline one."""
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, InlineConnection):
        return None

    def trace(statement: str) -> None:
        counted[statement.split(None, 1)[0].upper()] += 1

    driver.raw.set_trace_callback(trace)
    return driver.raw


def shipped_rules_data() -> dict[str, Any]:
    """rules.yaml as shipped (its teams, agents, SLA policies and business hours), with the
    knowledge base and surges off: every customer gets a card of their own."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    data.setdefault("kb", {})["enabled"] = False
    data.setdefault("surges", {})["enabled"] = False
    return data


async def run(
    messages: int,
    samples: int,
    database: str | None,
    channel: str,
    encrypted: bool = False,
    model: str = "rules",
    statements: bool = False,
    rules_name: str = "minimal",
    history: int = 0,
) -> LoopResult:
    port = int(os.environ.get("BENCH_PORT", "18080"))
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    with tempfile.TemporaryDirectory() as tmp:
        db = database or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        reference = await reference_inserts(db)
        encoder = _encoder_reference()
        grown = await grow(db, history) if history else (0, 0)
        settings = sandbox_settings(standins, desk_port=port, database_url=db)
        if encrypted:  # encryption at rest under a throwaway key (docs/performance.md)
            keys = Keyring.of(new_key())
            settings = dataclasses.replace(settings, data_keys=keys)
        # With --model local, the desk classifies with the local model as ``deskbot run`` does
        # (DeskApp alone falls back to the rules, whatever DESK_MODEL says). Its vectors would
        # gather the bench's alike messages into an incident (one card for many customers), so
        # surges are off then: this counts one card per customer either way.
        if rules_name == "shipped":
            rules = parse_rules(shipped_rules_data())
        else:
            rules = parse_rules(
                {"version": 1, "surges": {"enabled": False}} if model == "local" else {"version": 1}
            )
        settings = dataclasses.replace(settings, model=model)
        desk = DeskApp(
            settings,
            rules,
            classifier=await _make_classifier(settings, rules),
            limits=RateLimits.lifted(),
        )
        await desk.start()
        heap.settle()  # as bot.app.serve does once the desk has started
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
                await _quiet(standins, channel, i)
            # Throughput: a burst from many customers at once.
            counted: Counter[str] = Counter()

            def count(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
                counted[statement.split(None, 1)[0].upper()] += 1

            traced = None  # SQLite's own connection, when its statements are counted there
            if statements and desk.engine is not None:
                traced = await _trace_sqlite(desk.engine, counted)
                if traced is None:
                    event.listen(desk.engine.sync_engine, "before_cursor_execute", count)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            await asyncio.gather(
                *(say(samples + i, f"burst-{i}- my order is late") for i in range(messages))
            )
            sent = time.perf_counter() - t0
            timeline: list[tuple[float, int]] = []

            def progress() -> bool:
                n = _cards_with(standins, "burst-")
                if not timeline or timeline[-1][1] != n:
                    timeline.append((round(time.perf_counter() - t0, 3), n))
                return n >= messages

            if not await standins.slack.wait_for(progress, 600):
                raise TimeoutError(f"only {_cards_with(standins, 'burst-')}/{messages} cards")
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            if traced is not None:
                traced.set_trace_callback(None)
            elif statements and desk.engine is not None:
                event.remove(desk.engine.sync_engine, "before_cursor_execute", count)
        finally:
            await desk.stop()
            await standins.stop()
    kind = desk.engine.dialect.name if desk.engine else "?"
    return LoopResult(
        channel=channel,
        database=kind,
        messages=messages,
        latencies_ms=[round(x, 2) for x in latencies],
        burst_seconds=elapsed,
        sent_seconds=sent,
        cpu_seconds=cpu,
        timeline=timeline,
        reference_inserts_per_s=reference,
        reference_encoder_per_s=encoder,
        machine=machine(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        statements=dict(counted.most_common()),
        rules=rules_name,
        history_tickets=grown[0],
        history_inbox=grown[1],
    )


async def grow(database: str, days: int) -> tuple[int, int]:
    """A desk that has been running: ``days`` of sandbox.demo's history, and a done inbox row
    for each of those tickets' messages and events (a desk keeps every event it took in).
    Returns (tickets, inbox rows) written."""
    tickets = await fill(database, date.today() - timedelta(days=1), days)
    engine = create_engine(database)
    try:
        async with engine.begin() as conn:
            events = int(
                (await conn.execute(select(func.count()).select_from(TicketEvent))).scalar_one()
            ) + int((await conn.execute(select(func.count()).select_from(Message))).scalar_one())
            now = datetime.now(UTC)
            for start in range(0, events, 1000):
                await conn.execute(
                    insert(InboxRow),
                    [
                        {
                            "channel": ("telegram", "whatsapp", "slack")[i % 3],
                            "external_id": f"history-{i}",
                            "conversation": f"history:{i // 5}",
                            "kind": "customer_message",
                            "payload": {},
                            "raw": {},
                            "status": "done",
                            "attempts": 1,
                            "received_at": now,
                            "processed_at": now,
                        }
                        for i in range(start, min(start + 1000, events))
                    ],
                )
    finally:
        await engine.dispose()
    return tickets, events


async def run_processes(
    messages: int, samples: int, database: str, processes: int, model: str = "rules"
) -> LoopResult:
    """The same loop with ``processes`` desk processes on one database (PostgreSQL): each is
    ``deskbot run`` with its limits lifted (``bench.load``'s desk child), customers write on
    WhatsApp, whose webhooks reach the first process, and every process's dispatcher and
    outbox take their share of the shared inbox and outbox (``SKIP LOCKED`` claims). The CPU
    figure is the desk processes' (the stand-ins run here)."""
    from bench.load import Desk, cpu_seconds, desk_env, free_port

    port = free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    desks: list[Desk] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            rules = folder / "rules.yaml"
            rules.write_text("version: 1\n", encoding="utf-8")  # as run() has it
            reference = await reference_inserts(database)
            for n in range(processes):
                env = desk_env(standins, database, port if n == 0 else free_port(), rules, model)
                desks.append(Desk(env, folder / f"desk-{n}.log", lifted=True))
                await desks[-1].start()  # one at a time: the first migrates the schema

            async def say(i: int, text: str) -> None:
                await standins.whatsapp.customer_says(str(15_550_000_000 + i), text)

            latencies = []
            for i in range(samples):
                marker = f"latency-{i}-"
                t0 = time.perf_counter()
                await say(i, f"{marker} where is my parcel?")
                await _wait_cards(standins, marker, 1, 30)
                latencies.append((time.perf_counter() - t0) * 1000)
                await _quiet(standins, "whatsapp", i)
            pids = [d.process.pid for d in desks if d.process is not None]
            cpu0 = sum(cpu_seconds(pid) for pid in pids)
            t0 = time.perf_counter()
            await asyncio.gather(
                *(say(samples + i, f"burst-{i}- my order is late") for i in range(messages))
            )
            sent = time.perf_counter() - t0
            timeline: list[tuple[float, int]] = []

            def progress() -> bool:
                n = _cards_with(standins, "burst-")
                if not timeline or timeline[-1][1] != n:
                    timeline.append((round(time.perf_counter() - t0, 3), n))
                return n >= messages

            if not await standins.slack.wait_for(progress, 600):
                raise TimeoutError(f"only {_cards_with(standins, 'burst-')}/{messages} cards")
            elapsed = time.perf_counter() - t0
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
            problems = [d.log_problems() for d in desks]
    finally:
        for d in desks:
            await d.stop()
        await standins.stop()
    if any(errors or tracebacks for errors, tracebacks in problems):
        log.warning("desk logs: (ERROR lines, tracebacks) per process %s", problems)
    return LoopResult(
        channel="whatsapp",
        database=f"postgresql, {processes} process{'es' if processes > 1 else ''}",
        messages=messages,
        latencies_ms=[round(x, 2) for x in latencies],
        burst_seconds=elapsed,
        sent_seconds=sent,
        cpu_seconds=cpu,
        timeline=timeline,
        reference_inserts_per_s=reference,
        machine=machine(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        cpu_of="the desk processes' CPU time per message in the burst, together (less",
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


async def _run(
    messages: int,
    samples: int,
    database: str | None,
    channel: str,
    encrypted: bool,
    processes: int = 0,
    model: str = "rules",
    statements: bool = False,
    rules_name: str = "minimal",
    history: int = 0,
) -> LoopResult:
    if database is None or not database.startswith("postgresql"):
        return await run(
            messages, samples, database, channel, encrypted, model, statements, rules_name, history
        )
    schema, url = await _fresh_schema(database)
    try:
        if processes:
            return await run_processes(messages, samples, url, processes, model)
        return await run(
            messages, samples, url, channel, encrypted, model, statements, rules_name, history
        )
    finally:
        await _drop_schema(database, schema)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--latency-samples", type=int, default=40)
    p.add_argument("--database", default=None)
    p.add_argument("--channel", choices=["telegram", "whatsapp"], default="telegram")
    p.add_argument("--encrypted", action="store_true", help="with DESK_DATA_KEY (a new key)")
    p.add_argument("--json", type=Path, default=None, help="write every figure and sample here")
    p.add_argument("--plot", type=Path, default=None, help="draw the figures into this PNG")
    p.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=None,
        help="PostgreSQL: run N desk processes (deskbot run, limits lifted) on WhatsApp, for"
        " each N given (e.g. --processes 1 2 3)",
    )
    p.add_argument(
        "--model",
        choices=["rules", "local"],
        default="rules",
        help="classify with the priority rules alone (the default) or the local model",
    )
    p.add_argument(
        "--statements",
        action="store_true",
        help="count the SQL statements the burst costs a customer message, by kind (one"
        " process; a listener on the desk's engine, the reference's own left out)",
    )
    p.add_argument(
        "--rules",
        choices=["minimal", "shipped"],
        default="minimal",
        help="one team and no SLA (the default), or rules.yaml as shipped: its teams, agents"
        " and SLA clocks (knowledge base and surges off)",
    )
    p.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="DAYS",
        help="a grown desk: DAYS of sandbox.demo's made-up history (about 13 tickets a day)"
        " and an inbox row for each event it took in, written before the run",
    )
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.processes and not (a.database or "").startswith("postgresql"):
        p.error("--processes needs --database postgresql+asyncpg://…")
    counts = a.processes or [0]
    for n in counts:
        result = asyncio.run(
            _run(
                a.messages,
                a.latency_samples,
                a.database,
                a.channel,
                a.encrypted,
                n,
                a.model,
                a.statements,
                a.rules,
                a.history,
            )
        )
        print(result.summary())
        print(f"  load average {tuple(round(x, 2) for x in os.getloadavg())}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "median_ms": result.median(),
            "p90_ms": result.p90(),
            "throughput_msg_s": result.throughput,
        }
        a.json.write_text(json.dumps({**asdict(result), **figures}, indent=2) + "\n")
        print(f"  wrote {a.json}")
    if a.plot is not None:
        plot(result, a.plot)
        print(f"  wrote {a.plot}")


if __name__ == "__main__":
    main()
