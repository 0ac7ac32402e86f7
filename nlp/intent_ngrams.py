"""A company intent head's second reader: the words and word pieces of the message itself.

The frozen encoder's pooled features blur the words that tell two banking intents apart
("top up" by card or by bank transfer, "pending" against "declined"); a linear model on the
message's word 1-2-grams and character 2-5-grams within words reads them. Its calibrated
probabilities are averaged with the encoder head's (:func:`mix`), at a weight chosen when the
head is trained, on examples neither head fitted (``nlp/train.py``, ``train_intent_head``).

Like :mod:`nlp.languages`, the features are hashed by hand (CRC-32) so the desk scores them
with numpy alone: no scikit-learn or SciPy at run time. A head is an ``.npz`` of plain arrays
(labels, weights as float16, bias, temperature, idf), never a pickle.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nlp.heads import Floats, LinearHead, softmax, temperature_for

NGRAMS_FILE = "intent-ngrams.npz"
# Hashed columns. Measured on Banking77's tune tenth (the encoder head's probabilities averaged
# with this head's, full training part): see nlp/train.py, INTENT_NGRAMS_*.
N_FEATURES = 2**14
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 3, 4, 5)
FEATURES = (
    "word 1-2-grams and character 2-5-grams of each space-padded word, CRC-32 hashed to "
    f"{N_FEATURES:,} columns, sublinear tf × idf, each block L2-normalised"
)
_WORD = re.compile(r"(?u)\b\w\w+\b")

Ints = npt.NDArray[np.int64]


def grams(text: str) -> tuple[list[str], list[str]]:
    """(word grams, character grams) of the lower-cased text."""
    folded = text.casefold()
    words = _WORD.findall(folded)
    word_grams = [
        " ".join(words[i : i + n]) for n in WORD_NGRAMS for i in range(len(words) - n + 1)
    ]
    char_grams: list[str] = []
    for word in folded.split():
        padded = f" {word} "
        for n in CHAR_NGRAMS:
            char_grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return word_grams, char_grams


def _hashed(items: Iterable[str], prefix: str) -> dict[int, float]:
    counts: dict[int, float] = {}
    for item in items:
        c = zlib.crc32((prefix + item).encode("utf-8")) % N_FEATURES
        counts[c] = counts.get(c, 0.0) + 1.0
    return counts


def _block(counts: dict[int, float], idf: Floats | None) -> tuple[Ints, Floats]:
    cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
    vals = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
    if idf is not None and len(cols):
        vals = vals * idf[cols]
    norm = float(np.sqrt((vals**2).sum()))
    return cols, (vals / norm if norm else vals)


def row(text: str, idf: Floats | None) -> tuple[Ints, Floats]:
    """One text's non-zero columns and values (a column hit by both blocks appears twice:
    summed by the dot product, as in a sparse matrix)."""
    word_grams, char_grams = grams(text)
    wc, wv = _block(_hashed(word_grams, "w:"), idf)
    cc, cv = _block(_hashed(char_grams, "c:"), idf)
    return np.concatenate([wc, cc]), np.concatenate([wv, cv])


def fit_idf(texts: list[str]) -> Floats:
    """scikit-learn's smooth idf, ln((1 + n) / (1 + df)) + 1, per hashed column."""
    df = np.zeros(N_FEATURES, dtype=np.float64)
    for text in texts:
        word_grams, char_grams = grams(text)
        df[list(set(_hashed(word_grams, "w:")) | set(_hashed(char_grams, "c:")))] += 1
    out: Floats = np.log((1 + len(texts)) / (1 + df)) + 1
    return out


def features(texts: list[str], idf: Floats | None) -> Any:
    """The sparse matrix of :func:`row` for training (SciPy; the desk never calls this)."""
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        c, v = row(text, idf)
        rows.extend([r] * len(c))
        cols.extend(c.tolist())
        vals.extend(v.tolist())
    return csr_matrix((vals, (rows, cols)), shape=(len(texts), N_FEATURES), dtype=np.float32)


@dataclass(frozen=True)
class IntentNgrams:
    """A linear head on :func:`features`, scored without SciPy."""

    head: LinearHead
    idf: Floats

    @property
    def labels(self) -> tuple[str, ...]:
        return self.head.labels

    def logits(self, texts: list[str]) -> Floats:
        out = np.zeros((len(texts), len(self.head.labels)), dtype=np.float64)
        for r, text in enumerate(texts):
            cols, vals = row(text, self.idf)
            out[r] = self.head.weights[:, cols].astype(np.float64) @ vals + self.head.bias
        return out

    def proba(self, texts: list[str]) -> Floats:
        return softmax(self.logits(texts) / self.head.temperature)

    def with_temperature(self, logits: Floats, labels: list[str]) -> IntentNgrams:
        """The head with its temperature fitted on these held-out rows' ``logits``."""
        index = {label: i for i, label in enumerate(self.head.labels)}
        t = temperature_for(logits, np.array([index[y] for y in labels]))
        h = self.head
        return IntentNgrams(LinearHead(h.labels, h.weights, h.bias, t), self.idf)

    def save(self, path: Path) -> None:
        h = self.head
        np.savez_compressed(
            path,
            labels=np.array(h.labels),
            weights=h.weights.astype(np.float16),  # half the size; measured no change
            bias=h.bias,
            temperature=np.array(h.temperature),
            idf=self.idf.astype(np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> IntentNgrams:
        with np.load(path, allow_pickle=False) as data:
            head = LinearHead(
                labels=tuple(str(x) for x in data["labels"]),
                # float16 as stored: 77 intents × 32,768 columns is 5 MB, not 10
                weights=data["weights"],
                bias=data["bias"].astype(np.float32),
                temperature=float(data["temperature"]),
            )
            idf = data["idf"].astype(np.float64)
        if head.weights.shape[1] != N_FEATURES or len(idf) != N_FEATURES:
            raise ValueError(f"{path}: built for other features (retrain the intent head)")
        return cls(head, idf)


def fit(texts: list[str], labels: list[str], *, c: float) -> IntentNgrams:
    """A multinomial logistic regression on :func:`features` with the idf of ``texts`` (no
    temperature yet: see :meth:`IntentNgrams.with_temperature`)."""
    from sklearn.linear_model import LogisticRegression

    idf = fit_idf(texts)
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise ValueError("need examples of at least two intents")
    clf: Any = LogisticRegression(C=c, max_iter=3000)
    clf.fit(features(texts, idf), labels)
    coef = np.asarray(clf.coef_, dtype=np.float32)
    intercept = np.asarray(clf.intercept_, dtype=np.float32)
    if len(names) == 2:
        coef = np.vstack([-coef / 2, coef / 2]).astype(np.float32)
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    assert tuple(str(x) for x in clf.classes_) == names
    return IntentNgrams(LinearHead(names, coef, intercept), idf)


def mix(encoder_proba: Floats, ngram_proba: Floats, weight: float) -> Floats:
    """(1 - weight) · the encoder head's probabilities + weight · this head's."""
    out: Floats = (1 - weight) * encoder_proba + weight * ngram_proba
    return out
