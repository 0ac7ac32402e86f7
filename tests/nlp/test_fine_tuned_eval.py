"""`deskbot nlp eval --fine-tuned DIR` measures a company folder on the shared set it was trained
on: Banking77's held-out fifth for a folder cut from its 80%, only the official test file for one
trained on the whole train file (the fifth is in its training data), CLINC150's validation split
(and its test split, report only) for one trained on CLINC150; each figure beside its target."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from nlp import evaluate
from nlp.cli import main

from .test_abstention import EXAMPLES

TEXTS = [t for texts in EXAMPLES.values() for t in texts]
LABELS = [label for label, texts in EXAMPLES.items() for _ in texts]


def _meta(source: str) -> dict[str, object]:
    return {"sources": {"intent": source}}


def test_which_shared_set_a_folder_was_trained_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "banking77"
    folder.mkdir()
    with (folder / "train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        writer.writerows([f"question {i}", f"intent_{i % 2}"] for i in range(5))
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path))
    whole = "/tmp/banking77-train.csv (5 examples, 2 intents)"
    assert evaluate.trained_on(_meta(whole)) == "banking77-full"
    cut = "/tmp/banking77-train-80.csv (4 examples, 2 intents)"
    assert evaluate.trained_on(_meta(cut)) == "banking77"
    assert evaluate.trained_on(_meta("clinc150-train.csv (9 examples, 3 intents)")) == "clinc150"
    assert evaluate.trained_on(_meta("history.csv (9 examples, 3 intents)")) is None


def _clinc(root: Path) -> None:
    """CLINC150's file layout with the three test intents (train, validation, test) and a few
    out-of-scope questions."""
    for base in (root / "data" / "clinc150", root / "heldout" / "clinc150"):
        base.mkdir(parents=True)
        rows = [[t, y] for t, y in zip(TEXTS, LABELS, strict=True)]
        for split in ("train", "val", "test"):
            (base / f"{split}.json").write_text(json.dumps(rows), encoding="utf-8")
        oos = [["what is the weather tomorrow", "oos"], ["tell me a joke", "oos"]]
        for split in ("val", "test"):
            (base / f"oos_{split}.json").write_text(json.dumps(oos), encoding="utf-8")


@pytest.mark.model
def test_a_clinc150_folder_is_measured_on_clinc150_beside_its_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clinc(tmp_path)
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DESK_HELDOUT_DIR", str(tmp_path / "heldout"))
    history = tmp_path / "clinc150-train.csv"
    with history.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "intent"])
        writer.writerows(zip(TEXTS, LABELS, strict=True))
    out = tmp_path / "ours"
    args = ["train", "--intents", str(history), "--label-column", "intent", "--out", str(out)]
    assert main(args) == 0

    report = io.StringIO()
    figures = evaluate.fine_tuned(report, out)
    printed = report.getvalue().splitlines()
    line = next(s for s in printed if s.startswith("CLINC150 validation: accuracy as seen"))
    assert "target ≥ 0.95" in line
    line = next(s for s in printed if s.startswith("CLINC150 held-out TEST: accuracy as seen"))
    assert "target ≥ 0.95" in line and "report only" in line
    line = next(s for s in printed if s.startswith("CLINC150 validation: CLINC150 out-of-scope"))
    assert "target ≥ 0.6" in line and "2 questions" in line
    assert "company head: n-gram head weight" in figures
    assert 0.0 <= figures["CLINC150 validation: accuracy as seen"] <= 1.0

    report = io.StringIO()
    figures = evaluate.fine_tuned(report, out, heldout=False)
    assert not [name for name in figures if "TEST" in name]
    assert "CLINC150 validation: accuracy as seen" in figures
