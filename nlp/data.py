"""Readers for the labelled sets in ``../shared/data`` (each folder has a LICENSE-NOTE.md).

What may train a shipped head and what may only evaluate one follows those notes:
- train: SemEval-2017 4A pool (CC BY 3.0) for sentiment, GoEmotions (Apache-2.0) for anger,
  Bitext (CDLA-Sharing-1.0; models trained on it are unrestricted) for the default intents and
  (its W tag) the hostility head, CEDR (Apache-2.0) for the shipped Russian heads, Banking77
  (CC BY 4.0) only for the company-head measurement, never shipped.
- train only heads that stay on the machine (``--research-data``, git-ignored): XLM-T,
  waimai_10k (research-only or no licence stated).
- evaluate only: TweetEval.
- report only: the official test splits in ``heldout_dir()``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("DESK_DATA_DIR") or REPO.parent / "shared" / "data")


def heldout_dir() -> Path:
    """The official test splits (``../shared/heldout``): figures measured there are reported,
    never trained, calibrated or chosen on."""
    return Path(os.environ.get("DESK_HELDOUT_DIR") or data_dir().parent / "heldout")


@dataclass(frozen=True)
class Split:
    name: str
    texts: list[str]
    labels: list[str]


_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+")


def normalise_tweet(text: str) -> str:
    """TweetEval's convention, applied to train and test alike: @user and a bare http."""
    return _URL.sub("http", _MENTION.sub("@user", text)).strip()


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def bucket(text: str) -> int:
    """The data notes' deterministic split key: md5 of the folded text, first 8 hex, mod 100."""
    return int(hashlib.md5(_key(text).encode()).hexdigest()[:8], 16) % 100


def is_heldout(text: str, percent: int = 20) -> bool:
    return bucket(text) < percent


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def tweeteval(task: str, split: str = "val", root: Path | None = None) -> Split:
    folder = (root or data_dir()) / task
    names = dict(line.split("\t") for line in _lines(folder / "mapping.txt") if line.strip())
    texts = _lines(folder / f"{split}_text.txt")
    labels = [names[x.strip()] for x in _lines(folder / f"{split}_labels.txt")]
    return Split(f"{task}/{split}", [normalise_tweet(t) for t in texts], labels)


def semeval_pool(root: Path | None = None, *, exclude: set[str] | None = None) -> Split:
    """The SemEval-2013..2016 pool, deduplicated by text (majority label), minus ``exclude``."""
    folder = (root or data_dir()) / "semeval2017_task4a_en"
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".txt":
            # One tweet in 2016test has a raw newline: csv with a tab dialect keeps it whole
            # only if quoted, which it is not, so join continuation lines by hand.
            rows: list[list[str]] = []
            for line in _lines(path):
                parts = line.rstrip("\t").split("\t")
                if len(parts) >= 3 and parts[1] in ("positive", "negative", "neutral"):
                    rows.append(parts)
                elif rows:
                    rows[-1][-1] += " " + line.strip()
            pairs = [(p[1], "\t".join(p[2:])) for p in rows]
        elif path.suffix == ".tsv":
            pairs = []
            for line in _lines(path):
                parts = line.split("\t")
                if len(parts) >= 4:
                    pairs.append((parts[2], "\t".join(parts[3:])))
        else:
            continue
        for label, raw in pairs:
            text = normalise_tweet(raw)
            key = _key(text)
            if exclude and key in exclude:
                continue
            votes[key][label] += 1
            first.setdefault(key, text)
    texts = [first[k] for k in votes]
    labels = [votes[k].most_common(1)[0][0] for k in votes]
    return Split("semeval2017_task4a_en", texts, labels)


def goemotions_anger(split: str = "train", root: Path | None = None) -> Split:
    """GoEmotions' Ekman taxonomy: anger (= anger + annoyance + disapproval) against the rest."""
    folder = (root or data_dir()) / "goemotions" / "ekman"
    names = _lines(folder / "labels.txt")
    texts, labels = [], []
    for line in _lines(folder / f"{split}.tsv"):
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        ids = {names[int(i)] for i in parts[1].split(",") if i}
        texts.append(parts[0])
        labels.append("anger" if "anger" in ids else "calm")
    return Split(f"goemotions_ekman/{split}", texts, labels)


def bitext(split: str = "Training", root: Path | None = None) -> Split:
    path = (root or data_dir()) / "bitext_customer_service"
    path = path / f"Bitext_Sample_Customer_Service_{split}_Dataset.csv"
    texts, labels = read_csv(path, "utterance", "intent")
    return Split(f"bitext/{split.lower()}", texts, labels)


