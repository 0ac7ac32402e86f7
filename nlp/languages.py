"""Small heads for languages the English encoder cannot read: character n-grams, linear.

The sentence encoder and its heads are English-only, so a Chinese, Spanish or Russian message
gets no English scores (see :mod:`nlp.service`). Where labelled data in a language exists, a
head on character n-grams (which need no tokeniser and work for Chinese, which has no spaces)
gives that language a sentiment or an anger score of its own; :func:`LanguageHeads.judge` is
the one call that says, for a text and its language, the sentiment, the anger and which model
read them (and how the anger was obtained where the language has no anger head).

The features are computed here by hand rather than with scikit-learn's vectorisers: importing
scikit-learn and SciPy into the desk costs 86 MB of resident memory (measured), for what is a
few lines of hashing. Training still uses scikit-learn's logistic regression. A head is an
``.npz`` of plain arrays (labels, weights, bias, temperature, idf), never a pickle.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nlp.heads import Floats, LinearHead, softmax

# 2**18 columns read 0.006 better on Spanish validation (0.537 against 0.531) but took 52 MB of
# memory for ten heads against 14 MB: the desk's whole budget is 400 MB.
N_FEATURES = 2**16
NGRAMS = (1, 2, 3)
FEATURES = (
    "character 1-3-grams of each space-padded word (scikit-learn's char_wb), CRC-32 hashed to "
    "65,536 columns, sublinear tf × idf, L2-normalised"
)
HEADS = Path(__file__).resolve().parent / "heads"
# Committed: heads from data whose licence allows shipping a model (CEDR, Apache-2.0).
SHIPPED = HEADS / "languages"
# Built on the machine by `deskbot nlp train --languages --research-data` from data whose terms
# do not allow shipping (waimai_10k: no licence; XLM-T's Spanish: research use), git-ignored,
# and loaded by default beside SHIPPED when it is there.
LOCAL = HEADS / "languages-local"
# Where a language has a sentiment head but no anger data, its anger is derived from the
# sentiment: this share of P(negative), so negative sentiment alone never reaches the 0.5 the
# shipped rules flag anger at. It is not a measured anger score, and it says so (anger_source).
DERIVED_ANGER_SHARE = 0.49

Ints = npt.NDArray[np.int64]
Idf = npt.NDArray[Any]  # float32 as loaded (half the memory), float64 as fitted


def ngrams(text: str) -> Iterable[str]:
    """Character 1-3-grams of the lower-cased text, each word padded with spaces (so word
    starts and ends are features; a Chinese sentence is one long "word")."""
    for word in text.casefold().split():
        padded = f" {word} "
        for n in NGRAMS:
            for i in range(len(padded) - n + 1):
                yield padded[i : i + n]


def _counts(text: str) -> dict[int, float]:
    counts: dict[int, float] = {}
    for gram in ngrams(text):
        c = zlib.crc32(gram.encode("utf-8")) % N_FEATURES
        counts[c] = counts.get(c, 0.0) + 1.0
    return counts


def _row(text: str, idf: Idf | None) -> tuple[Ints, Floats]:
    """One text's non-zero columns and values: (1 + log tf) × idf, L2-normalised."""
    counts = _counts(text)
    cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
    vals = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
    if idf is not None and len(cols):
        vals = vals * idf[cols]
    norm = float(np.sqrt((vals**2).sum()))
    return cols, (vals / norm if norm else vals)


def fit_idf(texts: list[str]) -> Floats:
    """scikit-learn's smooth idf, ln((1 + n) / (1 + df)) + 1, per hashed column."""
    df = np.zeros(N_FEATURES, dtype=np.float64)
    for text in texts:
        df[list(_counts(text))] += 1
    out: Floats = np.log((1 + len(texts)) / (1 + df)) + 1
    return out


def features(texts: list[str], idf: Idf | None = None) -> Any:
    """The sparse matrix of :func:`_row` for training (SciPy; the desk never calls this)."""
    from scipy.sparse import csr_matrix

    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        c, v = _row(text, idf)
        rows.extend([r] * len(c))
        cols.extend(c.tolist())
        vals.extend(v.tolist())
    return csr_matrix((vals, (rows, cols)), shape=(len(texts), N_FEATURES), dtype=np.float32)


