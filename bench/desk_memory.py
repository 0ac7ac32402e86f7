"""The resident memory of ``deskbot run`` itself with the model loaded and used.

    .venv/bin/python -m bench.desk_memory [--messages 20]

Starts the loopback stand-ins in this process and ``deskbot run`` as a child process pointed at
them (as a real deployment, from the environment), sends customer messages through the Telegram
stand-in until their Slack cards arrive (so the model has loaded and classified), then reads
the child's resident memory (VmRSS) and peak (VmHWM) from /proc, and whether it mapped PyTorch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox import StandIns
from sandbox.ports import free_port as _free_port

ROOT = Path(__file__).resolve().parents[1]
# Twenty different questions: since surges (issue 13), five alike tickets in ten minutes become
# one incident card, and repeats of a few messages did (15 cards for 20 tickets).
MESSAGES = [
    "My order never arrived and nobody answers my emails",
    "how do I reset my password?",
    "I was charged twice this month, please refund one",
    "我的订单三天了还没到，太差劲了，我要退款！",
    "Mi pedido no ha llegado y nadie responde, quiero un reembolso",
    "Мой заказ не пришёл уже неделю, верните деньги",
    "can I change the delivery address of an order I placed yesterday",
    "what payment methods do you accept",
    "I want to cancel my account and delete all my data",
    "the app crashes every time I open the invoice page",
    "is there a fee if I cancel before the end of the contract",
    "Thanks, the replacement came today and works perfectly!",
    "Your courier left the parcel in the rain, everything inside is soaked",
    "do you ship to Norway and how long does it take",
    "I need an invoice with my company's VAT number on it",
    "how can I talk to a human about a complaint",
    "the discount code from your newsletter is not accepted at checkout",
    "please update the phone number on my profile",
    "where can I find your terms of service",
    "I would like to subscribe to the newsletter",
]


@dataclass(frozen=True)
class DeskMemory:
    rss_mb: float
    peak_mb: float
    torch_mapped: bool
    ready_s: float
    cards: int


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MB, and 1.0 under "torch" if libtorch is mapped into the process."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    out["torch"] = float("libtorch" in Path(f"/proc/{pid}/maps").read_text())
    return out


async def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` came true within ``timeout`` (it reads two stand-ins, so neither's
    own waiter sees every change)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def measure(messages: int = 20, timeout: float = 180) -> DeskMemory:
    port = _free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "DESK_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'desk.db'}",
            "DESK_HTTP_PORT": str(port),
            "DESK_RULES": str(ROOT / "rules.yaml"),
            "DESK_LOG_LEVEL": "WARNING",
            "TELEGRAM_BOT_TOKEN": standins.telegram_token,
            "TELEGRAM_API_BASE": standins.telegram_api_base,
            "TELEGRAM_POLL_TIMEOUT": "5",
            "SLACK_BOT_TOKEN": standins.slack_bot_token,
            "SLACK_SIGNING_SECRET": standins.slack_signing_secret,
            "SLACK_API_BASE": standins.slack_api_base,
        }
        started = time.monotonic()
        desk = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            cwd=tmp,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            for i in range(messages):
                await standins.telegram.customer_says(
                    200_000 + i, f"{MESSAGES[i % len(MESSAGES)]} #{i}", first_name=f"C{i}"
                )

            def cards() -> int:  # in whichever team's channel routing put them
                return sum(
                    1
                    for channel in list(standins.slack.channels)
                    for m in standins.slack.messages(channel)
                    if m.get("blocks")
                )

            customers = [200_000 + i for i in range(messages)]

            def answered() -> int:  # each customer hears back: a ticket's acknowledgement, or
                # an answer from the knowledge base (then no card is posted)
                return sum(1 for c in customers if standins.telegram.sent_to(c))

            waiting = asyncio.ensure_future(
                _poll(lambda: answered() >= messages and cards() > 0, timeout)
            )
            exited = asyncio.ensure_future(desk.wait())
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                waiting.cancel()
                raise RuntimeError(f"deskbot run exited with {desk.returncode} (see its logs)")
            exited.cancel()
            if not waiting.result():
                raise TimeoutError(
                    f"only {answered()}/{messages} customers answered ({cards()} cards)"
                )
            ready = time.monotonic() - started
            await asyncio.sleep(1.0)  # let the outbox settle
            status = _status(desk.pid)
            return DeskMemory(
                rss_mb=status["VmRSS"],
                peak_mb=status["VmHWM"],
                torch_mapped=status["torch"] > 0,
                ready_s=ready,
                cards=cards(),
            )
        finally:
            if desk.returncode is None:
                desk.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(desk.wait(), 30)
                except TimeoutError:
                    desk.kill()
                    await desk.wait()
            await standins.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.desk_memory", description=__doc__)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args(argv)
    m = asyncio.run(measure(args.messages))
    print(
        f"deskbot run with the model: RSS {m.rss_mb:.0f} MB, peak {m.peak_mb:.0f} MB after "
        f"{args.messages} messages answered, {m.cards} cards (all in {m.ready_s:.1f} s); "
        "PyTorch mapped: "
        f"{'yes' if m.torch_mapped else 'no'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
