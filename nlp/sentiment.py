"""The English sentiment the desk reads: the encoder head, blended with a word-piece one.

The sentence encoder's sentiment head (``sentiment.npz``) is blended with a linear head on
character n-grams of the text itself (``sentiment-ngrams.npz``, the features of
:mod:`nlp.languages`) where the heads folder has one: a weighted geometric mean of the two
calibrated distributions, renormalised. The n-gram head reads the words ("worst", "luv",
"!!!") that the frozen encoder's pooled features blur; on the SemEval pool's calibration tenth
the blend scored macro-recall 0.697 against 0.688 for the encoder head alone (TweetEval
validation: 0.710 against 0.697). Chosen there: the n-gram head's C and the blend's weight
(``nlp/train.py``, SENTIMENT_NGRAMS_C and SENTIMENT_NGRAMS_WEIGHT).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlp.encoder import Vectors
from nlp.heads import Floats, LinearHead, softmax
from nlp.languages import CharHead

NGRAMS_FILE = "sentiment-ngrams.npz"


def blend(encoder_proba: Floats, ngram_proba: Floats, weight: float) -> Floats:
    """softmax((1 - weight) · log p + weight · log q): both heads' votes, in proportion."""
    mixed = (1 - weight) * np.log(encoder_proba + 1e-12) + weight * np.log(ngram_proba + 1e-12)
    return softmax(mixed)


@dataclass(frozen=True)
class Sentiment:
    head: LinearHead
    ngrams: CharHead | None = None
    weight: float = 0.0

    @property
    def labels(self) -> tuple[str, ...]:
        return self.head.labels

    def proba(self, vectors: Vectors, texts: list[str]) -> Floats:
        """P(label) per text, from its encoder ``vectors`` and (for the n-gram head) itself."""
        p = self.head.proba(vectors)
        if self.ngrams is None or self.weight <= 0:
            return p
        return blend(p, self.ngrams.proba(texts), self.weight)

    @classmethod
    def load(cls, folder: Path, meta: Mapping[str, Any]) -> Sentiment:
        """``folder``'s sentiment head, with its n-gram head where meta.json names one."""
        head = LinearHead.load(folder / "sentiment.npz")
        ngrams = meta.get("sentiment_ngrams")
        if not ngrams or not (folder / NGRAMS_FILE).is_file():
            return cls(head)
        char = CharHead.load(folder / NGRAMS_FILE)
        if char.head.labels != head.labels:
            raise ValueError(f"{folder / NGRAMS_FILE}: labels {char.head.labels} != {head.labels}")
        return cls(head, char, float(ngrams["weight"]))
