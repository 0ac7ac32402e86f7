"""Chaos: several ``deskbot run`` processes on one PostgreSQL database, killed and cut off while
customers, agents and ratings keep coming. Then: was anything lost, doubled or reordered?

    python -m bench.chaos --seconds 120 --customers 40 --processes 3 --kill-every 5

What it does:

* starts the loopback stand-ins of Telegram (webhook mode), WhatsApp and Slack, a small load
  balancer in front of the desks (round robin; a desk that does not answer is skipped, as a load
  balancer's health check would), and ``--processes`` desks on a fresh PostgreSQL database;
* drives customers (half on Telegram, half on WhatsApp; each sends numbered messages), an agent
  who answers each new card in its thread and resolves it once the customer has finished, and
  Telegram customers who rate;
* meanwhile kills a random desk with SIGKILL every ``--kill-every`` seconds and starts it again,
  and once cuts every database connection (``pg_terminate_backend``);
* then waits for the desk to go quiet and counts, per customer message: in Slack exactly once
  (a loss is 0, a double is 2+), in order in its ticket's thread; per conversation: exactly one
  card; per agent reply: delivered to the customer (doubles are counted: an agent's reply whose
  outcome was unknown is sent again on purpose, see bot/delivery/outbox.py).

Everything the desk does goes through the same HTTP and database paths as production; only
the platforms are stand-ins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from sandbox import StandIns
from sandbox.ports import free_port as free_port
from storage.db import create_engine, session_factory
from storage.models import InboxRow, OutboxRow

ROOT = Path(__file__).resolve().parent.parent
TELEGRAM_TOKEN = "123456789:AAChaos-test-token_abcdefghijklmnopqrs"
WA_TOKEN = "EAAG-chaos-access-token"
WA_PHONE_ID = "106540352242922"
WA_SECRET = "wa-chaos-secret"
SLACK_TOKEN = "xoxb-1-chaos"
SLACK_SECRET = "slack-chaos-secret"
TG_SECRET = "tg-chaos_1"
AGENT = "U0BOB"  # an agent of the default team, where these conversations go
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class Balancer:
    """Round robin over the desks' ports; a desk that refuses the connection is skipped."""

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self._next = 0
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.forwarded: Counter[int] = Counter()

    async def start(self, port: int) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        for _ in range(len(self.upstreams)):
            port = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            url = f"http://127.0.0.1:{port}{request.path_qs}"
            try:
                async with self._http.request(
                    request.method, url, data=body, headers=headers
                ) as resp:
                    payload = await resp.read()
                    self.forwarded[port] += 1
                    kept = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
                    return web.Response(status=resp.status, body=payload, headers=kept)
            except (aiohttp.ClientConnectionError, TimeoutError):
                continue  # that desk is down (or died mid-request): the next one
        return web.Response(status=502, text="no desk answered")


@dataclass
class Desk:
    port: int
    process: asyncio.subprocess.Process | None = None


