"""A company intent head reads the message's words too: an n-gram head beside the encoder's,
their probabilities averaged at a weight chosen when the head is trained, on examples neither
head fitted; the desk (and `deskbot nlp eval`) apply it as trained, without scikit-learn."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlp import intent_ngrams, train
from nlp.cli import main
from nlp.evaluate import CompanyWords, intent_figures
from nlp.heads import LinearHead
from nlp.service import TextAnalyser

from .test_abstention import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [t for texts in EXAMPLES.values() for t in texts]
LABELS = [label for label, texts in EXAMPLES.items() for _ in texts]


def test_the_features_are_words_and_word_pieces_each_block_unit_length() -> None:
    words, pieces = intent_ngrams.grams("I top up by card")
    assert "top up" in words and "by" in words and "i" not in words  # \w\w+, as scikit-learn
    assert " top" in pieces and "card " in pieces and " i " in pieces
    cols, vals = intent_ngrams.row("I top up by card", None)
    again = intent_ngrams.row("i top  UP by card", None)  # case and spacing do not matter
    assert np.array_equal(np.sort(cols), np.sort(again[0]))
    n_words = len({*words})
    assert np.isclose(np.sum(vals[:n_words] ** 2), 1.0)  # the word block
    assert np.isclose(np.sum(vals[n_words:] ** 2), 1.0)  # the character block
    assert cols.max() < intent_ngrams.N_FEATURES


def test_a_saved_head_scores_as_fitted_and_loads_without_scikit_learn(tmp_path: Path) -> None:
    head = intent_ngrams.fit(TEXTS, LABELS, c=10.0)
    fitted = head.proba(TEXTS)
    assert [head.labels[i] for i in fitted.argmax(axis=1)] == LABELS
    path = tmp_path / intent_ngrams.NGRAMS_FILE
    head.save(path)
    loaded = intent_ngrams.IntentNgrams.load(path)
    assert loaded.head.weights.dtype == np.float16  # stored and kept at half precision
    assert np.allclose(loaded.proba(TEXTS), fitted, atol=2e-3)
    # The desk's side: numpy alone (scikit-learn and SciPy refused).
    script = """
import importlib.abc, json, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sklearn", "scipy", "torch"):
            raise ImportError(name)
sys.meta_path.insert(0, Refuse())
from pathlib import Path
from nlp.intent_ngrams import IntentNgrams
head = IntentNgrams.load(Path(sys.argv[1]))
p = head.proba(["I lost my card", "what is the exchange rate"])
print(json.dumps([head.labels[i] for i in p.argmax(axis=1)]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["lost_card", "exchange_rate"]


def test_the_weight_is_the_one_with_the_lowest_held_out_log_loss() -> None:
    labels = ("a", "b", "c")
    truth = ["a", "b", "c", "a", "b", "c"]
    target = [labels.index(y) for y in truth]
    right_logits = np.eye(3)[target] * 4.0
    # The encoder head is wrong on every example (sure of the next label), the n-gram head
    # right: the more weight the n-gram head has, the lower the log-loss: the largest is taken.
    wrong = np.roll(np.eye(3)[target] * 0.7 + 0.1, 1, axis=1)
    confidence, info = train._ngram_weight(wrong, right_logits, truth, labels)
    top = max(train.INTENT_NGRAMS_WEIGHTS)
    assert info["weight"] == top and info["accuracy_by_weight"][str(top)] == 1.0
    assert info["accuracy_by_weight"]["0.0"] == 0.0 and info["file"] == "intent-ngrams.npz"
    losses = list(info["log_loss_by_weight"].values())
    assert losses == sorted(losses, reverse=True)
    assert confidence.shape == (6,) and (confidence > 1 / 3).all()
    # The encoder head right, the n-gram head wrong: it is left out (weight 0, no file).
    right = np.eye(3)[target] * 0.7 + 0.1
    _, info = train._ngram_weight(right, np.roll(right_logits, 1, axis=1), truth, labels)
    assert info["weight"] == 0.0 and info["file"] is None


def test_eval_measures_the_averaged_probabilities_as_the_desk_applies_them() -> None:
    """An encoder head that cannot tell the intents apart (uniform) beside an n-gram head that
    can: `deskbot nlp eval`'s accuracy as seen is the average's, not the encoder head's."""
    names = tuple(sorted(EXAMPLES))
    blind = LinearHead(names, np.zeros((3, 4), np.float32), np.zeros(3, np.float32))
    words = intent_ngrams.fit(TEXTS, LABELS, c=10.0)
    x = np.ones((len(TEXTS), 4), np.float32)
    alone = intent_figures(blind, 0.0, x, LABELS, x[:2], name="t", accuracy_target="")
    assert alone[1].value == pytest.approx(1 / 3)  # argmax of a tie: the first intent
    averaged = intent_figures(
        blind,
        0.0,
        x,
        LABELS,
        x[:2],
        name="t",
        accuracy_target="",
        words=CompanyWords(words, 0.4, TEXTS, TEXTS[:2]),
    )
    assert averaged[0].value == 1.0 and averaged[1].value == 1.0


def _history(tmp_path: Path) -> Path:
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(TEXTS, LABELS, strict=True))
    return path


@pytest.mark.model
def test_train_writes_the_ngram_head_and_the_desk_averages_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "INTENT_NGRAMS_WEIGHTS", (0.5,))
    out = tmp_path / "head"
    assert main(["train", "--intents", str(_history(tmp_path)), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    info = meta["intent_ngrams"]
    assert info["weight"] == 0.5 and info["file"] == intent_ngrams.NGRAMS_FILE
    assert info["method"] == "5-fold cross-validation (out-of-fold predictions)"
    assert info["held_out_examples"] == len(TEXTS)
    words = intent_ngrams.IntentNgrams.load(out / intent_ngrams.NGRAMS_FILE)
    assert words.head.temperature == pytest.approx(info["temperature"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "reads the words too: `intent-ngrams.npz`" in card and "at weight 0.5" in card

    analyser = TextAnalyser.load(intent_dir=out)
    assert analyser.intent_ngrams is not None and analyser.intent_ngrams[1] == 0.5
    lines = ["I have lost my debit card", "how do I top up my account"]
    shown = analyser.analyse_batch(lines)
    encoder_proba = LinearHead.load(out / "intent.npz").proba(analyser.encoder.encode(lines))
    expected = intent_ngrams.mix(encoder_proba, words.proba(lines), 0.5)
    for analysis, row in zip(shown, expected, strict=True):
        assert analysis.best_intent == words.labels[int(row.argmax())]
        assert analysis.intent_confidence == pytest.approx(float(row.max()), abs=1e-5)
    assert [a.best_intent for a in shown] == ["lost_card", "top_up"]


@pytest.mark.model
def test_a_weight_of_zero_leaves_the_ngram_head_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "INTENT_NGRAMS_WEIGHTS", (0.0,))
    out = tmp_path / "head"
    assert main(["train", "--intents", str(_history(tmp_path)), "--out", str(out)]) == 0
    assert json.loads((out / "meta.json").read_text())["intent_ngrams"]["weight"] == 0.0
    assert not (out / intent_ngrams.NGRAMS_FILE).exists()
    assert "reads the sentence vector only" in (out / "MODEL_CARD.md").read_text()
    assert TextAnalyser.load(intent_dir=out).intent_ngrams is None