def banking77(root: Path | None = None) -> tuple[Split, Split]:
    """Banking77's train file cut 80/20 by the md5 rule (its test set is not in shared/)."""
    texts, labels = read_csv((root or data_dir()) / "banking77" / "train.csv", "text", "category")
    train = [(t, y) for t, y in zip(texts, labels, strict=True) if not is_heldout(t)]
    held = [(t, y) for t, y in zip(texts, labels, strict=True) if is_heldout(t)]
    return (
        Split("banking77/train-80", [t for t, _ in train], [y for _, y in train]),
        Split("banking77/held-out-20", [t for t, _ in held], [y for _, y in held]),
    )


def banking77_tune(root: Path | None = None) -> tuple[Split, Split]:
    """Banking77's 80% cut again: a tenth of it (salted md5 rule) to make choices on, the rest
    to train on, so nothing is chosen on the held-out fifth that figures are reported on."""
    train, _held = banking77(root)
    rows = list(zip(train.texts, train.labels, strict=True))
    tune = [(t, y) for t, y in rows if bucket("tune:" + t) < 10]
    rest = [(t, y) for t, y in rows if bucket("tune:" + t) >= 10]
    return (
        Split("banking77/train-80-less-tune", [t for t, _ in rest], [y for _, y in rest]),
        Split("banking77/tune", [t for t, _ in tune], [y for _, y in tune]),
    )


def banking77_test() -> Split:
    """Banking77's official test file (``heldout_dir``, 3,080 queries): report only."""
    texts, labels = read_csv(heldout_dir() / "banking77" / "test.csv", "text", "category")
    return Split("banking77/test", texts, labels)


def banking77_full(root: Path | None = None) -> Split:
    """Banking77's whole train file (10,003 queries), for heads measured on its test file."""
    texts, labels = read_csv((root or data_dir()) / "banking77" / "train.csv", "text", "category")
    return Split("banking77/train", texts, labels)


def clinc_oos(root: Path | None = None, split: str = "val") -> list[str]:
    """CLINC150's out-of-scope queries; ``split`` "test" reads ``heldout_dir`` (report only)."""
    folder = (heldout_dir() if split == "test" else (root or data_dir())) / "clinc150"
    rows = json.loads((folder / f"oos_{split}.json").read_text("utf-8"))
    return [str(r[0]) for r in rows]


def clinc150(split: str = "train", root: Path | None = None) -> Split:
    """CLINC150's in-scope queries (150 intents): "train" (15,000), "val" (3,000), or "test"
    (4,500, from ``heldout_dir``: report only)."""
    folder = (heldout_dir() if split == "test" else (root or data_dir())) / "clinc150"
    rows = json.loads((folder / f"{split}.json").read_text("utf-8"))
    return Split(f"clinc150/{split}", [str(r[0]) for r in rows], [str(r[1]) for r in rows])


def xlmt(language: str, split: str = "val", root: Path | None = None) -> Split:
    folder = (root or data_dir()) / "xlmt_umsab_sentiment" / language
    names = {"0": "negative", "1": "neutral", "2": "positive"}
    texts = _lines(folder / f"{split}_text.txt")
    labels = [names[x.strip()] for x in _lines(folder / f"{split}_labels.txt")]
    return Split(f"xlmt_{language}/{split}", [normalise_tweet(t) for t in texts], labels)


def waimai_zh(root: Path | None = None) -> Split:
    """A quarter of waimai_10k's shared file (binary: the model's negative vs positive).

    The shared file already lacks the md5 < 20 test rows, so this takes buckets 20..44.
    """
    texts, raw = read_csv(
        (root or data_dir()) / "waimai10k_zh" / "waimai_10k.train.csv", "review", "label"
    )
    keep = [(t, "positive" if y == "1" else "negative") for t, y in zip(texts, raw, strict=True)]
    keep = [(t, y) for t, y in keep if 20 <= bucket(t) < 45]
    return Split("waimai10k_zh/sample-25", [t for t, _ in keep], [y for _, y in keep])


def waimai_zh_train(root: Path | None = None) -> Split:
    """The rest of waimai_10k's shared file (buckets 45..99): what a Chinese head trains on."""
    texts, raw = read_csv(
        (root or data_dir()) / "waimai10k_zh" / "waimai_10k.train.csv", "review", "label"
    )
    keep = [(t, "positive" if y == "1" else "negative") for t, y in zip(texts, raw, strict=True)]
    keep = [(t, y) for t, y in keep if bucket(t) >= 45]
    return Split("waimai10k_zh/train-55", [t for t, _ in keep], [y for _, y in keep])


