"""Honest abstention: a head's ``other`` threshold is calibrated when it is trained, on examples
it did not fit, so that at most 3% of in-scope messages are answered ``other``; the threshold
lands in the head's meta.json, and classify still shows the best intent and its score."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlp import data, train
from nlp.cli import classify, main
from nlp.heads import CENTROIDS_FILE, IntentCentroids
from nlp.service import OTHER, TextAnalyser

ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = {
    "lost_card": [
        "I lost my card",
        "my card is missing",
        "I can't find my bank card",
        "card lost yesterday",
        "someone has my card, I lost it",
        "where is my card, I think I dropped it",
    ],
    "exchange_rate": [
        "what is the exchange rate",
        "how much is a euro in dollars",
        "which rate do you use to convert currency",
        "exchange rate today",
        "conversion rate for pounds",
        "is your currency rate fair",
    ],
    "top_up": [
        "how do I top up",
        "add money to my account",
        "top up with a card",
        "my top up failed",
        "can I top up by bank transfer",
        "topping up does not work",
    ],
}


def test_the_threshold_leaves_at_most_three_percent_below_it() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.05, 1.0, size=1000)
    t = train.other_threshold(confidence)
    assert (confidence < t).mean() <= 0.03
    # …and it is the highest such threshold: the next confidence up would leave more than 3%.
    above = np.sort(confidence)[np.searchsorted(np.sort(confidence), t, side="right")]
    assert (confidence < above).mean() > 0.03
    with pytest.raises(ValueError, match="no held-out examples"):
        train.other_threshold(np.array([]))


@pytest.mark.model
def test_train_calibrates_the_threshold_and_writes_it_to_meta_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A company head: the threshold is set on the score that mixes its probability with the
    nearest intent centroid's cosine, out of fold, at 1% of in-scope examples."""
    chosen: list[float] = []
    calibrate = train.other_threshold

    def spy(score: Any, max_other: float = train.MAX_IN_SCOPE_OTHER) -> float:
        assert max_other == train.CENTROID_MAX_OTHER
        chosen.append(calibrate(score, max_other))
        assert len(score) == sum(len(v) for v in EXAMPLES.values())  # every example once
        return chosen[-1]

    monkeypatch.setattr(train, "other_threshold", spy)
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for label, texts in EXAMPLES.items():
            w.writerows([t, label] for t in texts)
    out = tmp_path / "head"
    assert main(["train", "--intents", str(path), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert chosen and meta["other_below"] == round(chosen[0], 6)
    assert meta["other_calibration"] == {
        "method": "5-fold cross-validation",
        "score": "0.2 × P(best intent) + 0.8 × cosine to the nearest intent centroid",
        "held_out_examples": 18,
        "max_in_scope_other": 0.01,
        "calibrated": round(chosen[0], 6),
        "capped_at": None,
        "in_scope_other_on_calibration": 0.0,  # 18 examples: 1% of them is less than one
    }
    centroids = IntentCentroids.load(out / CENTROIDS_FILE)
    assert centroids.labels == tuple(sorted(EXAMPLES)) and centroids.weight == 0.2
    card = (out / "MODEL_CARD.md").read_text()
    assert f"is below {meta['other_below']:.4f}" in card

    # What the customer's card shows: the calibrated threshold decides on the combined score,
    # and the best intent and its score are there either way.
    analyser = TextAnalyser.load(intent_dir=out)
    assert analyser.other_below == meta["other_below"] and analyser.centroids is not None
    stdout = io.StringIO()
    lines = ["I have lost my debit card", "the weather is nice in Lisbon today, isn't it"]
    classify(
        io.StringIO("".join(json.dumps({"text": t}) + "\n" for t in lines)),
        stdout,
        model=None,
        rules_path=tmp_path / "none.yaml",
        analyser=analyser,
    )
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert rows[0]["intent"] == rows[0]["best_intent"] == "lost_card"
    assert rows[1]["intent"] == OTHER  # far from every intent's examples
    sentences = analyser.encoder.sentence(analyser.encoder.encode(lines))
    for row, sentence in zip(rows, sentences, strict=True):
        assert row["best_intent"] in EXAMPLES
        score = centroids.score(np.array([row["intent_confidence"]]), sentence[None, :])[0]
        assert row["intent"] == (OTHER if score < meta["other_below"] else row["best_intent"])


def test_the_centroid_score_mixes_probability_and_the_nearest_centroid() -> None:
    sentences = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    c = IntentCentroids.fit(sentences[:2], ["a", "a"])
    assert c.labels == ("a",) and np.isclose(np.linalg.norm(c.vectors[0]), 1)
    near = c.nearest(sentences)
    assert near[0] > 0.99 and near[2] == pytest.approx(0.0, abs=1e-6)
    # a sure softmax far from every intent's examples still scores low
    score = c.score(np.array([1.0, 1.0, 1.0]), sentences)
    assert score[2] == pytest.approx(0.2) and score[0] > 0.99


@pytest.mark.model
def test_a_ten_per_intent_banking77_head_answers_nearly_every_in_scope_question() -> None:
    """Issue 11: with the fixed 0.5 threshold, 37% of in-scope Banking77 questions got `other`
    from a 10-per-intent head. Measured on the fifth of the train file held out by the md5 rule
    (the head never sees it): now about 2.5%."""
    try:
        fit, held = data.banking77()
    except FileNotFoundError:
        pytest.skip(f"Banking77 is not in {data.data_dir()}")
    analyser = TextAnalyser.load()
    head, abstention = train.train_intent_head(
        analyser.encoder, *train.sample_per_class(fit.texts, fit.labels, 10)
    )
    assert abstention["other_calibration"]["method"] == "5-fold cross-validation"
    proba = head.proba(train.embed(analyser.encoder, held.texts))
    other = float((proba.max(axis=1) < abstention["other_below"]).mean())
    assert other <= 0.04
    shown = (proba.argmax(axis=1) == [head.labels.index(y) for y in held.labels]) & (
        proba.max(axis=1) >= abstention["other_below"]
    )
    assert shown.mean() >= 0.80  # right as the user sees it: abstentions count as wrong
