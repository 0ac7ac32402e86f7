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
from nlp.heads import LinearHead, fit_head
from nlp.service import DEFAULT_HEADS

# Below this calibrated confidence the intent is "other". Chosen on CLINC150's out-of-scope
# validation queries against Bitext's own validation split (see MODEL_CARD.md).
OTHER_BELOW = 0.5
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


def _split(split: data.Split, percent: int) -> tuple[data.Split, data.Split]:
    """(train, calibration): the calibration part is md5 bucket < percent."""
    pairs = list(zip(split.texts, split.labels, strict=True))
    cal = [(t, y) for t, y in pairs if data.bucket(t) < percent]
    fit = [(t, y) for t, y in pairs if data.bucket(t) >= percent]
    return (
        data.Split(split.name + "/fit", [t for t, _ in fit], [y for _, y in fit]),
        data.Split(split.name + "/calibration", [t for t, _ in cal], [y for _, y in cal]),
    )


def train_calibrated(
    encoder: Encoder, split: data.Split, *, c: float, balanced: bool
) -> LinearHead:
    fit, cal = _split(split, 10)
    return fit_head(
        embed(encoder, fit.texts),
        fit.labels,
        c=c,
        balanced=balanced,
        calibrate=(embed(encoder, cal.texts), cal.labels),
    )


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
    intent = train_calibrated(encoder, data.bitext("Training"), c=INTENT_C, balanced=False)
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
            "intent": f"bitext/training ({len(data.bitext('Training').texts)} texts)",
        },
        heads={"sentiment": sentiment, "anger": anger, "intent": intent},
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
    if len(by_label) < 2:
        raise ValueError("need examples of at least two intents")
    # With few examples per intent there is nothing to spare for calibration.
    if min(by_label.values()) >= 20:
        head = train_calibrated(
            encoder, data.Split(source, texts, labels), c=INTENT_C, balanced=False
        )
    else:
        head = fit_head(embed(encoder, texts, cache=False), labels, c=INTENT_C)
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
    )
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(_company_card(meta, by_label), encoding="utf-8")
    return meta


def _company_card(meta: dict[str, Any], counts: dict[str, int]) -> str:
    rows = "\n".join(f"| {label} | {n} |" for label, n in sorted(counts.items()))
    return f"""# Intent head {meta["name"]}

- version: `{meta["version"]}`
- encoder: {meta["encoder"]} (`{meta["encoder_fingerprint"]}`, int8: {meta["quantized"]})
- data: {meta["sources"]["intent"]} — the company's own examples, under the company's terms
- training command: `{meta["training_command"]}`
- answer `other` below calibrated confidence {meta["other_below"]}
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
        "other_below": OTHER_BELOW,
        "heads": {
            key: {"labels": list(h.labels), "temperature": round(h.temperature, 4)}
            for key, h in heads.items()
        },
    }
