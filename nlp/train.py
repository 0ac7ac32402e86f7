"""Training the heads: the shipped defaults (``nlp/heads/default``) and a company's intent head.

Reproducible: the data are read in a fixed order, splits are by md5 of the text, and
scikit-learn's lbfgs solver is deterministic. ``deskbot nlp train --defaults`` rebuilds the
shipped heads; ``deskbot nlp train --intents FILE.csv ...`` builds a company intent head.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from nlp import data
from nlp.encoder import Encoder, Vectors
from nlp.heads import Floats, LinearHead, fit_head, softmax, temperature_for
from nlp.service import DEFAULT_HEADS

# The share of in-scope messages a head may answer "other": its threshold is set, when it is
# trained, so that no more than this share of held-out in-scope examples fall below it.
MAX_IN_SCOPE_OTHER = 0.03
# Fewer examples than this for some intent, and a held-out tenth would leave it with nothing to
# learn from: the threshold then comes from cross-validation instead.
HOLD_OUT_FROM = 20
FOLDS = 5
SENTIMENT_C = 1.0
ANGER_C = 1.0
INTENT_C = 10.0


def embed(encoder: Encoder, texts: list[str], *, cache: bool = True) -> Vectors:
    """Encode, caching by encoder and text list under .cache/ (training reruns are cheap)."""
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    layers = "_".join(str(n) for n in encoder.layers)
    # int8 features differ by backend (PyTorch's and ONNX Runtime's quantisation are not alike)
    kind = (
        f"int8{'' if encoder.backend == 'torch' else '-' + encoder.backend}"
        if encoder.quantized
        else "f32"
    )
    tag = f"{encoder.fingerprint}-{kind}-L{layers}-{digest}"
    path = data.REPO / ".cache" / "vectors" / f"{tag}.npy"
    if cache and path.is_file():
        cached: Vectors = np.load(path)
        return cached
    vectors = encoder.encode(texts)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def _split(split: data.Split, percent: int, salt: str = "") -> tuple[data.Split, data.Split]:
    """(train, calibration): the calibration part is md5 bucket < percent.

    A ``salt`` draws the buckets afresh: a company's file may itself be what is left after the
    md5 rule took its held-out part (Banking77's here), which would leave nothing unsalted."""
    pairs = list(zip(split.texts, split.labels, strict=True))
    cal = [(t, y) for t, y in pairs if data.bucket(salt + t) < percent]
    fit = [(t, y) for t, y in pairs if data.bucket(salt + t) >= percent]
    return (
        data.Split(split.name + "/fit", [t for t, _ in fit], [y for _, y in fit]),
        data.Split(split.name + "/calibration", [t for t, _ in cal], [y for _, y in cal]),
    )


def train_calibrated(
    encoder: Encoder, split: data.Split, *, c: float, balanced: bool
) -> LinearHead:
    return _fit_held_out(encoder, split, c=c, balanced=balanced)[0]


def _fit_held_out(
    encoder: Encoder, split: data.Split, *, c: float, balanced: bool = False, salt: str = ""
) -> tuple[LinearHead, Vectors, list[str]]:
    """A head on 90% (md5 rule), its temperature fitted on the other 10%, which it returns."""
    fit, cal = _split(split, 10, salt)
    cal_x = embed(encoder, cal.texts)
    head = fit_head(
        embed(encoder, fit.texts), fit.labels, c=c, balanced=balanced, calibrate=(cal_x, cal.labels)
    )
    return head, cal_x, cal.labels


def other_threshold(confidence: Floats, max_other: float = MAX_IN_SCOPE_OTHER) -> float:
    """The highest threshold that leaves at most ``max_other`` of these (in-scope, held-out)
    confidences below it: the k-th smallest, with k = floor(max_other * n)."""
    if len(confidence) == 0:
        raise ValueError("no held-out examples to calibrate the 'other' threshold on")
    ordered = np.sort(confidence)
    return float(ordered[int(np.floor(max_other * len(ordered)))])


def train_intent_head(
    encoder: Encoder, texts: list[str], labels: list[str], *, c: float = INTENT_C
) -> tuple[LinearHead, dict[str, Any]]:
    """An intent head and its ``other`` threshold, both chosen on examples it did not fit.

    With at least :data:`HOLD_OUT_FROM` examples of every intent, a tenth is held out (md5
    rule): it sets the temperature and the threshold. With fewer, ``FOLDS``-fold stratified
    cross-validation predicts every example from a head that did not see it; the temperature
    and threshold are set on those predictions and the final head is fitted on everything.
    The final head has seen more than the fold heads, so it is, if anything, surer of
    in-scope messages: the in-scope ``other`` rate stays at or under the target.
    """
    counts: dict[str, int] = defaultdict(int)
    for y in labels:
        counts[y] += 1
    if len(counts) < 2:
        raise ValueError("need examples of at least two intents")
    if min(counts.values()) >= HOLD_OUT_FROM:
        head, cal_x, _ = _fit_held_out(
            encoder, data.Split("intents", texts, labels), c=c, salt="other:"
        )
        confidence = head.proba(cal_x).max(axis=1)
        method = "a held-out tenth of the examples (salted md5 rule)"
    else:
        from sklearn.model_selection import StratifiedKFold

        x = embed(encoder, texts, cache=False)
        folds = max(2, min(FOLDS, min(counts.values())))
        logits = np.zeros((len(texts), len(counts)), dtype=np.float64)
        classes = np.array(labels)
        for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=0).split(
            x, classes
        ):
            fold = fit_head(x[fit_rows], [labels[i] for i in fit_rows], c=c)
            if fold.labels != tuple(sorted(counts)):
                raise ValueError("every intent needs at least two examples")
            logits[held_rows] = fold.logits(x[held_rows])
        index = {label: i for i, label in enumerate(sorted(counts))}
        target = np.array([index[label] for label in labels])
        temperature = temperature_for(logits, target)
        confidence = softmax(logits / temperature).max(axis=1)
        full = fit_head(x, labels, c=c)
        head = LinearHead(full.labels, full.weights, full.bias, temperature)
        method = f"{folds}-fold cross-validation"
    threshold = other_threshold(confidence)
    calibration = {
        "method": method,
        "held_out_examples": len(confidence),
        "max_in_scope_other": MAX_IN_SCOPE_OTHER,
        "in_scope_other_on_calibration": round(float((confidence < threshold).mean()), 4),
    }
    return head, {"other_below": round(threshold, 6), "other_calibration": calibration}


