"""`deskbot nlp bench` prints every figure the README quotes (not timed: figures only)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from nlp import bench
from nlp.cli import main

pytestmark = pytest.mark.model


def test_bench_prints_throughput_latency_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path))  # an installed desk: no labelled sets
    out = io.StringIO()
    bench.run(out, messages=64, desk=False)
    text = out.getvalue()
    assert f"messages: 12 built-in messages (no {tmp_path})" in text
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)$", text, re.M)
    assert [int(r[0]) for r in rows] == [1, 8, 32, 128]
    assert all(int(r[1]) > 0 and int(r[2]) > 0 for r in rows)
    assert re.search(r"through the micro-batcher\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms", text)
    assert re.search(r"bare encoder\s+p50 [\d.]+ ms\s+p99 [\d.]+ ms\s+\(ratio p50 [\d.]+\)", text)
    assert re.search(r"memory: RSS now \d+ MB, peak \d+ MB", text)


def test_eval_without_the_labelled_sets_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path))
    assert main(["eval"]) == 2
    err = capsys.readouterr().err
    assert "is missing; the labelled sets are looked for in" in err
    assert str(tmp_path) in err and "DESK_DATA_DIR" in err
