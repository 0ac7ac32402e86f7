"""Fine-tuning the encoder itself on CPU (``deskbot nlp train --fine-tune``), with PyTorch.

The encoder is trained with the features the desk reads (the mean-pooled, L2-normalised outputs
of the heads' layers, side by side) and a linear layer per task on top, by cross-entropy (full
fine-tuning with a classification loss). ``method="pairs"`` is the SetFit-style alternative:
cosine similarity of sentence embeddings pulled to 1 for pairs of one label and to 0 for pairs
of two, then the heads are fitted on the adapted encoder. Both were measured on Banking77 with
10 examples per intent; the README's model card has the figures behind the default.

What makes it fit a 2-core CPU: inputs cut at 64 tokens (support messages rarely need more),
the word embeddings frozen (a third of MiniLM's weights, and AdamW's update of them is the
slowest part of a step), optionally the lowest layers frozen too, batches drawn from length
buckets so that little padding is computed, and PyTorch kept to the machine's cores.

The result is written as a Hugging Face encoder folder (weights, config, tokenizer) plus its
int8 ONNX graph in ``onnx/`` beside them, so the desk runs it with ONNX Runtime alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

MAX_LENGTH = 64
BUCKET = 50  # batches per length bucket: sorted by length inside, shuffled between


@dataclass(frozen=True)
class Task:
    """One classification task the encoder is adapted to (intent, sentiment…)."""

    name: str
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class FineTuneResult:
    folder: Path | None
    steps: int
    seconds: float
    method: str
    settings: dict[str, Any]
    features: Any = None  # of ``features_of``, from the adapted encoder (float32, PyTorch)


def fine_tune(
    base: Path,
    tasks: Sequence[Task],
    out: Path | None,
    *,
    layers: tuple[int, ...],
    method: str = "classify",
    epochs: float = 3.0,
    batch_size: int = 32,
    max_length: int = MAX_LENGTH,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 5e-3,
    freeze_layers: int = 0,
    max_steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: TextIO | None = sys.stderr,
    features_of: Sequence[str] = (),
    label: str = "",
) -> FineTuneResult:
    """Adapt the encoder in ``base`` to ``tasks`` and save it to ``out`` (None: not saved).

    ``epochs`` counts passes over the largest task; tasks take turns batch by batch. A
    ``max_steps`` stops earlier (the tests take one step). ``features_of``: texts whose
    features the adapted encoder returns (cross-fitting scores its left-out examples so)."""
    import torch
    from tqdm import tqdm  # type: ignore[import-untyped]
    from transformers import AutoModel, AutoTokenizer

    if method not in ("classify", "pairs"):
        raise ValueError(f"method must be 'classify' or 'pairs', got {method!r}")
    torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(base), local_files_only=True
    )
    model = AutoModel.from_pretrained(str(base), local_files_only=True, attn_implementation="eager")
    for p in model.embeddings.parameters():
        p.requires_grad = False
    for layer in model.encoder.layer[:freeze_layers]:
        for p in layer.parameters():
            p.requires_grad = False
    width = int(model.config.hidden_size) * len(layers)
    label_sets = {t.name: sorted(set(t.labels)) for t in tasks}
    heads = torch.nn.ModuleDict(
        {t.name: torch.nn.Linear(width, len(label_sets[t.name])) for t in tasks}
    )
    scale = 20.0  # unit-length features: logits need room (as in SetFit's and NormFace's heads)

    def features(batch: dict[str, Any]) -> Any:
        states = model(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].unsqueeze(-1).to(states[-1].dtype)
        count = mask.sum(dim=1).clamp(min=1e-9)
        pooled = [
            torch.nn.functional.normalize((states[n] * mask).sum(dim=1) / count, p=2, dim=1)
            for n in layers
        ]
        return torch.cat(pooled, dim=1)

    def tokenize(texts: list[str]) -> dict[str, Any]:
        return dict(
            tokenizer(
                texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        )

    schedules = [_batches(t, batch_size, rng, epochs, method) for t in tasks]
    plan = _interleave(schedules)
    if max_steps is not None:
        plan = plan[:max_steps]
    encoder_params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": learning_rate},
            {"params": list(heads.parameters()), "lr": head_learning_rate},
        ],
        weight_decay=0.01,
    )
    total = len(plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: max(0.0, 1.0 - step / max(1, total))
    )
    index = {name: {y: i for i, y in enumerate(labels)} for name, labels in label_sets.items()}
    by_name = {t.name: t for t in tasks}
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        plan,
        desc=f"fine-tuning ({method}){label}",
        unit="step",
        file=progress,
        disable=progress is None,
        dynamic_ncols=True,
    )
    for step, (name, rows) in enumerate(bar):
        task = by_name[name]
        if method == "classify":
            x = features(tokenize([task.texts[i] for i in rows]))
            target = torch.tensor([index[name][task.labels[i]] for i in rows])
            loss = torch.nn.functional.cross_entropy(scale * heads[name](x), target)
        else:
            anchors, others, same = zip(*rows, strict=True)
            a = features(tokenize([task.texts[i] for i in anchors]))[:, -model.config.hidden_size :]
            b = features(tokenize([task.texts[i] for i in others]))[:, -model.config.hidden_size :]
            cosine = (a * b).sum(dim=1)
            loss = torch.nn.functional.mse_loss(cosine, torch.tensor(same, dtype=cosine.dtype))
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad()
        if step == 4 and progress is not None and total > 10:
            per_step = (time.perf_counter() - start) / 5
            bar.write(
                f"estimate: {total} steps × {per_step:.2f} s ≈ {total * per_step / 60:.1f} min",
                file=progress,
            )
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    computed = None
    if features_of:
        with torch.inference_mode():
            texts = list(features_of)
            computed = torch.cat(
                [features(tokenize(texts[i : i + 64])) for i in range(0, len(texts), 64)]
            ).numpy()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        _stamp(out, base)
    settings = {
        "method": method,
        "epochs": epochs,
        "steps": total,
        "batch_size": batch_size,
        "max_length": max_length,
        "learning_rate": learning_rate,
        "frozen": f"word embeddings{f' and layers 1-{freeze_layers}' if freeze_layers else ''}",
        "threads": torch.get_num_threads(),
        "examples": {t.name: len(t.texts) for t in tasks},
        "seconds": round(seconds, 1),
    }
    if out is not None:
        (out / "fine_tune.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return FineTuneResult(out, total, seconds, method, settings, computed)


def _stamp(folder: Path, base: Path) -> None:
    """Name the adapted weights in config.json, so the encoder's fingerprint (and with it the
    ONNX graph's file name and the heads' check) tells them from the base encoder's."""
    digest = hashlib.sha256()
    with (folder / "model.safetensors").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["deskbot_fine_tuned"] = {"from": str(base.name), "weights": digest.hexdigest()[:16]}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "onnx").mkdir(exist_ok=True)


