"""``deskbot nlp bench``: throughput by batch size, single-message latency, memory.

Every figure is printed twice, for the whole analyser (tokeniser, encoder, heads, and the
micro-batcher for latency) and for the bare encoder in the same process, so the overhead shows
as a ratio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from nlp import data
from nlp.service import TextAnalyser


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ROUNDS = 3  # each throughput figure is the median of this many runs

# Used where the labelled sets are not at hand (an installed desk without ../shared/data).
FALLBACK = [
    "My order #A17 never arrived and nobody answers my emails",
    "how do I reset my password?",
    "I was charged twice for the same subscription this month, please refund one",
    "Thanks, the replacement came today and works perfectly!",
    "can I change the delivery address of an order I placed yesterday",
    "This is the third time I'm writing. Ridiculous service.",
    "what payment methods do you accept",
    "I want to cancel my account and delete all my data",
    "the app crashes every time I open the invoice page",
    "is there a fee if I cancel before the end of the contract",
    "hi",
    "Your courier left the parcel in the rain, everything inside is soaked and ruined",
]


def _messages(n: int) -> tuple[list[str], str]:
    """Real support-style messages: Bitext questions and tweets to companies, interleaved."""
    try:
        a = data.bitext("Validation").texts
        b = data.tweeteval("tweeteval_sentiment").texts
        mixed = [t for pair in zip(a, b, strict=False) for t in pair]
        source = "Bitext validation questions and TweetEval tweets"
    except FileNotFoundError:
        mixed, source = FALLBACK, f"{len(FALLBACK)} built-in messages (no {data.data_dir()})"
    return (mixed * (n // len(mixed) + 1))[:n], source


def _rate(call: Callable[[list[str]], object], texts: list[str], batch: int) -> float:
    call(texts[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        call(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - start)


async def _latency(analyser: TextAnalyser, texts: list[str]) -> list[float]:
    await analyser.start()
    out = []
    for text in texts:
        start = time.perf_counter()
        await analyser.analyse(text)
        out.append((time.perf_counter() - start) * 1000)
    await analyser.close()
    return out


def _bare_latency(analyser: TextAnalyser, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        analyser.encoder.encode([text])
        out.append((time.perf_counter() - start) * 1000)
    return out


def bare_encoder_rate(messages: int = 256, batch: int = 32) -> float:
    """Messages a second the bare encoder embeds in batches of ``batch`` (the median of
    ROUNDS runs), on the same messages as the rest of this bench: the reference issue 27 sets
    the desk's loop against (bench.loop prints it beside the loop's own rate)."""
    analyser = TextAnalyser.load()
    texts = _messages(max(messages, batch * 4))[0]
    return statistics.median(_rate(analyser.encoder.encode, texts, batch) for _ in range(ROUNDS))


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def run(
    out: TextIO, *, messages: int = 512, heads_dir: Path | None = None, desk: bool = True
) -> None:
    before = _rss_mb()
    start = time.perf_counter()
    analyser = TextAnalyser.load(heads_dir=heads_dir)
    load_s = time.perf_counter() - start
    loaded = _rss_mb()
    texts, source = _messages(messages)
    load1, _, _ = os.getloadavg()
    out.write(
        f"model {analyser.version}; load {load_s:.1f} s; RSS {before:.0f} MB before, "
        f"{loaded:.0f} MB loaded\nmessages: {source}\n"
        f"machine: {os.cpu_count()} cores, load average {load1:.1f} at the start "
        "(other work on the machine slows every figure below)\n\n"
    )
    out.write(
        f"{'batch':>5} {'analyser msg/s':>15} {'bare encoder msg/s':>19} {'ratio':>6}"
        f"   (median of {ROUNDS} rounds, the two taking turns)\n"
    )
    rates: dict[int, float] = {}
    for batch in (1, 8, 32, 128):
        sample = texts[: max(128, min(messages, batch * 8))]
        fulls: list[float] = []
        bares: list[float] = []
        for _ in range(ROUNDS):  # a shared machine's load comes and goes: take turns
            fulls.append(_rate(analyser.analyse_batch, sample, batch))
            bares.append(_rate(analyser.encoder.encode, sample, batch))
        full = rates[batch] = statistics.median(fulls)
        bare = statistics.median(bares)
        out.write(f"{batch:>5} {full:>15.0f} {bare:>19.0f} {bare / full:>6.2f}\n")
    singles = texts[:200]
    through = asyncio.run(_latency(analyser, singles))
    bare_lat = _bare_latency(analyser, singles)
    p50, p99 = _pct(through, 50), _pct(through, 99)
    bare50, bare99 = _pct(bare_lat, 50), _pct(bare_lat, 99)
    out.write(
        f"\nsingle message, idle ({len(singles)} in turn):\n"
        f"  through the micro-batcher  p50 {p50:.1f} ms  p99 {p99:.1f} ms\n"
        f"  bare encoder               p50 {bare50:.1f} ms  p99 {bare99:.1f} ms"
        f"  (ratio p50 {p50 / bare50:.2f})\n"
        f"\nmemory: RSS now {_rss_mb():.0f} MB, peak {_peak_mb():.0f} MB\n"
    )
    torch = "loaded" if "torch" in sys.modules else "not loaded"
    out.write(
        f"\nagainst the targets (PyTorch {torch}):\n"
        f"  batched throughput (batch 32)  {rates[32]:>6.0f} msg/s  target ≥ 300  "
        f"{'met' if rates[32] >= 300 else 'NOT MET'}\n"
        f"  single message p50             {p50:>6.1f} ms     target ≤ 10   "
        f"{'met' if p50 <= 10 else 'NOT MET'}\n"
    )
    if desk:
        out.write(f"  {_desk_memory()}\n")


def _desk_memory() -> str:
    rss, line = desk_memory_mb()
    if rss != rss:  # not measured
        return line
    verdict = "met" if rss <= 400 else "NOT MET"
    return f"{line}; target ≤ 400 MB: {verdict}"


def desk_memory_mb() -> tuple[float, str]:
    """``deskbot run`` in a child process against the stand-ins (bench/desk_memory.py), so
    the figure is the desk's own memory with the model loaded, not this analyser's: its
    resident MB (NaN when not measured) and the measurement's own line."""
    if importlib.util.find_spec("bench.desk_memory") is None:
        return float("nan"), (
            "deskbot run memory: not measured (run from a checkout: python -m bench.desk_memory)"
        )
    done = subprocess.run(
        [sys.executable, "-m", "bench.desk_memory"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return float("nan"), (
            f"deskbot run memory: the measurement failed: {done.stderr.strip()[-500:]}"
        )
    line = done.stdout.strip()
    match = re.search(r"RSS (\d+) MB", line)
    return (float(match.group(1)) if match else float("nan")), line
