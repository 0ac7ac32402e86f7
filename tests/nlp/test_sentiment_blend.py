"""The English sentiment the desk shows: the encoder head blended with the n-gram head.

These load the real encoder and the shipped heads (nlp/heads/default)."""

from __future__ import annotations

import numpy as np
import pytest

from nlp.evaluate import TARGET_ROWS, Figure, targets
from nlp.sentiment import Sentiment, blend
from nlp.service import DEFAULT_HEADS, TextAnalyser, read_meta


def test_the_blend_is_a_weighted_vote_of_both_heads() -> None:
    p = np.array([[0.7, 0.2, 0.1]])
    q = np.array([[0.1, 0.2, 0.7]])
    assert np.allclose(blend(p, q, 0.0), p)
    assert np.allclose(blend(p, q, 1.0), q)
    even = blend(p, q, 0.5)
    assert np.isclose(even.sum(), 1.0) and np.isclose(even[0, 0], even[0, 2])
    assert blend(p, q, 0.4)[0].argmax() == 0  # the encoder head weighs more at 0.4


@pytest.mark.model
def test_the_desk_shows_the_blended_sentiment_of_the_shipped_heads() -> None:
    meta = read_meta(DEFAULT_HEADS)
    sentiment = Sentiment.load(DEFAULT_HEADS, meta)
    assert sentiment.ngrams is not None and sentiment.weight == meta["sentiment_ngrams"]["weight"]
    analyser = TextAnalyser.load()
    texts = [
        "worst customer service ever!!! never buying from you again",
        "Thank you so much, the replacement arrived today and it works perfectly :)",
        "what time does the store open on Sunday",
    ]
    shown = analyser.analyse_batch(texts)
    assert [a.sentiment for a in shown] == ["negative", "positive", "neutral"]
    expected = sentiment.proba(analyser.encoder.encode(texts), texts)
    for analysis, row in zip(shown, expected, strict=True):
        assert analysis.sentiment_scores is not None
        got = [analysis.sentiment_scores[label] for label in sentiment.labels]
        assert np.allclose(got, row, atol=1e-4)
    # the blend moves the scores off the encoder head's own
    alone = sentiment.head.proba(analyser.encoder.encode(texts))
    assert not np.allclose(alone, expected, atol=1e-3)


def test_the_targets_table_lists_the_measured_rows_in_the_issues_order() -> None:
    measured = [
        Figure("deskbot run resident memory, MB", 390.0, "≤ 400"),
        Figure("sentiment macro-recall, TweetEval validation", 0.71, "≥ 0.70"),
        Figure("sentiment calibration error (ECE)", 0.02),
        Figure("zh sentiment macro-recall", float("nan"), "≥ 0.80", "no head"),
        Figure("zh sentiment macro-recall, English heads, waimai_10k sample", 0.5),
    ]
    table = targets(measured)
    assert [f.name for f in table] == [
        "zh sentiment macro-recall",
        "sentiment macro-recall, TweetEval validation",
        "deskbot run resident memory, MB",
    ]
    assert [f.verdict for f in table] == ["NOT MET", "met", "met"]
    assert len(set(TARGET_ROWS)) == len(TARGET_ROWS)
