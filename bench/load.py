"""Sustained load and a burst under the platforms' real limits, against a real desk process.

    python -m bench.load sustained [--rate 50] [--seconds 300] [--model local|rules]
        [--database URL] [--json FILE] [--plot FILE.png]
    python -m bench.load burst [--tickets 300] [--model rules|local] [--database URL]
        [--json FILE]

Both start the loopback stand-ins of WhatsApp and Slack in this process and one desk as a child
process pointed at them from the environment, as a deployment would (SQLite in a temporary
folder by default; ``--database`` names a PostgreSQL server, where the run makes and drops a
schema of its own). Customers write through the WhatsApp stand-in: each message is a webhook
delivery signed with the app secret (``X-Hub-Signature-256``), exactly as the stand-in (and
Meta) deliver it, and the desk's replies come back as signed ``statuses`` webhooks too.

The rules are the shipped ``rules.yaml`` with two changes, written to a temporary folder: the
knowledge base and surge grouping are off, so that every first message of a customer is one
ticket with its own card (an answer from an article, or an incident card, would make "nothing
lost" unaccountable). Routing, priorities, SLA timers and assignment stay as shipped.

**sustained** measures the issue's acknowledgement target: the time the desk's webhook takes to
answer the platform's HTTP delivery while ``--rate`` customer messages a second are offered for
``--seconds``. The offer is open loop: message *i* is due at ``start + i / rate`` and is sent
then whether or not earlier ones were answered, and its latency is counted from when it was
due, so a desk (or harness) that stalls cannot hide the stall by delaying the next request
(coordinated omission). About one message in five is a repeat from an earlier customer (it goes
to their ticket's thread); the rest come from new customers. At the end it waits until the
desk is quiet and checks in Slack that every first message is in exactly one card and every
repeat in that card's thread.

The platforms' limits are lifted in this mode, in the stand-ins and in the desk: with Slack's
real pace (about one post a second per channel) 50 new tickets a second cannot become 50 cards
a second, the outbox would only grow for hours, and "nothing lost" could not be checked at the
end of the run. The issue's targets are stated "with the stand-ins' limits lifted" for the same
reason; the real limits are what ``burst`` measures. ``deskbot run`` has no setting to lift its
own limits, so the child is ``python -m bench.load desk-child``: ``deskbot run`` (bot.cli) with
one substitution, ``RateLimits.lifted()`` given to the desk. The summary says so.

**burst** keeps the stand-ins' real limits on (Slack chat.postMessage about one a second per
channel with a burst of 10, chat.update 50 a minute, WhatsApp 80 a second) and runs the real
``deskbot run`` with its own limits. ``--tickets`` new customers write at once, spread over the
four teams of ``rules.yaml`` (support; billing by keyword; zh by Chinese text; vip by a list of
customers written into the temporary rules). Per channel it records when each post arrived and
gives: posts, posts a second after the burst allowance, and utilisation = posts / what Slack
allowed over the channel's span (10 + 1/s × seconds from its first post to its last); overall
utilisation is the sum of posts over the sum of allowances. It also counts the 429s the desk's
own pace caused (``StandIns.paced_refusals``), the gaps between posts, and tickets without a
card (lost; must be 0). The target is ≥ 95% of the allowed rate and no 429.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import platform
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sandbox import StandIns
from sandbox._common import Deliverer
from sandbox.ports import free_port as free_port
from storage.db import create_engine
from storage.intake import Spool

ROOT = Path(__file__).resolve().parents[1]
# The Slack stand-in's chat.postMessage bucket (sandbox/slack.py): 1 a second per channel, 10 at
# once; Slack documents "about one message a second per channel" with short bursts.
SLACK_PER_SECOND = 1.0
SLACK_BURST = 10
MARK = re.compile(r"ref L(\d{6})Q")
FIRST = [
    "My order never arrived and nobody answers my emails",
    "How do I change the delivery address of my order?",
    "I was charged twice this month, please refund one",
    "The app crashes every time I open my basket",
    "Can I return the shoes I bought last week?",
    "Mi pedido no ha llegado y nadie responde",
    "Where can I download my receipt for the last purchase?",
    "The courier left my parcel at the wrong house",
    "I am really angry, this is the third time the delivery is late!",
    "我的订单三天了还没到",
]
AGAIN = [
    "Any news on this?",
    "Hello? Still waiting for an answer",
    "I also forgot to say: the order number is on the receipt",
]
# burst: one kind of message per team of rules.yaml (routing by keyword, language and VIP).
TEAM_TEXTS = {
    "C0SUPPORT": "My parcel is late, can you check where it is?",
    "C0BILLING": "I need an invoice for my last purchase",
    "C0ZH": "我的包裹还没有到，请帮我查一下",
    "C0VIP": "Please call me back about my order",
}
TEAM_SHARE = {"C0SUPPORT": 0.40, "C0BILLING": 0.25, "C0ZH": 0.20, "C0VIP": 0.15}


# -- the pieces both modes use ----------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def memory_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) / 1024
    return round(found["VmRSS"], 1), round(found["VmHWM"], 1)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far (/proc/PID/stat)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def write_rules(folder: Path, vip: list[str]) -> Path:
    """rules.yaml as shipped, with the knowledge base and surges off and ``vip`` customers."""
    from bench.loop import shipped_rules_data

    rules = shipped_rules_data()
    rules.setdefault("priority", {}).setdefault("vip", {})["customers"] = [
        f"whatsapp:{number}" for number in vip
    ]
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class Attempt:
    started: float
    answered: float
    status: int


class TimedDeliverer(Deliverer):
    """The stand-in's own webhook deliverer, timing every attempt (first tries and retries).

    Customer messages are keyed by their wamid; the desk's ``statuses`` webhooks are counted.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self.messages: dict[str, Attempt] = {}  # wamid → its first attempt
        self.retried = 0
        self.status_webhooks: Counter[int] = Counter()
        self.status_ms: list[float] = []

    async def attempt(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        started = time.monotonic()
        status, text = await super().attempt(url, body, headers)
        answered = time.monotonic()
        value = json.loads(body)["entry"][0]["changes"][0]["value"]
        if "messages" in value:
            wamid = str(value["messages"][0]["id"])
            if wamid in self.messages:
                self.retried += 1
            else:
                self.messages[wamid] = Attempt(started, answered, status)
        else:
            self.status_webhooks[status] += 1
            self.status_ms.append((answered - started) * 1000)
        return status, text


class Desk:
    """One desk process: ``deskbot run``, or with its limits lifted (``desk-child``)."""

    def __init__(self, env: dict[str, str], log: Path, *, lifted: bool) -> None:
        self.env = env
        self.log = log
        self.lifted = lifted
        self.port = int(env["DESK_HTTP_PORT"])
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 240) -> float:
        """Start it and wait until /healthz answers 200; returns the seconds that took."""
        args = ["-m", "bench.load", "desk-child"] if self.lifted else ["-m", "bot.cli", "run"]
        out = self.log.open("ab")
        started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=self.env, cwd=str(ROOT), stdout=out, stderr=out
        )
        out.close()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"the desk exited with {self.process.returncode}:\n{self.tail()}"
                    )
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"the desk did not start in {timeout:.0f} s:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200:
                            return time.monotonic() - started
                await asyncio.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_problems(self) -> tuple[int, int]:
        """ERROR lines and tracebacks in the desk's log."""
        text = ""
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace")
        return (
            sum(" ERROR " in line for line in text.splitlines()),
            text.count("Traceback (most recent call last)"),
        )

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def desk_env(
    standins: StandIns, database_url: str, port: int, rules: Path, model: str
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "DESK_DATABASE_URL": database_url,
        "DESK_HTTP_PORT": str(port),
        "DESK_RULES": str(rules),
        "DESK_MODEL": model,
        "DESK_LOG_LEVEL": "WARNING",
        "WHATSAPP_ACCESS_TOKEN": standins.whatsapp_access_token,
        "WHATSAPP_PHONE_NUMBER_ID": standins.whatsapp_phone_number_id,
        "WHATSAPP_APP_SECRET": standins.whatsapp_app_secret,
        "WHATSAPP_VERIFY_TOKEN": "load-verify",
        "WHATSAPP_API_BASE": standins.whatsapp_api_base,
        "SLACK_BOT_TOKEN": standins.slack_bot_token,
        "SLACK_SIGNING_SECRET": standins.slack_signing_secret,
        "SLACK_API_BASE": standins.slack_api_base,
    }


