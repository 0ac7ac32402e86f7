"""``deskbot nlp eval``: every validation split the model uses, plus the non-English checks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from nlp import data
from nlp.encoder import Encoder
from nlp.heads import LinearHead, expected_calibration_error
from nlp.service import DEFAULT_HEADS, encoder_for, load_head, read_meta
from nlp.train import embed, train_intents


def _report(
    out: TextIO, name: str, truth: list[str], predicted: list[str], *, per_class: bool = True
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, classification_report, f1_score, recall_score

    figures = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "macro_recall": float(recall_score(truth, predicted, average="macro", zero_division=0)),
    }
    out.write(
        f"\n## {name}  (n={len(truth)})\naccuracy {figures['accuracy']:.4f}  "
        f"macro-F1 {figures['macro_f1']:.4f}  macro-recall {figures['macro_recall']:.4f}\n"
    )
    if per_class:
        out.write(classification_report(truth, predicted, digits=3, zero_division=0))
    return figures


def _anger_report(out: TextIO, name: str, truth: list[str], score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score, roc_auc_score

    positive = [y == "anger" for y in truth]
    figures = {
        "roc_auc": float(roc_auc_score(positive, score)),
        "f1_at_0.5": float(f1_score(positive, score >= 0.5)),
    }
    out.write(
        f"\n## {name} anger  (n={len(truth)}, {sum(positive)} angry)\n"
        f"ROC-AUC {figures['roc_auc']:.4f}  F1 at 0.5 {figures['f1_at_0.5']:.4f}\n"
    )
    return figures


def run(out: TextIO, heads_dir: Path = DEFAULT_HEADS, *, banking: bool = True) -> dict[str, Any]:
    meta = read_meta(heads_dir)
    encoder = encoder_for(heads_dir, meta)
    sentiment, anger, intent = (load_head(heads_dir, n) for n in ("sentiment", "anger", "intent"))
    results: dict[str, Any] = {"version": meta["version"]}
    out.write(f"# deskbot nlp eval — heads {meta['version']} on {encoder.path}\n")

    def predict(head: LinearHead, split: data.Split) -> tuple[list[str], np.ndarray]:
        proba = head.proba(embed(encoder, split.texts))
        return [head.labels[i] for i in proba.argmax(axis=1)], proba

    val = data.tweeteval("tweeteval_sentiment")
    predicted, proba = predict(sentiment, val)
    results["sentiment"] = _report(out, "sentiment: TweetEval validation", val.labels, predicted)
    target = np.array([sentiment.labels.index(y) for y in val.labels])
    results["sentiment"]["ece"] = expected_calibration_error(proba, target)
    out.write(f"expected calibration error {results['sentiment']['ece']:.4f}\n")

    for split in (data.goemotions_anger("dev"), data.tweeteval("tweeteval_emotion")):
        p = anger.proba(embed(encoder, split.texts))[:, anger.labels.index("anger")]
        results[split.name] = _anger_report(out, split.name, split.labels, p)

    bitext = data.bitext("Validation")
    predicted, proba = predict(intent, bitext)
    results["intent"] = _report(out, "intent: Bitext validation", bitext.labels, predicted)
    other_below = float(meta.get("other_below", 0.5))
    kept = float((proba.max(axis=1) >= other_below).mean())
    oos = intent.proba(embed(encoder, data.clinc_oos())).max(axis=1)
    flagged = float((oos < other_below).mean())
    results["other"] = {"bitext_kept": kept, "clinc_oos_flagged": flagged}
    out.write(
        f"\n## 'other' below confidence {other_below}\nBitext validation answered with an "
        f"intent: {kept:.4f}; CLINC150 out-of-scope validation answered 'other': {flagged:.4f}\n"
    )

    if banking:
        results["banking77"] = _banking(out, encoder)

    out.write("\n# Non-English (the English encoder; evaluation only)\n")
    for language in ("spanish",):
        split = data.xlmt(language)
        results[split.name] = _report(out, split.name, split.labels, predict(sentiment, split)[0])
    zh = data.waimai_zh()
    p = sentiment.proba(embed(encoder, zh.texts))
    neg, pos = sentiment.labels.index("negative"), sentiment.labels.index("positive")
    binary = ["negative" if row[neg] >= row[pos] else "positive" for row in p]
    results[zh.name] = _report(out, zh.name + " (negative vs positive)", zh.labels, binary)
    ru = data.cedr_ru_anger()
    p_ru = anger.proba(embed(encoder, ru.texts))[:, anger.labels.index("anger")]
    results[ru.name] = _anger_report(out, ru.name, ru.labels, p_ru)
    return results


def _banking(out: TextIO, encoder: Encoder) -> dict[str, float]:
    """A company head trained the way `deskbot nlp train` does, on Banking77's 80% split."""
    train, held = data.banking77()
    figures: dict[str, float] = {}
    runs: list[tuple[str, int | None, int]] = [("full", None, 0)] + [
        (f"10-shot seed {s}", 10, s) for s in range(3)
    ]
    for name, per_class, seed in runs:
        with tempfile.TemporaryDirectory() as tmp:
            train_intents(
                encoder,
                train.texts,
                train.labels,
                Path(tmp),
                per_class=per_class,
                seed=seed,
                source="banking77/train.csv",
            )
            head = load_head(Path(tmp), "intent")
        proba = head.proba(embed(encoder, held.texts))
        predicted = [head.labels[i] for i in proba.argmax(axis=1)]
        label = f"company head: Banking77 held-out 20%, trained on {name}"
        figures[name] = _report(out, label, held.labels, predicted, per_class=False)["accuracy"]
    figures["10-shot mean"] = float(np.mean([figures[f"10-shot seed {s}"] for s in range(3)]))
    out.write(f"\nBanking77 10-shot mean accuracy {figures['10-shot mean']:.4f}\n")
    return figures