def _batches(
    task: Task, batch_size: int, rng: random.Random, epochs: float, method: str
) -> list[tuple[str, Any]]:
    """One task's batches for all epochs: rows shuffled, then sorted by length inside buckets
    of :data:`BUCKET` batches (little padding), the batches themselves shuffled."""
    n = len(task.texts)
    count = max(1, round(epochs * n / batch_size))
    out: list[tuple[str, Any]] = []
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(task.labels):
        by_label.setdefault(y, []).append(i)
    labels = sorted(by_label)
    while len(out) < count:
        rows = list(range(n))
        rng.shuffle(rows)
        chunk = batch_size * BUCKET
        batches: list[list[int]] = []
        for s in range(0, n, chunk):
            part = sorted(rows[s : s + chunk], key=lambda i: len(task.texts[i]))
            batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            if method == "classify":
                out.append((task.name, b))
            else:  # SetFit-style: each anchor with one example of its label and one of another
                pairs: list[tuple[int, int, float]] = []
                for i in b[: max(1, batch_size // 2)]:
                    y = task.labels[i]
                    pairs.append((i, rng.choice(by_label[y]), 1.0))
                    other = rng.choice([z for z in labels if z != y])
                    pairs.append((i, rng.choice(by_label[other]), 0.0))
                out.append((task.name, pairs))
    return out[:count]


def _interleave(schedules: list[list[tuple[str, Any]]]) -> list[tuple[str, Any]]:
    """Tasks take turns in proportion to their number of batches."""
    total = sum(len(s) for s in schedules)
    cursors = [0] * len(schedules)
    out: list[tuple[str, Any]] = []
    for _ in range(total):
        k = min(
            (i for i in range(len(schedules)) if cursors[i] < len(schedules[i])),
            key=lambda i: cursors[i] / len(schedules[i]),
        )
        out.append(schedules[k][cursors[k]])
        cursors[k] += 1
    return out


def export_int8(folder: Path, layers: tuple[int, ...]) -> Path:
    """The int8 graph the desk runs, in the folder's own ``onnx/``; the float32 graph it is
    quantised from is removed (90 MB the desk never reads)."""
    from nlp.encoder import export_onnx, onnx_path

    graph = export_onnx(folder, layers, quantize=True)
    onnx_path(folder, layers, False).unlink(missing_ok=True)
    return graph


def _load(folder: Path, layers: tuple[int, ...]) -> Any:
    from nlp.encoder import Encoder

    return Encoder.load(folder, quantize=True, layers=layers, backend="onnx")


def _base_layers(base: Path) -> tuple[int, ...]:
    from nlp.encoder import _config, default_layers

    return default_layers(int(_config(base)["num_hidden_layers"]))


def company_model(
    base: Path,
    texts: list[str],
    labels: list[str],
    out: Path,
    *,
    source: str,
    per_class: int | None = None,
    seed: int = 0,
    method: str = "classify",
    epochs: float | None = None,
    max_steps: int | None = None,
    progress: TextIO | None = sys.stderr,
) -> dict[str, Any]:
    """A company model folder: the encoder adapted to these intents, its int8 graph, the intent
    head fitted on it with its calibrated ``other`` threshold, and the card.

    With enough examples of every intent the threshold is set on a held-out tenth; that tenth
    is kept out of the fine-tuning too, so the encoder has not seen what calibrates it. With
    few, by cross-fitting (:func:`cross_fit`): the examples are scored by encoders fine-tuned
    without them, and the final encoder is then fine-tuned on all of them."""
    from collections import Counter

    from nlp import data
    from nlp.train import HOLD_OUT_FROM, sample_per_class, train_intents

    if per_class is not None:
        texts, labels = sample_per_class(texts, labels, per_class, seed=seed)
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 2:
        raise ValueError("every intent needs at least two examples, and at least two intents")
    held_out = min(counts.values()) >= HOLD_OUT_FROM
    rows = [i for i, t in enumerate(texts) if not held_out or data.bucket("other:" + t) >= 10]
    tune = Task("intent", [texts[i] for i in rows], [labels[i] for i in rows])
    layers = _base_layers(base)
    large = len(tune.texts) >= 2000
    if epochs is None:  # few examples need more passes; one pass over many fits 20 minutes
        epochs = 1.0 if large else 8.0  # even on a busy 2-core machine (README's model card)
    settings: dict[str, Any] = dict(
        layers=layers,
        method=method,
        epochs=epochs,
        batch_size=32 if large else 16,
        # many examples: the two lowest layers stay as they are, a third less work per step
        freeze_layers=2 if large else 0,
        max_steps=max_steps,
        progress=progress,
    )
    out_of_fold = None
    if not held_out:  # cross-fitting: the threshold from encoders that never saw the example
        if progress is not None:
            progress.write(
                f"few examples per intent: {CROSS_FOLDS} fine-tunings on parts of them score "
                "the rest (for the `other` threshold), then the final one on all\n"
            )
        out_of_fold = cross_fit(base, texts, labels, seed=seed, **settings)
    result = fine_tune(
        base,
        [tune],
        out / "encoder",
        seed=seed,
        label=" final" if out_of_fold else "",
        **settings,
    )
    export_int8(out / "encoder", layers)
    meta = train_intents(
        _load(out / "encoder", layers),
        texts,
        labels,
        out,
        source=source,
        out_of_fold=out_of_fold,
    )
    command = f"deskbot nlp train --fine-tune --intents {source}"
    if per_class is not None:
        command += f" --per-class {per_class} --seed {seed}"
    meta.update(
        encoder="all-MiniLM-L6-v2, fine-tuned on these intents",
        encoder_dir="encoder",
        training_command=command,
        fine_tune={
            **result.settings,
            "calibration_unseen_by_encoder": True,
            "cross_fitting_seconds": None if out_of_fold is None else round(out_of_fold.seconds, 1),
        },
    )
    _write_meta(out, meta)
    from nlp.train import _company_card

    card = _company_card(meta, dict(counts)) + _fine_tune_card(meta)
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    return meta


CROSS_FOLDS = 2  # two halves: two more fine-tunings of half the steps, within 5 minutes


@dataclass(frozen=True)
class OutOfFold:
    """Each example's intent logits from a head on an encoder fine-tuned without it; with
    them, the logits of an n-gram head (:mod:`nlp.intent_ngrams`) fitted on the same fold's
    examples, and the example's cosine to the nearest intent centroid of that fold's encoder
    and examples: what a company head's n-gram weight and ``other`` score are set on."""

    logits: Any  # (examples, intents), intents sorted
    method: str
    seconds: float
    word_logits: Any = None  # (examples, intents), or None: no n-gram head
    nearest: Any = None  # (examples,), or None: no centroids


def cross_fit(
    base: Path,
    texts: list[str],
    labels: list[str],
    *,
    seed: int = 0,
    **settings: Any,
) -> OutOfFold:
    """Out-of-fold scores for the ``other`` threshold with few examples per intent.

    The examples are cut into :data:`CROSS_FOLDS` stratified parts; for each, the encoder is
    fine-tuned on the others (same settings, so the same passes over fewer examples), a head
    is fitted on its features of those others, and it scores the part left out. The threshold
    set on these scores honours the in-scope target on an encoder that had not seen the
    examples, which cross-validation of heads on the final encoder (fine-tuned on every
    example, so surer of each of them) did not: 3.8% in-scope `other` for a 3% target."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from nlp import intent_ngrams
    from nlp.heads import IntentCentroids, fit_head
    from nlp.train import INTENT_C, INTENT_NGRAMS_C

    intents = sorted(set(labels))
    logits = np.zeros((len(texts), len(intents)), dtype=np.float64)
    word_logits = np.zeros_like(logits)
    nearest = np.zeros(len(texts), dtype=np.float64)
    # the sentence vector: the last layer's block of the features (as Encoder.sentence)
    layers = tuple(settings["layers"])
    start = time.perf_counter()
    folds = StratifiedKFold(CROSS_FOLDS, shuffle=True, random_state=seed)
    for k, (fit_rows, held_rows) in enumerate(folds.split(texts, labels)):
        part = Task("intent", [texts[i] for i in fit_rows], [labels[i] for i in fit_rows])
        result = fine_tune(
            base,
            [part],
            None,
            features_of=[texts[i] for i in [*fit_rows, *held_rows]],
            label=f" fold {k + 1}/{CROSS_FOLDS}",
            **{**settings, "seed": seed + k + 1},
        )
        x = result.features
        head = fit_head(x[: len(fit_rows)], part.labels, c=INTENT_C)
        if list(head.labels) != intents:
            raise ValueError("every intent needs at least two examples")
        logits[held_rows] = head.logits(x[len(fit_rows) :])
        words = intent_ngrams.fit(part.texts, part.labels, c=INTENT_NGRAMS_C)
        word_logits[held_rows] = words.logits([texts[i] for i in held_rows])
        sentences = x[:, -(x.shape[1] // len(layers)) :]
        centroids = IntentCentroids.fit(sentences[: len(fit_rows)], part.labels)
        nearest[held_rows] = centroids.nearest(sentences[len(fit_rows) :])
    return OutOfFold(
        logits,
        f"{CROSS_FOLDS}-fold cross-fitting (each example scored by an encoder fine-tuned "
        "without it)",
        time.perf_counter() - start,
        word_logits,
        nearest,
    )


def default_model(
    base: Path,
    out: Path,
    *,
    examples: int = 10_000,
    epochs: float = 1.0,
    anger_limit: int | None = 15_000,
    max_steps: int | None = None,
    progress: TextIO | None = sys.stderr,
) -> dict[str, Any]:
    """The shipped heads' model, fine-tuned: the encoder adapted to sentiment (SemEval pool,
    TweetEval validation and an untouched part removed) and the Bitext intents together,
    ``examples`` in all (four fifths sentiment), then all three heads fitted on it as
    ``deskbot nlp train --defaults`` does."""
    from nlp import data
    from nlp.train import sample_per_class, train_defaults

    layers = _base_layers(base)
    pool = sentiment_pool()
    rng = random.Random(0)
    n_sentiment = examples * 4 // 5
    picked = sorted(rng.sample(range(len(pool.texts)), min(n_sentiment, len(pool.texts))))
    sentiment = Task("sentiment", [pool.texts[i] for i in picked], [pool.labels[i] for i in picked])
    bitext = data.bitext("Training")
    per_intent = max(2, (examples - len(sentiment.texts)) // len(set(bitext.labels)))
    t, y = sample_per_class(bitext.texts, bitext.labels, per_intent)
    result = fine_tune(
        base,
        [sentiment, Task("intent", t, y)],
        out / "encoder",
        layers=layers,
        epochs=epochs,
        batch_size=32,
        max_steps=max_steps,
        progress=progress,
    )
    export_int8(out / "encoder", layers)
    meta = train_defaults(
        _load(out / "encoder", layers), out, pool=pool, anger_limit=anger_limit, ngrams=False
    )
    meta.update(
        name=out.name,
        encoder="all-MiniLM-L6-v2, fine-tuned on sentiment and the Bitext intents",
        encoder_dir="encoder",
        training_command="deskbot nlp train --defaults --fine-tune"
        + (f" --examples {examples}" if examples != 10_000 else ""),
        fine_tune=result.settings,
    )
    _write_meta(out, meta)
    (out / "MODEL_CARD.md").write_text(_default_card(meta), encoding="utf-8")
    return meta


def sentiment_pool() -> Any:
    """The SemEval pool less TweetEval's validation tweets and less an untouched twentieth
    (:func:`untouched_sentiment`) that nothing is fitted or tuned on."""
    from nlp import data

    validation = data.tweeteval("tweeteval_sentiment")
    held = {" ".join(t.casefold().split()) for t in validation.texts}
    pool = data.semeval_pool(exclude=held)
    keep = [i for i, t in enumerate(pool.texts) if data.bucket("untouched:" + t) >= 5]
    return data.Split(
        pool.name + "/less-untouched",
        [pool.texts[i] for i in keep],
        [pool.labels[i] for i in keep],
    )


def untouched_sentiment() -> Any:
    """A twentieth of the SemEval pool (salted md5 rule) that no fine-tuning, head or choice
    of settings saw: the split the TweetEval validation figure's gap is measured against."""
    from nlp import data

    validation = data.tweeteval("tweeteval_sentiment")
    held = {" ".join(t.casefold().split()) for t in validation.texts}
    pool = data.semeval_pool(exclude=held)
    keep = [i for i, t in enumerate(pool.texts) if data.bucket("untouched:" + t) < 5]
    return data.Split(
        "semeval_pool/untouched-5", [pool.texts[i] for i in keep], [pool.labels[i] for i in keep]
    )


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _fine_tune_card(meta: dict[str, Any]) -> str:
    ft = meta["fine_tune"]
    seen = (
        "a held-out tenth the encoder was not fine-tuned on"
        if ft.get("cross_fitting_seconds") is None
        else f"{meta['other_calibration']['method']}, {ft['cross_fitting_seconds']:.0f} s more"
    )
    return f"""
## The encoder

Fine-tuned from all-MiniLM-L6-v2 on these examples ({ft["method"]}, {ft["steps"]} steps,
{ft["epochs"]} epochs, batch {ft["batch_size"]}, inputs cut at {ft["max_length"]} tokens,
{ft["frozen"]} frozen, {ft["seconds"]:.0f} s on {ft["threads"]} threads). It is in `encoder/`
with its int8 ONNX graph (`encoder/onnx/`), which the desk runs without PyTorch. The `other`
threshold was calibrated on {seen}.

Use it: `DESK_MODEL_DIR={meta["name"]}` (or `DESK_INTENT_MODEL`). The shipped sentiment and
anger heads keep reading the shipped encoder, so the desk runs two encoders (about 25 MB more).
"""


def _default_card(meta: dict[str, Any]) -> str:
    ft = meta["fine_tune"]
    sources = "\n".join(f"- {k}: {v}" for k, v in meta["sources"].items())
    return f"""# Model {meta["name"]} (fine-tuned encoder and heads)

- version: `{meta["version"]}`
- training command: `{meta["training_command"]}`
- encoder: {meta["encoder"]}, in `encoder/` with its int8 ONNX graph (`encoder/onnx/`);
  {ft["steps"]} steps, {ft["epochs"]} epochs, batch {ft["batch_size"]}, inputs cut at
  {ft["max_length"]} tokens, {ft["frozen"]} frozen, {ft["seconds"]:.0f} s on
  {ft["threads"]} threads; examples {ft["examples"]}
- heads fitted on the adapted encoder:
{sources}
- `other` below {meta["other_below"]:.4f} ({meta["other_calibration"]["method"]})
- licences: SemEval-2017 (CC BY 3.0), GoEmotions (Apache-2.0), Bitext (CDLA-Sharing-1.0)
- measure it: `deskbot nlp eval --fine-tuned DIR`
- use it: `DESK_MODEL_DIR=DIR`
"""