@dataclass
class Result:
    processes: int
    customers: int
    messages: int
    replies: int
    kills: int = 0
    cuts: int = 0
    losses: list[str] = field(default_factory=list)
    doubles: list[str] = field(default_factory=list)
    cards_missing: list[str] = field(default_factory=list)
    cards_doubled: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    replies_lost: list[str] = field(default_factory=list)
    replies_doubled: list[str] = field(default_factory=list)
    unhealthy: list[int] = field(default_factory=list)
    quiet_after: float | None = None
    quiet_after_input: float | None = None  # from the last thing a customer or agent did
    # Slack posts waiting when the last input was made: they go out at Slack's pace of about
    # one message a second per channel, which is most of the time to quiet.
    slack_waiting: int = 0
    # 429s the stand-ins gave because the desks together went faster than a platform allows.
    paced_429s: dict[str, int] = field(default_factory=dict)
    forwarded: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.losses
            or self.doubles
            or self.cards_missing
            or self.cards_doubled
            or self.out_of_order
            or self.replies_lost
            or self.unhealthy
            or any(self.paced_429s.values())
        ) and (self.quiet_after is not None)

    def summary(self) -> str:
        lines = [
            f"chaos: {self.processes} processes, {self.customers} customers, {self.messages}"
            f" customer messages, {self.replies} agent replies;"
            f" {self.kills} SIGKILLs, {self.cuts} database connection cut(s)",
            f"  customer messages lost in Slack: {len(self.losses)}"
            + (f" {self.losses[:5]}" if self.losses else ""),
            f"  customer messages doubled in Slack: {len(self.doubles)}"
            + (f" {self.doubles[:5]}" if self.doubles else ""),
            f"  conversations without a card: {len(self.cards_missing)};"
            f" with more than one: {len(self.cards_doubled)}",
            f"  threads out of order: {len(self.out_of_order)}",
            f"  agent replies lost: {len(self.replies_lost)};"
            f" delivered twice (at-least-once by design): {len(self.replies_doubled)}"
            + (f" {self.replies_doubled[:5]}" if self.replies_doubled else ""),
            f"  429s from the platforms' limits (the fleet's own pace): {self.paced_429s}",
            f"  unhealthy desks at the end: {self.unhealthy or 'none'}",
            "  quiet "
            + (
                f"{self.quiet_after:.1f} s after the last fault,"
                f" {self.quiet_after_input or 0:.1f} s after the last input"
                f" ({self.slack_waiting} Slack posts were waiting then, paced at one a second"
                " per channel)"
                if self.quiet_after is not None
                else "never (timed out)"
            ),
            f"  webhooks per desk: {dict(sorted(self.forwarded.items()))}",
            f"  result: {'OK' if self.ok else 'FAILED'}",
        ]
        return "\n".join(lines)


def make_standins(desk_url: str, *, rate_limits: bool) -> StandIns:
    """The three stand-ins, with the secrets the desks of these benchmarks are started with."""
    return StandIns(
        desk_url=desk_url,
        telegram_token=TELEGRAM_TOKEN,
        whatsapp_access_token=WA_TOKEN,
        whatsapp_phone_number_id=WA_PHONE_ID,
        whatsapp_app_secret=WA_SECRET,
        slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SLACK_SECRET,
        rate_limits=rate_limits,
        retry_base_delay=0.2,
    )


def _desk_env(standins: StandIns, database_url: str, port: int, balancer: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DESK_DATABASE_URL": database_url,
        "DESK_HTTP_PORT": str(port),
        "DESK_RULES": str(ROOT / "rules.yaml"),
        "DESK_MODEL": "rules",
        "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
        "TELEGRAM_API_BASE": standins.telegram_api_base,
        "TELEGRAM_WEBHOOK_URL": f"{balancer}/telegram/webhook",
        "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
        "WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": WA_PHONE_ID,
        "WHATSAPP_APP_SECRET": WA_SECRET,
        "WHATSAPP_VERIFY_TOKEN": "v",
        "WHATSAPP_API_BASE": standins.whatsapp_api_base,
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_SIGNING_SECRET": SLACK_SECRET,
        "SLACK_API_BASE": standins.slack_api_base,
    }


async def _healthy(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _start_desk(desk: Desk, env: dict[str, str], log_dir: Path | None) -> None:
    out: Any = asyncio.subprocess.DEVNULL
    if log_dir is not None:
        out = (log_dir / f"desk-{desk.port}.log").open("ab")
    desk.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=env, cwd=str(ROOT), stdout=out, stderr=out
    )
    deadline = time.monotonic() + 60
    while not await _healthy(desk.port):
        if desk.process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the desk on port {desk.port} did not start")
        await asyncio.sleep(0.1)


async def _kill(desk: Desk) -> None:
    if desk.process is not None and desk.process.returncode is None:
        desk.process.send_signal(signal.SIGKILL)
        await desk.process.wait()


async def _cut_connections(server_url: str, database: str) -> int:
    conn = await asyncpg.connect(server_url)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        return len(rows)
    finally:
        await conn.close()


