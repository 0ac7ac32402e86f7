"""``/desk stats`` is worked out off the event loop (bot/reports/offloop.py): while a slow report
runs, customers' webhooks are still answered at once, and the answer is the same."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bot.reports import offloop, worker
from bot.reports.metrics import build as real_build

from .conftest import SUPPORT, Stack

SLOW = 1.5  # seconds the report's arithmetic is made to take
ACK_BOUND = 0.5  # loose: the bench (python -m bench.report_stall) measures the stall precisely


async def test_webhooks_are_answered_while_a_slow_report_runs(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker in this test is a thread, so that the report can be slowed down from here (a
    # spawned worker process would import the real code); time.sleep holds that thread as the
    # report's Python would, and would hold the event loop if the report ran on it.
    built_on: list[str] = []

    def slow_build(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built_on.append(threading.current_thread().name)
        time.sleep(SLOW)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(offloop, "build", slow_build)
    pool = ThreadPoolExecutor(1, thread_name_prefix="report-worker")
    monkeypatch.setattr(worker, "_pool", pool)
    try:
        wa = stack.standins.whatsapp
        await wa.customer_says("15550001000", "My parcel is late")  # a history to count
        await stack.card(1)

        t0 = time.perf_counter()
        report = asyncio.create_task(
            stack.standins.slack.slash_command("/desk", "stats 365d", "U0CAROL", SUPPORT)
        )
        await asyncio.sleep(0.2)  # the report is under way
        acks: list[float] = []
        # While the report runs; at most 8, under Slack's burst of 10 cards (all come at once).
        while not report.done() and len(acks) < 8:
            sent = time.perf_counter()
            await wa.customer_says(f"1555000{len(acks) + 2000}", f"Order {len(acks)} missing")
            acks.append(time.perf_counter() - sent)
            await asyncio.sleep(0.15)
        answers = await report
        took = time.perf_counter() - t0
    finally:
        pool.shutdown(wait=True)

    assert took >= SLOW  # the acknowledgements below were measured while it ran
    assert len(acks) >= 3, acks
    assert max(acks) < ACK_BOUND, [round(a, 3) for a in acks]
    assert built_on and all(name.startswith("report-worker") for name in built_on)
    text = next(str(a["text"]) for a in answers if "text" in a)
    assert text.startswith("*Desk figures ") and "tickets created 1 " in text
    # Every customer who wrote meanwhile got their card.
    await stack.card(1 + len(acks))