def train_defaults(encoder: Encoder, out: Path = DEFAULT_HEADS) -> dict[str, Any]:
    """Sentiment (SemEval pool), anger (GoEmotions) and the 27 Bitext intents."""
    validation = data.tweeteval("tweeteval_sentiment")
    # TweetEval's validation tweets were drawn from this pool: keep them out of training.
    held = {" ".join(t.casefold().split()) for t in validation.texts}
    pool = data.semeval_pool(exclude=held)
    sentiment = train_calibrated(encoder, pool, c=SENTIMENT_C, balanced=True)
    anger_train, anger_dev = data.goemotions_anger("train"), data.goemotions_anger("dev")
    anger = fit_head(
        embed(encoder, anger_train.texts),
        anger_train.labels,
        c=ANGER_C,
        calibrate=(embed(encoder, anger_dev.texts), anger_dev.labels),
    )
    bitext = data.bitext("Training")
    intent, abstention = train_intent_head(encoder, bitext.texts, bitext.labels)
    out.mkdir(parents=True, exist_ok=True)
    sentiment.save(out / "sentiment.npz")
    anger.save(out / "anger.npz")
    intent.save(out / "intent.npz")
    meta = _meta(
        encoder,
        name="default",
        command="deskbot nlp train --defaults"
        + (" --int8" if encoder.quantized else "")
        + ("" if out == DEFAULT_HEADS else f" --out {out}"),
        sources={
            "sentiment": f"{pool.name} ({len(pool.texts)} texts, TweetEval validation removed)",
            "anger": f"{anger_train.name} ({len(anger_train.texts)} texts; dev for calibration)",
            "intent": f"bitext/training ({len(bitext.texts)} texts)",
        },
        heads={"sentiment": sentiment, "anger": anger, "intent": intent},
        abstention=abstention,
    )
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def train_intents(
    encoder: Encoder,
    texts: list[str],
    labels: list[str],
    out: Path,
    *,
    per_class: int | None = None,
    source: str = "",
    seed: int = 0,
) -> dict[str, Any]:
    """A company intent head from labelled examples (optionally N per intent)."""
    if per_class is not None:
        texts, labels = sample_per_class(texts, labels, per_class, seed=seed)
    by_label: dict[str, int] = defaultdict(int)
    for y in labels:
        by_label[y] += 1
    head, abstention = train_intent_head(encoder, texts, labels)
    out.mkdir(parents=True, exist_ok=True)
    head.save(out / "intent.npz")
    command = f"deskbot nlp train --intents {source}"
    if per_class is not None:
        command += f" --per-class {per_class}"
    meta = _meta(
        encoder,
        name=out.name,
        command=command,
        sources={"intent": f"{source} ({len(texts)} examples, {len(by_label)} intents)"},
        heads={"intent": head},
        abstention=abstention,
    )
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(_company_card(meta, by_label), encoding="utf-8")
    return meta