def _plain(url: str) -> str:
    """An asyncpg connection string from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _slack_waiting(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s:
            return (
                await s.scalar(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(
                        OutboxRow.channel == "slack",
                        OutboxRow.status.in_(("pending", "sending")),
                    )
                )
                or 0
            )
    finally:
        await engine.dispose()


async def _quiet(database_url: str, timeout: float) -> bool:
    """Wait until nothing is left to do. ``timeout`` is how long the desk may go without
    finishing anything: a long run leaves minutes of Slack posts paced at one a second per
    channel (and card updates at 50 a minute), which is progress, not a stuck desk."""
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + timeout
    fewest: int | None = None
    try:
        while time.monotonic() < deadline:
            try:
                async with sessions() as s:
                    inbox = await s.scalar(
                        select(func.count())
                        .select_from(InboxRow)
                        .where(InboxRow.status.in_(("pending", "processing")))
                    )
                    outbox = await s.scalar(
                        select(func.count())
                        .select_from(OutboxRow)
                        .where(OutboxRow.status.in_(("pending", "sending")))
                    )
                if not inbox and not outbox:
                    return True
                left = (inbox or 0) + (outbox or 0)
                if fewest is None or left < fewest:
                    fewest, deadline = left, time.monotonic() + timeout
            except Exception:  # the database may still be recovering from the cut
                pass
            await asyncio.sleep(0.25)
        return False
    finally:
        await engine.dispose()


def _slack_texts(standins: StandIns) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The cards (with channel), and each card's thread texts, from every channel."""
    slack = standins.slack
    cards = [
        {**m, "channel": ch} for ch in slack.channels for m in slack.messages(ch) if m.get("blocks")
    ]
    threads = {c["ts"]: [m["text"] for m in slack.thread(c["channel"], c["ts"])] for c in cards}
    return cards, threads