class Backlog:
    """What the desk has still to do, read from its database without getting in its way: on
    SQLite a plain reader (WAL lets it read beside the desk's writer, where the desk's own
    engine would take the write lock), on PostgreSQL a pooled connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Any = None

    def _sqlite_counts(self, path: str) -> tuple[int, int]:
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("PRAGMA busy_timeout=5000")
        inbox = self._sqlite.execute(
            "SELECT count(*) FROM inbox WHERE status IN ('pending', 'processing')"
        ).fetchone()[0]
        # And the intake spool's (storage/intake.py): events answered for, not yet moved.
        spool = Spool.path_beside(Path(path))
        if spool.exists():
            with contextlib.closing(sqlite3.connect(spool)) as intake:
                inbox += intake.execute("SELECT count(*) FROM intake").fetchone()[0]
        outbox = self._sqlite.execute(
            "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
        ).fetchone()[0]
        return int(inbox), int(outbox)

    async def counts(self) -> tuple[int, int]:
        """(inbox rows not yet processed, outbox rows not yet sent)."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            return await asyncio.to_thread(self._sqlite_counts, str(parsed.database))
        if self._engine is None:
            self._engine = create_engine(self.url, pool_size=1, max_overflow=0)
        async with self._engine.connect() as conn:
            inbox = await conn.scalar(
                text("SELECT count(*) FROM inbox WHERE status IN ('pending', 'processing')")
            )
            outbox = await conn.scalar(
                text("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')")
            )
        return int(inbox or 0), int(outbox or 0)

    async def quiet(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a busy database: ask again
                if await self.counts() == (0, 0):
                    return True
            await asyncio.sleep(0.5)
        return False

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._engine is not None:
            await self._engine.dispose()


class PostClock:
    """When each Slack post arrived, per channel: woken by the stand-in on every change."""

    def __init__(self, standins: StandIns, t0: float) -> None:
        self.slack = standins.slack
        self.t0 = t0
        self.times: dict[str, list[float]] = {}
        self._task: asyncio.Future[bool] | None = None

    def _record(self) -> bool:
        now = time.monotonic() - self.t0
        for channel, posted in self.slack.channels.items():
            seen = self.times.setdefault(channel, [])
            if len(posted) > len(seen):
                seen.extend([round(now, 3)] * (len(posted) - len(seen)))
        return False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.slack.wait_for(self._record, 86_400))

    async def stop(self) -> None:
        self._record()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def fresh_database(url: str | None, folder: Path) -> tuple[str, str | None]:
    """The URL the desk uses, and the PostgreSQL schema to drop afterwards (None for SQLite)."""
    if url is None:
        return f"sqlite+aiosqlite:///{folder / 'desk.db'}", None
    if not url.startswith("postgresql"):
        return url, None
    from bench.loop import _fresh_schema

    schema, with_schema = await _fresh_schema(url)
    return with_schema, schema