def _company_card(meta: dict[str, Any], counts: dict[str, int]) -> str:
    rows = "\n".join(f"| {label} | {n} |" for label, n in sorted(counts.items()))
    cal = meta["other_calibration"]
    return f"""# Intent head {meta["name"]}

- version: `{meta["version"]}`
- encoder: {meta["encoder"]} (`{meta["encoder_fingerprint"]}`, int8: {meta["quantized"]})
- data: {meta["sources"]["intent"]} — the company's own examples, under the company's terms
- training command: `{meta["training_command"]}`
- answers `other` below confidence {meta["other_below"]:.4f}, the threshold that leaves at most
  {cal["max_in_scope_other"]:.0%} of in-scope examples unanswered, set on
  {cal["held_out_examples"]} examples by {cal["method"]}
  ({cal["in_scope_other_on_calibration"]:.1%} of them fall below it)
- measure it: hold some labelled examples back and run them through `deskbot nlp classify --model`

| intent | examples |
|---|---|
{rows}
"""


def sample_per_class(
    texts: list[str], labels: list[str], n: int, *, seed: int = 0
) -> tuple[list[str], list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for t, y in zip(texts, labels, strict=True):
        grouped[y].append(t)
    rng = random.Random(seed)
    out_t: list[str] = []
    out_y: list[str] = []
    for y in sorted(grouped):
        picked = rng.sample(grouped[y], min(n, len(grouped[y])))
        out_t += picked
        out_y += [y] * len(picked)
    return out_t, out_y


def _meta(
    encoder: Encoder,
    *,
    name: str,
    command: str,
    sources: dict[str, str],
    heads: dict[str, LinearHead],
    abstention: dict[str, Any],
) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    digest = hashlib.sha256()
    for key in sorted(heads):
        digest.update(heads[key].weights.tobytes())
    return {
        "name": name,
        "version": f"{name}-{stamp}-{digest.hexdigest()[:8]}",
        "encoder": str(encoder.path.name if encoder.path.name != "model" else "all-MiniLM-L6-v2"),
        "encoder_fingerprint": encoder.fingerprint,
        "quantized": encoder.quantized,
        "layers": list(encoder.layers),
        "training_command": command,
        "sources": sources,
        **abstention,
        "heads": {
            key: {"labels": list(h.labels), "temperature": round(h.temperature, 4)}
            for key, h in heads.items()
        },
    }