def cedr_ru_anger(root: Path | None = None, part: str = "all") -> Split:
    """CEDR's train file as anger against the rest; ``part`` "train" (md5 bucket ≥ 20) or
    "validation" (< 20) carve it for a Russian head, as its test file is not shared."""
    texts, raw = read_csv(
        (root or data_dir()) / "cedr_ru_emotion" / "cedr-main-train.csv", "text", "labels"
    )
    labels = ["anger" if "4" in y.strip("[]").split() else "calm" for y in raw]
    pairs = list(zip(texts, labels, strict=True))
    if part != "all":
        pairs = [(t, y) for t, y in pairs if is_heldout(t) == (part == "validation")]
    name = "cedr_ru/anger" + ("" if part == "all" else f"/{part}")
    return Split(name, [t for t, _ in pairs], [y for _, y in pairs])


def cedr_ru_sentiment(root: Path | None = None, part: str = "all", *, test: bool = False) -> Split:
    """CEDR's emotions read as sentiment (CEDR has no sentiment label; this mapping is ours):
    joy → positive; sadness, anger or fear → negative; no emotion → neutral. Texts with
    surprise, or with joy and a negative emotion together, are left out. ``test`` reads the
    official test file (``heldout_dir``), for reporting only."""
    path = (
        heldout_dir() / "cedr_ru_emotion" / "cedr-main-test.csv"
        if test
        else (root or data_dir()) / "cedr_ru_emotion" / "cedr-main-train.csv"
    )
    texts, raw = read_csv_keep_empty(path, "text", "labels")
    pairs = []
    for text, y in zip(texts, raw, strict=True):
        ids = set(y.strip("[]").split())
        if "2" in ids or ("0" in ids and ids & {"1", "3", "4"}):
            continue
        label = "positive" if "0" in ids else "negative" if ids else "neutral"
        pairs.append((text, label))
    if part != "all":
        pairs = [(t, y) for t, y in pairs if is_heldout(t) == (part == "validation")]
    name = "cedr_ru/sentiment" + ("/test" if test else "" if part == "all" else f"/{part}")
    return Split(name, [t for t, _ in pairs], [y for _, y in pairs])


def cedr_ru_anger_test() -> Split:
    """CEDR's official test file as anger against the rest (report only)."""
    texts, raw = read_csv_keep_empty(
        heldout_dir() / "cedr_ru_emotion" / "cedr-main-test.csv", "text", "labels"
    )
    labels = ["anger" if "4" in y.strip("[]").split() else "calm" for y in raw]
    return Split("cedr_ru/anger/test", texts, labels)


def waimai_zh_test() -> Split:
    """waimai_10k's held-out test file (report only)."""
    texts, raw = read_csv(heldout_dir() / "waimai10k_zh" / "waimai_10k.test.csv", "review", "label")
    labels = ["positive" if y == "1" else "negative" for y in raw]
    return Split("waimai10k_zh/test", texts, labels)


def xlmt_test(language: str) -> Split:
    """XLM-T's held-out test tweets (report only)."""
    return xlmt(language, "test", heldout_dir())


def bitext_offensive(split: str = "Training", root: Path | None = None) -> Split:
    """Bitext's requests as "anger" (tagged W, offensive) or "calm" (not); ``split`` "Testing"
    reads the held-out test file (report only)."""
    folder = (heldout_dir() if split == "Testing" else (root or data_dir())) / (
        "bitext_customer_service"
    )
    path = folder / f"Bitext_Sample_Customer_Service_{split}_Dataset.csv"
    texts, tags = read_csv_keep_empty(path, "utterance", "tags")
    labels = ["anger" if "W" in t else "calm" for t in tags]
    return Split(f"bitext_offensive/{split.lower()}", texts, labels)


SUPPLEMENT = REPO / "nlp" / "supplement"


def billing_complaints(split: str = "train") -> Split:
    """Hand-written billing complaints (``nlp/supplement/billing_complaints.csv``, written for
    deskbot, same licence as the code): money taken twice, refunds, wrong invoices, labelled
    with Bitext's intents. "train" ones join Bitext when the intent head is trained; the
    differently worded "check" ones are only measured."""
    with (SUPPLEMENT / "billing_complaints.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    return Split(
        f"billing_complaints/{split}", [r["text"] for r in rows], [r["intent"] for r in rows]
    )


def read_csv_keep_empty(
    path: Path, text_column: str, label_column: str
) -> tuple[list[str], list[str]]:
    """Like :func:`read_csv`, but a row with an empty label (no emotion, no tag) is kept."""
    with path.open(newline="", encoding="utf-8") as f:
        texts, labels = [], []
        for row in csv.DictReader(f):
            text = (row.get(text_column) or "").strip()
            if text:
                texts.append(text)
                labels.append((row.get(label_column) or "").strip())
    return texts, labels


def read_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Rows with a non-empty text and label; a missing column is an error that names it."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in (text_column, label_column):
            if column not in columns:
                raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(columns)})")
        texts, labels = [], []
        for row in reader:
            text = (row.get(text_column) or "").strip()
            label = (row.get(label_column) or "").strip()
            if text and label:
                texts.append(text)
                labels.append(label)
    return texts, labels