async def _shut_down(
    desk: Desk, backlog: Backlog, standins: StandIns, database: str | None, schema: str | None
) -> tuple[int, int]:
    """Stop everything a run started; the desk log's ERROR lines and tracebacks."""
    await desk.stop()
    problems = desk.log_problems()
    await backlog.close()
    await standins.stop()
    await drop_database(database, schema)
    return problems


async def drop_database(url: str | None, schema: str | None) -> None:
    if url is not None and schema is not None:
        from bench.loop import _drop_schema

        await _drop_schema(url, schema)


def slack_accounting(
    standins: StandIns, customer_of: dict[int, int]
) -> tuple[int, int, int, int, int]:
    """One pass over Slack: (cards, messages in their card's thread, customers without a card,
    messages lost, messages shown twice). ``customer_of``: message → its customer.

    A customer's card is the card that shows one of the customer's messages; each of the
    customer's messages must be shown once, in that card or in its thread. Which message opens
    the card is the one that reached the desk first: two webhooks of one customer sent 50 ms
    apart may arrive in either order (WhatsApp promises no order, and its timestamps are whole
    seconds), so the harness does not insist it is the one sent first."""
    card_of: dict[int, tuple[str, str]] = {}  # customer → (channel, card ts)
    shown: Counter[tuple[int, str, str]] = Counter()  # (message, channel, card ts)
    threaded: set[tuple[int, str, str]] = set()
    cards = 0
    for channel, posted in standins.slack.channels.items():
        for m in posted:
            thread = m.get("thread_ts")
            if thread is None or thread == m["ts"]:
                if not m.get("blocks"):
                    continue
                cards += 1
                blob = json.dumps(m["blocks"], ensure_ascii=False) + str(m.get("text", ""))
                for k in set(int(x) for x in MARK.findall(blob)):
                    if k in customer_of:
                        card_of.setdefault(customer_of[k], (channel, m["ts"]))
                        shown[(k, channel, m["ts"])] += 1
            else:
                for k in MARK.findall(str(m.get("text", ""))):
                    shown[(int(k), channel, str(thread))] += 1
                    threaded.add((int(k), channel, str(thread)))
    customers = set(customer_of.values())
    without_card = sum(1 for c in customers if c not in card_of)
    in_thread = lost = 0
    for k, c in customer_of.items():
        where = card_of.get(c)
        if where is None or shown[(k, *where)] == 0:
            lost += 1
        elif (k, *where) in threaded:
            in_thread += 1
    doubled = sum(1 for n in shown.values() if n > 1)
    return cards, in_thread, without_card, lost, doubled


