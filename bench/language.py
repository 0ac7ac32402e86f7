"""How well nlp/language.py names the language of short support messages, and what it costs.

    .venv/bin/python -m bench.language [--data ../shared/data] [--per-language 600]

Texts come from the labelled sets in ``../shared/data`` (English: bitext and banking77; Chinese:
waimai10k; Russian: cedr; Spanish and the other European languages, Arabic and Hindi: the
XLM-T tweets). The confidence threshold and the accuracy mode are chosen on the *train* splits
(``tune``); the figures that count are on the validation splits (``eval``): the XLM-T and bitext
validation files, and for the sets that ship only a train file a fixed 20 % of it held out by a
hash of the text (never seen while tuning). Messages longer than 280 characters are left out:
support messages are short, and long text is easy.

Prints, per language and mode, the share named correctly, the share named wrongly and the
share declined (no language given), at each threshold; then the resident memory of each mode,
measured in a fresh process. Asserts nothing.

``--desk`` measures what the desk itself does: ``detect_language`` among the shipped desk's
languages (en, zh, es, ru), per language and for messages under 20 letters, on both splits,
with CLINC150's short English questions added; then the grid the constants of
nlp/language.py were chosen from (on the train splits only: a wrong language counts twice as
bad as none).

``--gate`` measures the model's language gate (which messages the English heads read,
nlp/service.py ``TextAnalyser.reads``) on both splits: detection among the shipped desk's
languages and the scripts no other language writes (what the desk does), beside the gate it
replaced (detection among every language, and a message given to another language still read
while English was "plausible") and that fallback added to the restricted detection. English
sets count the messages kept from the English heads, the others those read by them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lingua import LanguageDetector, LanguageDetectorBuilder

import nlp.language
from nlp.language import (
    _LETTER,
    KNOWN,
    MIN_LETTERS,
    SHIPPED_DESK_LANGUAGES,
    detect_language,
    letters,
)
from nlp.service import gate_languages

MAX_CHARS = 280
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
XLMT = {
    "english": "en",
    "spanish": "es",
    "french": "fr",
    "german": "de",
    "italian": "it",
    "portuguese": "pt",
    "arabic": "ar",
    "hindi": "hi",
}


def _held_out(text: str) -> bool:
    """A fixed 20 % of a train-only file, chosen by the text itself (stable across runs)."""
    return hashlib.sha256(text.encode()).digest()[0] < 52


def _csv(path: Path, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield row[column]


def _short(texts: Iterator[str], limit: int) -> list[str]:
    out: list[str] = []
    for text in texts:
        text = text.strip()
        if text and len(text) <= MAX_CHARS and text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return out


def load(data: Path, split: str, limit: int) -> dict[str, list[str]]:
    """``split`` is "tune" (train splits) or "eval" (validation splits / held-out part)."""
    tune = split == "tune"
    sets: dict[str, list[str]] = {}

    def train_only(path: Path, column: str) -> Iterator[str]:
        return (t for t in _csv(path, column) if _held_out(t) != tune)

    bitext = data / "bitext_customer_service"
    bitext_file = "Training" if tune else "Validation"
    english = _short(
        _csv(bitext / f"Bitext_Sample_Customer_Service_{bitext_file}_Dataset.csv", "utterance"),
        limit // 2,
    )
    english += _short(train_only(data / "banking77" / "train.csv", "text"), limit - len(english))
    sets["en (support)"] = english
    clinc = json.loads((data / "clinc150" / f"{'train' if tune else 'val'}.json").read_text())
    # Not "translate": those questions quote other languages.
    sets["en (clinc)"] = _short(iter(t for t, intent in clinc if intent != "translate"), limit)
    sets["zh"] = _short(train_only(data / "waimai10k_zh" / "waimai_10k.train.csv", "review"), limit)
    sets["ru"] = _short(train_only(data / "cedr_ru_emotion" / "cedr-main-train.csv", "text"), limit)
    for folder, code in XLMT.items():
        lines = data / "xlmt_umsab_sentiment" / folder / f"{'train' if tune else 'val'}_text.txt"
        name = f"{code} (tweets)" if code == "en" else code
        sets[name] = _short(iter(lines.read_text(encoding="utf-8").splitlines()), limit)
    return sets


@dataclass
class Scores:
    right: int = 0
    wrong: int = 0
    declined: int = 0

    def add(self, guess: str | None, truth: str) -> None:
        if guess is None:
            self.declined += 1
        elif guess == truth:
            self.right += 1
        else:
            self.wrong += 1

    def row(self) -> str:
        n = max(self.right + self.wrong + self.declined, 1)
        return (
            f"right {100 * self.right / n:5.1f}%  wrong {100 * self.wrong / n:4.1f}%  "
            f"declined {100 * self.declined / n:4.1f}%"
        )


def build(mode: str) -> LanguageDetector:
    builder = LanguageDetectorBuilder.from_languages(*KNOWN)
    if mode == "low":
        builder = builder.with_low_accuracy_mode()
    return builder.with_preloaded_language_models().build()


def best_guesses(detector: LanguageDetector, texts: list[str]) -> list[tuple[str | None, float]]:
    """The best language and its confidence per text (None where too few letters)."""
    out: list[tuple[str | None, float]] = []
    for text in texts:
        if len(_LETTER.findall(text)) < MIN_LETTERS:
            out.append((None, 0.0))
            continue
        values = detector.compute_language_confidence_values(text)
        out.append((KNOWN[values[0].language], values[0].value) if values else (None, 0.0))
    return out


def score(
    guesses: dict[str, list[tuple[str | None, float]]], threshold: float
) -> dict[str, Scores]:
    result: dict[str, Scores] = {}
    for name, rows in guesses.items():
        truth = name.split()[0]
        s = result.setdefault(name, Scores())
        for lang, value in rows:
            s.add(lang if lang is not None and value >= threshold else None, truth)
    return result


def _rss_mb(mode: str) -> float:
    """Resident memory of a fresh interpreter that built the detector in ``mode``."""
    code = (
        "import bench.language as b, re;"
        f"d = b.build({mode!r}); d.detect_language_of('hello there');"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def _baseline_mb() -> float:
    code = (
        "import lingua, re;"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


SPOKEN = SHIPPED_DESK_LANGUAGES
DESK_SETS = ("en (support)", "en (clinc)", "es", "ru", "zh")
SHORT = 20  # letters: "short" in the per-language figures


def desk_scores(sets: dict[str, list[str]], short_only: bool = False) -> dict[str, Scores]:
    out: dict[str, Scores] = {}
    for name in DESK_SETS:
        s = out.setdefault(name, Scores())
        for text in sets[name]:
            if not short_only or letters(text) < SHORT:
                s.add(detect_language(text, SPOKEN), name.split()[0])
    return out


def desk(data: Path, limit: int, figures: dict[str, object]) -> None:
    """The desk's own detection, and the grid its constants were chosen from."""
    for split in ("tune", "eval"):
        sets = load(data, split, limit)
        for short_only in (False, True):
            label = f"desk {split} {'<' + str(SHORT) + ' letters' if short_only else 'all'}"
            scores = desk_scores(sets, short_only)
            for name, s in scores.items():
                n = s.right + s.wrong + s.declined
                print(f"{label:22} {name:13} n={n:4}  {s.row()}")
                figures[f"{label}/{name}"] = {"right": s.right, "wrong": s.wrong, "n": n}
    sets = load(data, "tune", limit)
    grid = []
    for confidence, short, words in itertools.product(
        (0.6, 0.7, 0.8, 0.9), (0, 5, 8, 10, 12, 15), (2.0, 0.2, 0.25, 0.3, 0.4, 0.5)
    ):
        nlp.language.MIN_CONFIDENCE = confidence
        nlp.language.SHORT_LETTERS = short
        nlp.language.ENGLISH_WORDS = words  # 2.0: never (a share is at most 1)
        scores = desk_scores(sets)
        cost = sum(
            (2 * s.wrong + s.declined) / max(s.right + s.wrong + s.declined, 1)
            for s in scores.values()
        )
        grid.append((cost, confidence, short, words))
    for cost, confidence, short, words in sorted(grid)[:10]:
        print(
            f"grid tune cost {cost:.4f}  MIN_CONFIDENCE={confidence} SHORT_LETTERS={short} "
            f"ENGLISH_WORDS={words if words <= 1 else 'off'}"
        )


