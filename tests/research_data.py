"""A tiny stand-in for the research data beside the checkout (``../shared/data``): a few made-up
Chinese reviews and Spanish tweets in the files and layout of waimai_10k and XLM-T's Spanish,
so that tests can build the Chinese and Spanish heads without the real data (whose terms keep
it out of the repository)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

ZH_WORDS = {
    "0": ["太差劲了", "饭菜全凉了", "送得太慢", "难吃死了", "再也不点了", "我要退款"],
    "1": ["很好吃", "送得很快", "非常满意", "好评", "味道不错", "下次还点"],
}
ES_WORDS = {
    "0": ["horrible", "una vergüenza", "pésimo servicio", "llegó roto", "nadie responde", "odio"],
    "1": ["el pedido", "mañana", "la tienda", "mi cuenta", "el envío", "hoy"],
    "2": ["me encanta", "excelente", "muchas gracias", "perfecto", "genial", "muy contento"],
}


def _texts(words: list[str], n: int) -> list[str]:
    """``n`` distinct texts made of pairs of ``words``, numbered so none repeats."""
    pairs = itertools.cycle(itertools.permutations(words, 2))
    return [f"{a}，{b} {i}" for i, (a, b) in zip(range(n), pairs, strict=False)]


def write_research_data(root: Path, per_label: int = 60) -> Path:
    """``root`` laid out like ``../shared/data`` for the two sandbox languages; returns it."""
    zh = root / "waimai10k_zh"
    zh.mkdir(parents=True)
    with (zh / "waimai_10k.train.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "review"])
        for label, words in ZH_WORDS.items():
            writer.writerows([label, t] for t in _texts(words, per_label))
    es = root / "xlmt_umsab_sentiment" / "spanish"
    es.mkdir(parents=True)
    for split, n in (("train", per_label), ("val", per_label // 3)):
        rows = [
            (label, t.replace("，", ","))
            for label, words in ES_WORDS.items()
            for t in _texts(words, n)
        ]
        (es / f"{split}_text.txt").write_text("\n".join(t for _, t in rows) + "\n", "utf-8")
        (es / f"{split}_labels.txt").write_text("\n".join(y for y, _ in rows) + "\n", "utf-8")
    return root