# -- sustained --------------------------------------------------------------------------------


@dataclass
class SustainedResult:
    rate: float
    seconds: float
    model: str
    database: str
    offered: int = 0
    customers: int = 0
    follow_ups: int = 0
    # Per customer message, in the order they were due: seconds after the start it was due,
    # acknowledgement latency (due → the desk's answer), the HTTP time alone, its status.
    due_s: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    retried: int = 0
    status_webhooks: dict[int, int] = field(default_factory=dict)
    status_p99_ms: float = 0.0
    sent_rate: float = 0.0
    lag_p99_ms: float = 0.0  # harness: due → the request started
    cards: int = 0
    in_threads: int = 0
    without_card: int = 0  # customers none of whose messages opened a card
    lost: int = 0  # messages shown neither in their customer's card nor in its thread
    doubled: int = 0
    quiet_after_s: float | None = None
    backlog: list[tuple[float, int, int, float]] = field(default_factory=list)  # t, in, out, rss
    cards_over_time: list[tuple[float, int]] = field(default_factory=list)
    rss_mb: float = 0.0
    peak_mb: float = 0.0
    desk_cpu_s: float = 0.0  # the desk's CPU time from the first message due to quiet
    wall_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_during: list[tuple[float, float]] = field(default_factory=list)  # t, 1-min load
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    desk_ready_s: float = 0.0
    desk_errors: int = 0
    desk_tracebacks: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""

    def figures(self) -> dict[str, Any]:
        non_2xx = sum(n for s, n in self.statuses.items() if not 200 <= s < 300)
        return {
            "ack_p50_ms": round(percentile(self.ack_ms, 0.50), 2),
            "ack_p90_ms": round(percentile(self.ack_ms, 0.90), 2),
            "ack_p99_ms": round(percentile(self.ack_ms, 0.99), 2),
            "ack_max_ms": round(max(self.ack_ms, default=0.0), 2),
            "http_p50_ms": round(percentile(self.http_ms, 0.50), 2),
            "http_p99_ms": round(percentile(self.http_ms, 0.99), 2),
            "non_2xx": non_2xx,
            "offered_rate": self.rate,
            "sent_rate": round(self.sent_rate, 2),
            "lost": self.lost,
            "target_ack_p99_ms": 20.0,
            "target_met": percentile(self.ack_ms, 0.99) <= 20.0,
        }

    def summary(self) -> str:
        f = self.figures()
        inbox_max = max(self.backlog, key=lambda b: b[1], default=(0.0, 0, 0, 0.0))
        outbox_max = max(self.backlog, key=lambda b: b[2], default=(0.0, 0, 0, 0.0))
        quiet = "never" if self.quiet_after_s is None else f"{self.quiet_after_s:.1f} s"
        lines = [
            f"load sustained: {self.offered} customer messages offered at {self.rate:g}/s for"
            f" {self.seconds:g} s (WhatsApp webhooks, open loop), model {self.model},"
            f" database {self.database}",
            "  limits lifted: the Slack and WhatsApp stand-ins' and the desk's own"
            " (bench.load desk-child = deskbot run with RateLimits.lifted())",
            f"  acknowledgement (due → the desk's HTTP answer): p50 {f['ack_p50_ms']:.1f} ms,"
            f" p90 {f['ack_p90_ms']:.1f} ms, p99 {f['ack_p99_ms']:.1f} ms,"
            f" max {f['ack_max_ms']:.1f} ms; target p99 ≤ 20 ms:"
            f" {'met' if f['target_met'] else 'NOT met'}",
            f"  the HTTP exchange alone: p50 {f['http_p50_ms']:.1f} ms,"
            f" p99 {f['http_p99_ms']:.1f} ms; harness lag (due → sent) p99"
            f" {self.lag_p99_ms:.1f} ms",
            f"  statuses: {dict(sorted(self.statuses.items()))}; non-2xx {f['non_2xx']};"
            f" retried by the stand-in {self.retried}; the desk's own statuses webhooks"
            f" {dict(sorted(self.status_webhooks.items()))} (p99 {self.status_p99_ms:.1f} ms)",
            f"  offered {self.rate:g}/s, sent {self.sent_rate:.1f}/s",
            f"  Slack: {self.cards} cards for {self.customers} customers, {self.in_threads} of"
            f" {self.follow_ups} repeat messages in their card's thread;"
            f" {'lost' if self.quiet_after_s is not None else 'not in Slack (desk busy)'}"
            f" {self.lost}, shown twice {self.doubled};"
            f" desk quiet {quiet} after the last message was due",
            f"  desk backlog: inbox max {inbox_max[1]} at {inbox_max[0]:.0f} s, outbox max"
            f" {outbox_max[2]} at {outbox_max[0]:.0f} s"
            f" (end: {self.backlog[-1][1] if self.backlog else 0},"
            f" {self.backlog[-1][2] if self.backlog else 0})",
            f"  desk process: CPU {self.desk_cpu_s:.0f} s in {self.wall_s:.0f} s"
            f" ({self.desk_cpu_s / self.wall_s if self.wall_s else 0:.0%} of a core);"
            f" RSS {self.rss_mb:.0f} MB at the end, peak {self.peak_mb:.0f} MB;"
            f" ready in {self.desk_ready_s:.1f} s; log: {self.desk_errors} ERROR lines,"
            f" {self.desk_tracebacks} tracebacks",
            f"  load average: before {self.load_before}, max 1-min during"
            f" {max((x[1] for x in self.load_during), default=0.0):.2f}, after {self.load_after}"
            f" ({self.machine.get('cpus')} CPUs)",
        ]
        return "\n".join(lines)


