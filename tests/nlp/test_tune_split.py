"""Choices are made on a tune tenth carved from Banking77's training part, never on the held-out
fifth that figures are reported on."""

from __future__ import annotations

import csv
from pathlib import Path

from nlp import data


def test_tune_split_is_carved_from_the_training_part_only(tmp_path: Path) -> None:
    folder = tmp_path / "banking77"
    folder.mkdir()
    rows = [(f"question number {i} about my card", f"intent_{i % 7}") for i in range(2000)]
    with (folder / "train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        writer.writerows(rows)

    train, held = data.banking77(tmp_path)
    rest, tune = data.banking77_tune(tmp_path)
    assert set(rest.texts) | set(tune.texts) == set(train.texts)
    assert not set(rest.texts) & set(tune.texts)
    assert not (set(rest.texts) | set(tune.texts)) & set(held.texts)  # held-out untouched
    assert 0.07 < len(tune.texts) / len(train.texts) < 0.13  # about a tenth
    assert data.banking77_tune(tmp_path) == (rest, tune)  # the same tenth every run