async def run(
    server_url: str,
    *,
    seconds: float = 30.0,
    processes: int = 3,
    customers: int = 12,
    messages: int = 4,
    kill_every: float = 5.0,
    cut: bool = True,
    seed: int = 1,
    log_dir: Path | None = None,
) -> Result:
    """One chaos run on a fresh database on the PostgreSQL server at ``server_url`` (a
    SQLAlchemy URL of any database there); the database is dropped afterwards."""
    rng = random.Random(seed)
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    admin = _plain(server_url)
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    database_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    balancer_port = free_port()
    balancer_url = f"http://127.0.0.1:{balancer_port}"
    # The platforms' real limits: the fleet must keep them together.
    standins = make_standins(balancer_url, rate_limits=True)
    await standins.start()
    desks = [Desk(free_port()) for _ in range(processes)]
    balancer = Balancer([d.port for d in desks])
    await balancer.start(balancer_port)
    result = Result(processes, customers, customers * messages, 0)
    who = [
        ("telegram", str(7000 + n)) if n % 2 == 0 else ("whatsapp", f"1555077{n:04d}")
        for n in range(customers)
    ]
    try:
        for desk in desks:
            await _start_desk(
                desk, _desk_env(standins, database_url, desk.port, balancer_url), log_dir
            )
        last_fault = time.monotonic()
        stop = asyncio.Event()

        async def customer(n: int) -> None:
            platform, ident = who[n]
            for k in range(messages):
                text = f"chaos c{n} m{k}"
                if platform == "telegram":
                    await standins.telegram.customer_says(int(ident), text, first_name=f"C{n}")
                else:
                    await standins.whatsapp.customer_says(ident, text, name=f"C{n}")
                await asyncio.sleep(rng.uniform(0.2, seconds / messages))

        answered: set[str] = set()

        async def agent() -> None:
            while not stop.is_set():
                cards, _ = _slack_texts(standins)
                for card in cards:
                    if card["ts"] in answered:
                        continue
                    blob = json.dumps(card["blocks"])
                    n = next((i for i in range(customers) if f"chaos c{i} m" in blob), None)
                    if n is None:
                        continue
                    answered.add(card["ts"])
                    result.replies += 1
                    # A desk may die mid-delivery; Slack's retries then deliver the event.
                    with contextlib.suppress(Exception):
                        await standins.slack.agent_replies(
                            card["channel"], card["ts"], AGENT, f"reply to c{n}"
                        )
                await asyncio.sleep(0.3)

        async def chaos() -> None:
            nonlocal last_fault
            started = time.monotonic()
            cut_at = started + seconds / 2
            while time.monotonic() - started < seconds:
                await asyncio.sleep(kill_every)
                if time.monotonic() - started >= seconds:
                    break
                victim = rng.choice(desks)
                await _kill(victim)
                result.kills += 1
                last_fault = time.monotonic()
                env = _desk_env(standins, database_url, victim.port, balancer_url)
                await _start_desk(victim, env, log_dir)
                if cut and not result.cuts and time.monotonic() >= cut_at:
                    await _cut_connections(admin, name)
                    result.cuts += 1
                    last_fault = time.monotonic()

        agent_task = asyncio.ensure_future(agent())
        await asyncio.gather(chaos(), *(customer(n) for n in range(customers)))
        # Ratings: each Telegram customer's ticket resolved, and the prompt answered.
        cards, _ = _slack_texts(standins)
        for card in cards:
            blob = json.dumps(card["blocks"])
            n = next((i for i in range(customers) if f"chaos c{i} m" in blob), None)
            if n is not None and who[n][0] == "telegram":
                with contextlib.suppress(Exception):
                    await standins.slack.agent_clicks(
                        card["channel"], card["ts"], "ticket_resolve", AGENT
                    )
        last_input = time.monotonic()
        with contextlib.suppress(Exception):
            result.slack_waiting = await _slack_waiting(database_url)
        quiet = await _quiet(database_url, timeout=120)
        result.quiet_after = time.monotonic() - last_fault if quiet else None
        result.quiet_after_input = time.monotonic() - last_input if quiet else None
        for platform, ident in who:
            if platform != "telegram":
                continue
            prompts = [m for m in standins.telegram.sent_to(int(ident)) if m.get("reply_markup")]
            if prompts:
                keys = prompts[-1]["reply_markup"]["inline_keyboard"]
                data = [b["callback_data"] for row in keys for b in row]
                with contextlib.suppress(Exception):
                    await standins.telegram.customer_presses(
                        int(ident), prompts[-1]["message_id"], data[-1]
                    )
        stop.set()
        await agent_task
        if not await _quiet(database_url, timeout=60):
            result.quiet_after = None
        await asyncio.sleep(0.5)

        cards, threads = _slack_texts(standins)
        for n, (platform, ident) in enumerate(who):
            mine = [c for c in cards if f"chaos c{n} m" in json.dumps(c["blocks"])]
            if not mine:
                result.cards_missing.append(f"c{n}")
            elif len(mine) > 1:
                result.cards_doubled.append(f"c{n}: {len(mine)} cards")
            seen: list[int] = []
            said = re.compile(rf"chaos c{n} m(\d+)(?!\d)")
            for card in mine:
                seen += [int(k) for k in said.findall(json.dumps(card["blocks"]))]
                for text in threads.get(card["ts"], []):
                    seen += [int(k) for k in said.findall(text)]
            counts = Counter(seen)
            for k in range(messages):
                if counts[k] == 0:
                    result.losses.append(f"c{n} m{k} ({platform})")
                elif counts[k] > 1:
                    result.doubles.append(f"c{n} m{k} x{counts[k]} ({platform})")
            if seen != sorted(seen):
                result.out_of_order.append(f"c{n}: {seen}")
            got = (
                [m.get("text", "") for m in standins.telegram.sent_to(int(ident))]
                if platform == "telegram"
                else [
                    (m.get("text") or {}).get("body", "") for m in standins.whatsapp.sent_to(ident)
                ]
            )
            replies = sum(1 for t in got if t.endswith(f"reply to c{n}"))
            if mine and mine[0]["ts"] in answered:
                if replies == 0:
                    result.replies_lost.append(f"c{n}")
                elif replies > 1:
                    result.replies_doubled.append(f"c{n} x{replies}")
        result.unhealthy = [d.port for d in desks if not await _healthy(d.port)]
        result.forwarded = dict(balancer.forwarded)
        result.paced_429s = standins.paced_refusals()
        return result
    finally:
        for desk in desks:
            if desk.process is not None and desk.process.returncode is None:
                desk.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(desk.process.wait(), 15)
                except TimeoutError:
                    await _kill(desk)
        await balancer.stop()
        await standins.stop()
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("DESK_TEST_POSTGRES_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL; the run makes (and drops) its own database there",
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--no-cut", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", type=Path, default=None, help="keep each desk's log here")
    args = parser.parse_args()
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(
        run(
            args.server,
            seconds=args.seconds,
            processes=args.processes,
            customers=args.customers,
            messages=args.messages,
            kill_every=args.kill_every,
            cut=not args.no_cut,
            seed=args.seed,
            log_dir=args.logs,
        )
    )
    print(result.summary())
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
