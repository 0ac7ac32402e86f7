"""`deskbot nlp bench` prints every figure the README quotes (not timed: figures only)."""

from __future__ import annotations

import io
import re

import pytest

from nlp import bench

pytestmark = pytest.mark.model


def test_bench_prints_throughput_latency_and_memory() -> None:
    out = io.StringIO()
    bench.run(out, messages=64)
    text = out.getvalue()
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)$", text, re.M)
    assert [int(r[0]) for r in rows] == [1, 8, 32, 128]
    assert all(int(r[1]) > 0 and int(r[2]) > 0 for r in rows)
    assert re.search(r"through the micro-batcher\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms", text)
    assert re.search(r"bare encoder\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+\(ratio p50 [\d.]+\)", text)
    assert re.search(r"memory: RSS now \d+ MB, peak \d+ MB", text)
