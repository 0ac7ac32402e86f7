"""The desk's model runs on ONNX Runtime and ``tokenizers`` alone: PyTorch and transformers are
for training and export, and a desk without them (or with them unimportable) still classifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlp.encoder import (
    SHIPPED,
    build_shipped,
    default_encoder_dir,
    export_onnx,
    full_encoder_dir,
    onnx_path,
)
from nlp.service import DEFAULT_HEADS, read_meta

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: a meta-path finder that refuses torch and transformers, then
# `deskbot nlp classify` on two lines from stdin; prints what it answered and what got imported.
BLOCKED = """
import importlib.abc, io, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Refuse())
"""
CLASSIFY = (
    BLOCKED
    + """
sys.stdin = io.StringIO(sys.argv[1])
from nlp.cli import main
code = main(["classify", "--rules", "no-such-rules.yaml"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"code": code, "loaded": loaded}))
"""
)
LOAD = (
    BLOCKED
    + """
from nlp.encoder import Encoder, EncoderError
try:
    Encoder.load(sys.argv[1])
except EncoderError as exc:
    print(exc)
"""
)


def test_classify_with_pytorch_unimportable() -> None:
    layers = tuple(int(n) for n in read_meta(DEFAULT_HEADS)["layers"])
    if not onnx_path(default_encoder_dir(), layers, False).is_file():
        export_onnx(default_encoder_dir(), layers)  # what `make` does at install
    lines = "\n".join(
        json.dumps({"text": t})
        for t in ("I want a refund for the order I cancelled", "I forgot my password")
    )
    done = subprocess.run(
        [sys.executable, "-c", CLASSIFY, lines + "\n"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    *rows, status = [json.loads(line) for line in done.stdout.splitlines()]
    assert status == {"code": 0, "loaded": []}
    assert [r["intent"] for r in rows] == ["get_refund", "recover_password"]
    assert all(r["sentiment"] in ("negative", "neutral", "positive") for r in rows)


def test_without_a_graph_or_pytorch_the_error_says_what_to_run(tmp_path: Path) -> None:
    # An encoder folder without its graph (the shipped one has it: the desk never exports).
    folder = tmp_path / "encoder"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((SHIPPED / name).read_bytes())
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DESK_ONNX_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "PyTorch is not installed to export one: pip install 'deskbot[train]'" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # nothing written


def test_export_writes_both_graphs_where_the_desk_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nlp.cli import main

    monkeypatch.setenv("DESK_ONNX_DIR", str(tmp_path))
    full = full_encoder_dir()
    assert main(["export", "--encoder", str(full)]) == 0
    layers = tuple(int(n) for n in read_meta(DEFAULT_HEADS)["layers"])
    written = {onnx_path(full, layers, q) for q in (False, True)}
    assert set(tmp_path.iterdir()) == written
    assert capsys.readouterr().out.count("wrote ") == 2


def test_the_shipped_encoder_is_what_one_command_rebuilds(tmp_path: Path) -> None:
    """`deskbot nlp export` (the train extra) writes the committed runtime folder again: the
    same config, tokenizer and int8 graph, byte for byte; and the desk loads it by default."""
    layers = tuple(int(n) for n in read_meta(DEFAULT_HEADS)["layers"])
    rebuilt = tmp_path / "encoder"
    build_shipped(layers, target=rebuilt)
    for name in ("config.json", "tokenizer.json", "onnx/encoder-d5165d008e45-L3_6-int8.onnx"):
        assert (rebuilt / name).read_bytes() == (SHIPPED / name).read_bytes(), name
    assert default_encoder_dir() == SHIPPED