@dataclass(frozen=True)
class CharHead:
    """A linear head on :func:`features`, scored without SciPy: each text's handful of
    non-zero columns times the weight columns."""

    head: LinearHead
    idf: Idf | None = None

    def proba(self, texts: list[str]) -> Floats:
        logits = np.zeros((len(texts), len(self.head.labels)), dtype=np.float64)
        for r, text in enumerate(texts):
            cols, vals = _row(text, self.idf)
            logits[r] = self.head.weights[:, cols] @ vals + self.head.bias
        return softmax(logits / self.head.temperature)

    def save(self, path: Path) -> None:
        h = self.head
        np.savez_compressed(
            path,
            labels=np.array(h.labels),
            weights=h.weights,
            bias=h.bias,
            temperature=np.array(h.temperature),
            idf=np.zeros(0, np.float32) if self.idf is None else self.idf.astype(np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> CharHead:
        head = LinearHead.load(path)
        with np.load(path, allow_pickle=False) as data:
            idf = data["idf"].astype(np.float32) if "idf" in data.files else None
        if idf is not None and idf.size == 0:
            idf = None
        if head.weights.shape[1] != N_FEATURES or (idf is not None and len(idf) != N_FEATURES):
            raise ValueError(f"{path}: built for other features (rebuild it: see its meta.json)")
        return cls(head, idf)


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a language's own heads read in one text.

    ``anger_source`` says where ``anger`` came from: ``"model"`` (the language's anger head),
    ``"derived: 0.49 × P(negative)"`` (no anger data for it) or None (no anger at all)."""

    language: str
    sentiment: str | None
    sentiment_scores: dict[str, float] | None
    anger: float | None
    anger_source: str | None
    model: str  # "languages-20261207-…:zh-sentiment", the heads that judged it

    def as_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "sentiment": self.sentiment,
            "sentiment_scores": self.sentiment_scores,
            "anger": self.anger,
            "anger_source": self.anger_source,
            "model": self.model,
        }


@dataclass(frozen=True)
class LanguageHeads:
    """Per language, an optional sentiment head and an optional anger head."""

    sentiment: Mapping[str, CharHead]
    anger: Mapping[str, CharHead]
    version: str = ""
    # head name ("zh-sentiment") → the version of the folder it came from
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path | None = None) -> LanguageHeads:
        """``folder``'s heads, or by default the shipped ones and, where it was built, the
        git-ignored local folder (its heads win for a language both have)."""
        folders = [folder] if folder is not None else [SHIPPED, LOCAL]
        sentiment: dict[str, CharHead] = {}
        anger: dict[str, CharHead] = {}
        versions: dict[str, str] = {}
        for path in folders:
            meta_path = path / "meta.json"
            if not meta_path.is_file():
                continue
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            for name, info in meta["heads"].items():
                head = CharHead.load(path / f"{name}.npz")
                (sentiment if info["task"] == "sentiment" else anger)[info["language"]] = head
                # A folder the sandbox added heads to keeps each head's own version.
                versions[name] = str(info.get("version") or meta.get("version", ""))
        version = "+".join(sorted(set(versions.values())))
        return cls(sentiment, anger, version, versions)

    def languages(self) -> set[str]:
        return set(self.sentiment) | set(self.anger)

    def judge(self, texts: list[str], language: str) -> list[Judgement] | None:
        """Sentiment and anger for texts in ``language``, or None without a head for it."""
        s_head, a_head = self.sentiment.get(language), self.anger.get(language)
        if s_head is None and a_head is None:
            return None
        s_proba = s_head.proba(texts) if s_head is not None else None
        a_proba = a_head.proba(texts) if a_head is not None else None
        names = [
            f"{self.versions.get(n, self.version)}:{n}"
            for n, h in ((f"{language}-sentiment", s_head), (f"{language}-anger", a_head))
            if h is not None
        ]
        out = []
        for k in range(len(texts)):
            scores = None
            if s_head is not None and s_proba is not None:
                scores = {label: float(s_proba[k, i]) for i, label in enumerate(s_head.head.labels)}
            anger, source = None, None
            if a_head is not None and a_proba is not None:
                anger, source = float(a_proba[k, a_head.head.labels.index("anger")]), "model"
            elif scores is not None and "negative" in scores:
                anger = DERIVED_ANGER_SHARE * scores["negative"]
                source = f"derived: {DERIVED_ANGER_SHARE:g} × P(negative)"
            out.append(
                Judgement(
                    language,
                    max(scores, key=lambda key: scores[key]) if scores else None,
                    scores,
                    anger,
                    source,
                    " + ".join(names),
                )
            )
        return out


def judge(text: str, language: str, heads: LanguageHeads | None = None) -> Judgement | None:
    """One text in ``language`` (zh, es, ru, …) through that language's own heads (the default
    ones unless ``heads``), or None when there is none for it. No PyTorch, no scikit-learn."""
    found = (heads or _default()).judge([text], language)
    return found[0] if found else None


_DEFAULT: list[LanguageHeads] = []


def _default() -> LanguageHeads:
    if not _DEFAULT:
        _DEFAULT.append(LanguageHeads.load())
    return _DEFAULT[0]


def fit_char_head(
    texts: list[str], labels: list[str], *, c: float = 4.0, balanced: bool = True
) -> CharHead:
    """A logistic regression on :func:`features` with the idf of ``texts``."""
    from sklearn.linear_model import LogisticRegression

    idf = fit_idf(texts)
    names = tuple(sorted(set(labels)))
    clf: Any = LogisticRegression(C=c, max_iter=3000, class_weight="balanced" if balanced else None)
    clf.fit(features(texts, idf), labels)
    coef = np.asarray(clf.coef_, dtype=np.float32)
    intercept = np.asarray(clf.intercept_, dtype=np.float32)
    if len(names) == 2:
        coef = np.vstack([-coef / 2, coef / 2]).astype(np.float32)
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2], dtype=np.float32)
    return CharHead(LinearHead(names, coef, intercept), idf)


def with_temperature(head: CharHead, texts: list[str], labels: list[str]) -> CharHead:
    """The head with a softmax temperature fitted on these held-out texts."""
    from nlp.heads import temperature_for

    index = {label: i for i, label in enumerate(head.head.labels)}
    x = features(texts, head.idf)
    logits = np.asarray(x @ head.head.weights.T + head.head.bias, dtype=np.float64)
    t = temperature_for(logits, np.array([index[y] for y in labels]))
    h = head.head
    return CharHead(LinearHead(h.labels, h.weights, h.bias, t), head.idf)