async def sustained(
    *,
    rate: float = 50.0,
    seconds: float = 300.0,
    model: str = "local",
    database: str | None = None,
    repeat_share: float = 0.2,
    seed: int = 1,
    drain_timeout: float = 1800.0,
    log_dir: Path | None = None,
) -> SustainedResult:
    rng = random.Random(seed)
    port = free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    timed = TimedDeliverer(timeout=10)
    standins.whatsapp._deliverer = timed  # the stand-in's deliverer, timed
    result = SustainedResult(rate, seconds, model, "sqlite", machine=machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, schema = await fresh_database(database, folder)
        result.database = "postgresql" if url.startswith("postgresql") else "sqlite"
        await standins.start()
        rules = write_rules(folder, vip=[])
        desk = Desk(
            desk_env(standins, url, port, rules, model),
            (log_dir or folder) / "desk.log",
            lifted=True,
        )
        backlog = Backlog(url)
        try:
            result.load_before = loadavg()
            result.desk_ready_s = await desk.start()
            assert desk.process is not None
            # Warm up: the first messages load the model's sessions; not measured.
            for i in range(3):
                await standins.whatsapp.customer_says(f"1444000{i:04d}", f"warm-up {i}")
            await standins.whatsapp.wait_for_sent("14440000002", 1, 120)

            total = int(rate * seconds)
            customer_of: dict[int, int] = {}  # message → its customer
            customers = 0
            plan: list[tuple[str, str]] = []
            for i in range(total):
                if customers and rng.random() < repeat_share:
                    c = rng.randrange(customers)
                    text = f"{AGAIN[i % len(AGAIN)]} ref L{i:06d}Q"
                else:
                    c, customers = customers, customers + 1
                    text = f"{FIRST[i % len(FIRST)]} ref L{i:06d}Q"
                customer_of[i] = c
                plan.append((f"1555{c:07d}", text))
            result.offered, result.customers = total, customers
            result.follow_ups = total - customers

            await backlog.counts()  # connected before the clock starts
            cpu0 = cpu_seconds(desk.process.pid)
            t0 = time.monotonic()
            stop_sampling = asyncio.Event()

            async def sample() -> None:
                while not stop_sampling.is_set():
                    t = round(time.monotonic() - t0, 1)
                    with contextlib.suppress(Exception):
                        inbox, outbox = await backlog.counts()
                        rss, _ = memory_mb(desk.process.pid) if desk.process else (0.0, 0.0)
                        result.backlog.append((t, inbox, outbox, rss))
                    result.load_during.append((t, round(os.getloadavg()[0], 2)))
                    cards = sum(
                        1
                        for posted in standins.slack.channels.values()
                        for m in posted
                        if m.get("blocks") and m.get("thread_ts") in (None, m["ts"])
                    )
                    result.cards_over_time.append((t, cards))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop_sampling.wait(), 1.0)

            sampler = asyncio.ensure_future(sample())
            sent_at: list[float] = [0.0] * total
            wamids: list[str] = [""] * total
            answered: list[float] = [0.0] * total
            tasks: set[asyncio.Task[None]] = set()

            async def send(i: int, due: float) -> None:
                sent_at[i] = time.monotonic()
                wa_id, text = plan[i]
                wamids[i] = await standins.whatsapp.customer_says(wa_id, text, name=f"C{wa_id}")
                answered[i] = time.monotonic()

            for i in range(total):
                due = t0 + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(send(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
            last_due = t0 + (total - 1) / rate
            span = sent_at[-1] - sent_at[0] if total > 1 else 0.0
            result.sent_rate = (total - 1) / span if span > 0 else 0.0
            for i in range(total):
                due = t0 + i / rate
                result.due_s.append(round(due - t0, 4))
                result.ack_ms.append(round((answered[i] - due) * 1000, 3))
                attempt = timed.messages.get(wamids[i])
                status = attempt.status if attempt is not None else 0
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if attempt is not None:
                    result.http_ms.append(round((attempt.answered - attempt.started) * 1000, 3))
            result.lag_p99_ms = percentile(
                [(sent_at[i] - (t0 + i / rate)) * 1000 for i in range(total)], 0.99
            )
            if await backlog.quiet(drain_timeout):
                result.quiet_after_s = round(time.monotonic() - last_due, 1)
            result.desk_cpu_s = round(cpu_seconds(desk.process.pid) - cpu0, 1)
            result.wall_s = round(time.monotonic() - t0, 1)
            await asyncio.sleep(1.0)  # the last statuses webhooks
            stop_sampling.set()
            await sampler
            result.retried = timed.retried
            result.status_webhooks = dict(timed.status_webhooks)
            result.status_p99_ms = round(percentile(timed.status_ms, 0.99), 2)
            (
                result.cards,
                result.in_threads,
                result.without_card,
                result.lost,
                result.doubled,
            ) = slack_accounting(standins, customer_of)
            result.cards -= 3  # the warm-up customers' cards
            result.rss_mb, result.peak_mb = memory_mb(desk.process.pid)
            result.load_after = loadavg()
        finally:
            result.desk_errors, result.desk_tracebacks = await _shut_down(
                desk, backlog, standins, database, schema
            )
    result.measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def plot_sustained(result: SustainedResult, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), dpi=100)
    FigureCanvasAgg(fig)
    over_time, spread, backlog = fig.subplots(1, 3)
    over_time.scatter(result.due_s, result.ack_ms, s=2, color="#4C78A8", alpha=0.5)
    over_time.axhline(20, color="#E45756", linestyle="--", label="target p99 20 ms")
    over_time.set_yscale("log")
    over_time.set_title("acknowledgement latency of each message")
    over_time.set_xlabel("seconds since the first message was due")
    over_time.set_ylabel("ms (log)")
    over_time.legend(loc="upper right")
    figures = result.figures()
    spread.hist(result.ack_ms, bins=60, color="#4C78A8")
    spread.set_yscale("log")
    for key, color in (("ack_p50_ms", "#54A24B"), ("ack_p99_ms", "#E45756")):
        spread.axvline(figures[key], color=color, label=f"{key[4:7]} {figures[key]:.1f} ms")
    spread.set_title(f"distribution (n={len(result.ack_ms)})")
    spread.set_xlabel("ms")
    spread.set_ylabel("messages (log)")
    spread.legend()
    if result.backlog:
        ts = [b[0] for b in result.backlog]
        backlog.plot(ts, [b[1] for b in result.backlog], label="inbox not processed")
        backlog.plot(ts, [b[2] for b in result.backlog], label="outbox not sent")
    backlog.set_title("the desk's backlog")
    backlog.set_xlabel("seconds")
    backlog.set_ylabel("rows")
    backlog.legend()
    fig.suptitle(
        f"deskbot sustained load · {result.rate:g} msg/s for {result.seconds:g} s · model"
        f" {result.model} · {result.database} · {result.measured_at}"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


# -- burst ------------------------------------------------------------------------------------


@dataclass
class ChannelPace:
    channel: str
    posts: int
    first_s: float
    last_s: float
    allowed: float
    utilisation: float
    steady_per_s: float | None  # posts after Slack's burst allowance, a second
    gaps_over_1_5s: int
    gap_p90_s: float
    gap_max_s: float
    refused_429: int


@dataclass
class BurstResult:
    tickets: int
    model: str
    database: str
    channels: list[ChannelPace] = field(default_factory=list)
    utilisation: float = 0.0
    cards: int = 0
    lost: int = 0
    doubled: int = 0
    paced_429s: dict[str, int] = field(default_factory=dict)
    updates: int = 0
    intake_s: float = 0.0
    all_carded_s: float | None = None
    quiet_s: float | None = None
    post_times: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: float = 0.0
    desk_cpu_s: float = 0.0  # the desk's CPU time from the burst to quiet
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    desk_errors: int = 0
    desk_tracebacks: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not any(self.paced_429s.values()) and self.utilisation >= 0.95

    def summary(self) -> str:
        def secs(v: float | None) -> str:
            return "not reached" if v is None else f"{v:.1f} s"

        lines = [
            f"load burst: {self.tickets} new tickets at once (WhatsApp), model {self.model},"
            f" database {self.database}; the stand-ins' real rate limits and deskbot run's own",
            f"  intake: every webhook answered after {self.intake_s:.1f} s; every ticket a card"
            f" after {secs(self.all_carded_s)}; desk quiet after {secs(self.quiet_s)}",
            f"  Slack allows {SLACK_PER_SECOND:g} post/s per channel after a burst of"
            f" {SLACK_BURST}:",
        ]
        for c in self.channels:
            steady = "n/a" if c.steady_per_s is None else f"{c.steady_per_s:.2f}/s"
            lines.append(
                f"    {c.channel}: {c.posts} posts in {c.last_s - c.first_s:.1f} s, allowed"
                f" {c.allowed:.0f} → {c.utilisation:.1%}; after the burst {steady};"
                f" gaps > 1.5 s: {c.gaps_over_1_5s}, p90 {c.gap_p90_s:.2f} s,"
                f" max {c.gap_max_s:.2f} s; 429s {c.refused_429}"
            )
        target = "met" if self.utilisation >= 0.95 else "NOT met"
        lines += [
            f"  utilisation: {self.utilisation:.1%} of Slack's allowed rate (target ≥ 95%:"
            f" {target})",
            f"  429s caused by the desk's pace: {self.paced_429s}; chat.update calls"
            f" {self.updates}",
            f"  cards {self.cards} for {self.tickets} tickets; lost {self.lost}, shown twice"
            f" {self.doubled}",
            f"  desk process: CPU {self.desk_cpu_s:.1f} s until quiet, RSS {self.rss_mb:.0f} MB;"
            f" log: {self.desk_errors} ERROR lines,"
            f" {self.desk_tracebacks} tracebacks; load average before {self.load_before},"
            f" after {self.load_after} ({self.machine.get('cpus')} CPUs)",
            f"  result: {'OK' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)


def pace(channel: str, times: list[float], refused: int) -> ChannelPace:
    n = len(times)
    first, last = times[0], times[-1]
    allowed = SLACK_BURST + SLACK_PER_SECOND * (last - first)
    steady = None
    if n > SLACK_BURST and last > times[SLACK_BURST - 1]:
        steady = (n - SLACK_BURST) / (last - times[SLACK_BURST - 1])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return ChannelPace(
        channel=channel,
        posts=n,
        first_s=first,
        last_s=last,
        allowed=allowed,
        utilisation=min(n, allowed) / allowed,
        steady_per_s=steady,
        gaps_over_1_5s=sum(g > 1.5 for g in gaps),
        gap_p90_s=round(percentile(gaps, 0.9), 3),
        gap_max_s=round(max(gaps, default=0.0), 3),
        refused_429=refused,
    )


async def burst(
    *,
    tickets: int = 300,
    model: str = "rules",
    database: str | None = None,
    timeout: float = 900.0,
    log_dir: Path | None = None,
) -> BurstResult:
    port = free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=True)
    result = BurstResult(tickets, model, "sqlite", machine=machine())
    plan: list[tuple[str, str, str]] = []  # (wa_id, text, channel)
    counts = {ch: int(tickets * share) for ch, share in TEAM_SHARE.items()}
    counts["C0SUPPORT"] += tickets - sum(counts.values())
    for channel, n in counts.items():
        for _ in range(n):
            k = len(plan)
            plan.append((f"1556{k:07d}", f"{TEAM_TEXTS[channel]} ref L{k:06d}Q", channel))
    random.Random(7).shuffle(plan)
    vip = [w for w, _, ch in plan if ch == "C0VIP"]
    customer_of = {int(MARK.findall(t)[0]): i for i, (_, t, _) in enumerate(plan)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, schema = await fresh_database(database, folder)
        result.database = "postgresql" if url.startswith("postgresql") else "sqlite"
        await standins.start()
        rules = write_rules(folder, vip=vip)
        desk = Desk(
            desk_env(standins, url, port, rules, model),
            (log_dir or folder) / "desk.log",
            lifted=False,
        )
        backlog = Backlog(url)
        try:
            result.load_before = loadavg()
            await desk.start()
            assert desk.process is not None
            cpu0 = cpu_seconds(desk.process.pid)
            t0 = time.monotonic()
            clock = PostClock(standins, t0)
            clock.start()
            gate = asyncio.Semaphore(50)  # 50 deliveries in flight, as a platform would

            async def says(wa_id: str, text: str) -> None:
                async with gate:
                    await standins.whatsapp.customer_says(wa_id, text, name=f"C{wa_id}")

            await asyncio.gather(*(says(w, t) for w, t, _ in plan))
            result.intake_s = round(time.monotonic() - t0, 2)

            def carded() -> bool:
                return slack_accounting(standins, customer_of)[2] == 0

            deadline = time.monotonic() + timeout
            if await standins.slack.wait_for(carded, timeout):
                result.all_carded_s = round(time.monotonic() - t0, 1)
            if await backlog.quiet(max(deadline - time.monotonic(), 1.0)):
                result.quiet_s = round(time.monotonic() - t0, 1)
            result.desk_cpu_s = round(cpu_seconds(desk.process.pid) - cpu0, 1)
            await clock.stop()
            result.cards, _, result.lost, _, result.doubled = slack_accounting(
                standins, customer_of
            )
            refused = standins.slack.paced_refusals
            for channel, times in sorted(clock.times.items()):
                if times:
                    result.channels.append(pace(channel, times, refused.get(channel, 0)))
            result.post_times = {c: t for c, t in clock.times.items() if t}
            allowed = sum(c.allowed for c in result.channels)
            posts = sum(min(c.posts, c.allowed) for c in result.channels)
            result.utilisation = posts / allowed if allowed else 0.0
            result.paced_429s = standins.paced_refusals()
            result.updates = standins.slack.calls.count("chat.update")
            result.rss_mb, _ = memory_mb(desk.process.pid)
            result.load_after = loadavg()
        finally:
            result.desk_errors, result.desk_tracebacks = await _shut_down(
                desk, backlog, standins, database, schema
            )
    result.measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    return result


# -- the command ------------------------------------------------------------------------------


def desk_child() -> int:
    """``deskbot run`` with the desk's own rate limits lifted (the sustained mode's desk)."""
    import bot.app
    import bot.cli
    from bot.app import DeskApp
    from bot.delivery.ratelimit import RateLimits

    # bot.app's serve() builds the DeskApp (`deskbot run` calls it); the only change is the
    # limits it is given. (Patched into bot.cli until 2026-12-07, where serve() no longer
    # lives: the child then ran with the real limits, a Slack channel's one post a second.)
    vars(bot.app)["DeskApp"] = functools.partial(DeskApp, limits=RateLimits.lifted())
    return bot.cli.main(["run"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["desk-child"]:
        return desk_child()
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sustained", help="acknowledgement latency under a steady offered rate")
    s.add_argument("--rate", type=float, default=50.0, help="customer messages a second")
    s.add_argument("--seconds", type=float, default=300.0)
    s.add_argument("--model", choices=("local", "rules"), default="local")
    s.add_argument("--repeat-share", type=float, default=0.2)
    s.add_argument(
        "--drain-timeout",
        type=float,
        default=1800.0,
        help="how long to wait for the desk to finish after the offer (then count what is in"
        " Slack)",
    )
    s.add_argument("--plot", type=Path, default=None, help="draw the figures into this PNG")
    b = sub.add_parser("burst", help="new tickets at once under the platforms' real limits")
    b.add_argument("--tickets", type=int, default=300)
    b.add_argument("--model", choices=("local", "rules"), default="rules")
    for p in (s, b):
        p.add_argument("--database", default=None, help="a PostgreSQL URL (default SQLite)")
        p.add_argument("--json", type=Path, default=None, help="write every figure here")
        p.add_argument("--logs", type=Path, default=None, help="keep the desk's log here")
    args = parser.parse_args(argv)
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any]
    if args.mode == "sustained":
        result = asyncio.run(
            sustained(
                rate=args.rate,
                seconds=args.seconds,
                model=args.model,
                database=args.database,
                repeat_share=args.repeat_share,
                drain_timeout=args.drain_timeout,
                log_dir=args.logs,
            )
        )
        print(result.summary())
        data = {**asdict(result), **result.figures()}
        ok = result.lost + result.without_card == 0
        if args.plot is not None:
            plot_sustained(result, args.plot)
            print(f"  wrote {args.plot}")
    else:
        burst_result = asyncio.run(
            burst(tickets=args.tickets, model=args.model, database=args.database, log_dir=args.logs)
        )
        print(burst_result.summary())
        data = {**asdict(burst_result), "ok": burst_result.ok}
        ok = burst_result.ok
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"  wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
