"""Small heads for languages the English encoder cannot read: character n-grams, linear.

The sentence encoder and its heads are English-only, so a Chinese, Spanish or Russian message
gets no English scores (see :mod:`nlp.service`). Where labelled data in a language exists, a
head on character n-grams (which need no tokeniser and work for Chinese, which has no spaces)
gives that language a sentiment or an anger score of its own.

The features are computed here by hand rather than with scikit-learn's HashingVectorizer:
importing scikit-learn and SciPy into the desk costs 86 MB of resident memory (measured), for
what is a few lines of hashing. Training still uses scikit-learn's logistic regression.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlp.heads import Floats, LinearHead

N_FEATURES = 2**16
NGRAMS = (1, 2, 3)
SHIPPED = Path(__file__).resolve().parent / "heads" / "languages"


def ngrams(text: str) -> Iterable[str]:
    """Character 1-3-grams of the lower-cased text, each word padded with spaces (so word
    starts and ends are features; a Chinese sentence is one long "word")."""
    for word in text.casefold().split():
        padded = f" {word} "
        for n in NGRAMS:
            for i in range(len(padded) - n + 1):
                yield padded[i : i + n]


def features(texts: list[str]) -> Any:
    """An L2-normalised sparse matrix of hashed n-gram counts (CRC-32 is stable across runs
    and machines, unlike Python's ``hash``)."""
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        counts = _counts(text)
        norm = float(np.sqrt(sum(v * v for v in counts.values()))) or 1.0
        for c, v in counts.items():
            rows.append(r)
            cols.append(c)
            vals.append(v / norm)
    return csr_matrix((vals, (rows, cols)), shape=(len(texts), N_FEATURES), dtype=np.float32)


def _counts(text: str) -> dict[int, float]:
    counts: dict[int, float] = {}
    for gram in ngrams(text):
        c = zlib.crc32(gram.encode("utf-8")) % N_FEATURES
        counts[c] = counts.get(c, 0.0) + 1.0
    return counts


@dataclass(frozen=True)
class CharHead:
    """A linear head on :func:`features`, scored without SciPy: each text's handful of
    non-zero columns times the weight columns."""

    head: LinearHead

    def proba(self, texts: list[str]) -> Floats:
        logits = np.zeros((len(texts), len(self.head.labels)), dtype=np.float64)
        for r, text in enumerate(texts):
            counts = _counts(text)
            if not counts:
                logits[r] = self.head.bias
                continue
            cols = np.fromiter(counts, dtype=np.int64)
            vals = np.fromiter(counts.values(), dtype=np.float64)
            vals /= np.sqrt((vals**2).sum())
            logits[r] = self.head.weights[:, cols] @ vals + self.head.bias
        from nlp.heads import softmax

        return softmax(logits / self.head.temperature)


@dataclass(frozen=True)
class LanguageHeads:
    """Per language, an optional sentiment head and an optional anger head."""

    sentiment: Mapping[str, CharHead]
    anger: Mapping[str, CharHead]
    version: str = ""

    @classmethod
    def load(cls, folder: Path | None = None) -> LanguageHeads:
        folder = folder or SHIPPED
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return cls({}, {})
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        sentiment: dict[str, CharHead] = {}
        anger: dict[str, CharHead] = {}
        for name, info in meta["heads"].items():
            head = CharHead(LinearHead.load(folder / f"{name}.npz"))
            (sentiment if info["task"] == "sentiment" else anger)[info["language"]] = head
        return cls(sentiment, anger, str(meta.get("version", "")))

    def languages(self) -> set[str]:
        return set(self.sentiment) | set(self.anger)


def fit_char_head(
    texts: list[str], labels: list[str], *, c: float = 4.0, balanced: bool = True
) -> LinearHead:
    from sklearn.linear_model import LogisticRegression

    names = tuple(sorted(set(labels)))
    clf: Any = LogisticRegression(C=c, max_iter=3000, class_weight="balanced" if balanced else None)
    clf.fit(features(texts), labels)
    coef = np.asarray(clf.coef_, dtype=np.float32)
    intercept = np.asarray(clf.intercept_, dtype=np.float32)
    if len(names) == 2:
        coef = np.vstack([-coef / 2, coef / 2]).astype(np.float32)
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    return LinearHead(names, coef, intercept)