# The gate before 2026-12-07 (nlp/service.py then): a message the detector gave to another
# language was still read as English while the detector, among all its languages, gave English
# at least 0.05, or while 0.3 of its words were English function words.
_OLD_ENGLISH_WORDS = (
    "the my is are was were and you your what how where why when with for this that it's "
    "i'm i've i'll can't don't won't doesn't didn't isn't have has had will would could "
    "should please of to i me it be been do does did not at from by an or if so just get "
    "got need want can which who there their they we our us he she his her them"
)
_OLD_ENGLISH = frozenset(_OLD_ENGLISH_WORDS.split())


def _old_plausible(text: str) -> bool:
    words = re.findall(r"[a-z']+", text.casefold())
    share = sum(w in _OLD_ENGLISH for w in words) / len(words) if words else 0.0
    return nlp.language.confidence(text, "en") >= 0.05 or share >= 0.3


GATE_SETS = ("en (support)", "en (clinc)", "en (tweets)", "es", "ru", "zh", "fr", "de", "it", "pt")


def gate(data: Path, limit: int, figures: dict[str, object]) -> None:
    """Which messages the English heads read, under the gate and the ones it was chosen over."""
    among = gate_languages(SPOKEN)
    for split in ("tune", "eval"):
        sets = load(data, split, limit)
        for name in GATE_SETS:
            texts = sets[name]
            restricted = [detect_language(t, among) for t in texts]
            everything = [detect_language(t) for t in texts]
            read = {
                "desk (restricted)": [d in (None, "en") for d in restricted],
                "restricted + old fallback": [
                    d in (None, "en") or _old_plausible(t)
                    for d, t in zip(restricted, texts, strict=True)
                ],
                "before (all languages + fallback)": [
                    d in (None, "en") or _old_plausible(t)
                    for d, t in zip(everything, texts, strict=True)
                ],
            }
            english = name.startswith("en")
            row = []
            for kind, flags in read.items():
                count = len(flags) - sum(flags) if english else sum(flags)
                row.append(f"{kind} {count}")
                figures[f"gate {split}/{name}/{kind}"] = {"count": count, "n": len(flags)}
            verb = "kept from" if english else "read by"
            print(
                f"gate {split} {name:13} n={len(texts):5} {verb} the English heads: "
                + "; ".join(row)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--per-language", type=int, default=600)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--desk", action="store_true", help="the desk's detection (see above)")
    parser.add_argument("--gate", action="store_true", help="the model's language gate (above)")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    if args.gate:
        gate(args.data, args.per_language, figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
        return
    if args.desk:
        desk(args.data, args.per_language, figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))
        return
    for mode in ("low", "high"):
        detector = build(mode)
        for split in ("tune", "eval"):
            sets = load(args.data, split, args.per_language)
            guesses = {name: best_guesses(detector, texts) for name, texts in sets.items()}
            for threshold in THRESHOLDS:
                scores = score(guesses, threshold)
                total = Scores(
                    sum(s.right for s in scores.values()),
                    sum(s.wrong for s in scores.values()),
                    sum(s.declined for s in scores.values()),
                )
                print(f"{mode:4} {split:4} t={threshold:.1f}  all {total.row()}")
                if split == "eval" or threshold in (0.5,):
                    for name, s in scores.items():
                        n = len(sets[name])
                        print(f"      {name:13} n={n:4}  {s.row()}")
                figures[f"{mode}/{split}/{threshold}"] = {
                    name: {"right": s.right, "wrong": s.wrong, "declined": s.declined}
                    for name, s in scores.items()
                }
        del detector
    base = _baseline_mb()
    for mode in ("low", "high"):
        rss = _rss_mb(mode)
        print(f"memory {mode}: {rss:.0f} MB resident ({rss - base:.0f} MB over `import lingua`)")
        figures[f"memory/{mode}"] = {"rss_mb": rss, "over_import_mb": rss - base}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
