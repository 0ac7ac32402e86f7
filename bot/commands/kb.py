"""``deskbot kb``: index the knowledge base, and measure how well it answers.

``index`` brings the stored index (``kb_articles``) up to date with ``kb/`` (the desk does the
same at every start); ``eval`` prints, per threshold, the share of questions answered with the
right article and the share wrongly deflected, on a tune set (where the default ``kb.suggest_at``
is chosen) and a held-out set (reported, never used to choose).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.base.settings import SettingsError, load_settings
from bot.domain.rules import Rules, RulesError, load_rules
from bot.selfservice.kb import KnowledgeBase, kb_folder
from nlp.encoder import Encoder, EncoderError
from nlp.kb import (
    ArticleError,
    Figures,
    Index,
    Question,
    Scored,
    choose_threshold,
    figures,
    read_articles,
    read_questions,
    unit,
)
from nlp.language import detect_language
from storage.db import create_engine, migrate, session_factory

THRESHOLDS = tuple(round(0.30 + 0.05 * n, 2) for n in range(13))  # 0.30 … 0.90


def _rules(path: Path) -> Rules:
    return load_rules(path)


async def _index(rules_path: Path) -> int:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env")
    settings = load_settings()
    rules = _rules(rules_path)
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        knowledge = await KnowledgeBase.load(
            kb_folder(rules, rules_path), encoder_dir=settings.encoder_dir
        )
        report = await knowledge.sync(session_factory(engine), datetime.now(UTC))
    finally:
        await engine.dispose()
    langs = ", ".join(sorted(knowledge.index.languages())) or "none"
    print(f"{knowledge.folder}: {len(knowledge.index)} articles ({langs}); {report}")
    return 0


def score_questions(
    encoder: Encoder,
    index: Index,
    questions: list[Question],
    default_language: str,
    deflect_in: tuple[str, ...] | None = None,
) -> list[Scored]:
    """Each question as the desk would see it from a WhatsApp customer (no language hint):
    the detected language when an article is in it, else the default; a question in a language
    outside ``deflect_in`` (kb.languages; None: all) is never answered before a ticket."""
    vectors = unit(encoder.sentence(encoder.encode([q.text for q in questions])))
    languages = index.languages()
    out = []
    for q, v in zip(questions, vectors, strict=True):
        detected = detect_language(q.text)
        language = detected if detected in languages else default_language
        gated = deflect_in is not None and language not in deflect_in
        hits = [] if gated else index.search(v, language, 1)
        out.append(
            Scored(q, hits[0].article.slug if hits else None, hits[0].score if hits else 0.0)
        )
    return out


def _table(title: str, rows: list[Figures], chosen: float) -> str:
    lines = [
        title,
        "  threshold  answered right  wrong article  no-answer deflected  wrongly deflected",
    ]
    for f in rows:
        mark = " ←" if abs(f.threshold - chosen) < 1e-9 else ""
        lines.append(
            f"  {f.threshold:9.2f}  {f.right:3d}/{f.answerable:<3d} {f.right_share:6.1%}"
            f"  {f.wrong_article:13d}  {f.deflected_unanswerable:3d}/{f.unanswerable:<3d}"
            f" {f.unanswerable_share:6.1%}  {f.wrong:3d}/{f.answerable + f.unanswerable:<3d}"
            f" {f.wrong_share:6.1%}{mark}"
        )
    return "\n".join(lines)


def _eval(
    rules_path: Path, tune: Path, held_out: Path, as_json: bool, all_languages: bool = False
) -> int:
    rules = _rules(rules_path)
    folder = kb_folder(rules, rules_path)
    articles = read_articles(folder)
    if not articles:
        print(f"deskbot kb eval: no articles in {folder}", file=sys.stderr)
        return 2
    encoder = Encoder.load(os.environ.get("DESK_ENCODER") or None, quantize=True)
    index = Index(
        articles, unit(encoder.sentence(encoder.encode([a.embedding_text() for a in articles])))
    )
    default = rules.texts.default_language
    gate = None if all_languages else rules.kb.languages
    tuned = score_questions(encoder, index, read_questions(tune), default, gate)
    held = score_questions(encoder, index, read_questions(held_out), default, gate)
    chosen = choose_threshold(tuned, THRESHOLDS)
    configured = rules.kb.suggest_at
    result: dict[str, Any] = {
        "articles": len(articles),
        "languages": "all" if gate is None else list(gate),
        "chosen_on_tune": chosen.threshold,
        "configured": configured,
        "tune": [figures(tuned, t).as_dict() for t in THRESHOLDS],
        "held_out": [figures(held, t).as_dict() for t in THRESHOLDS],
        "held_out_at_configured": figures(held, configured).as_dict(),
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{len(articles)} articles in {folder}; tune {tune.name} ({len(tuned)} questions),"
        f" held out {held_out.name} ({len(held)} questions); answered before a ticket in: "
        + ("every language (--all-languages)" if gate is None else ", ".join(gate))
    )
    print(
        _table(
            "tune set (the threshold is chosen here):",
            [figures(tuned, t) for t in THRESHOLDS],
            chosen.threshold,
        )
    )
    print(
        _table("held-out set (reported only):", [figures(held, t) for t in THRESHOLDS], configured)
    )
    at = figures(held, configured)
    print(
        f"chosen on the tune set: {chosen.threshold:.2f} (most right answers less"
        f" 3 × wrong ones); rules.yaml kb.suggest_at = {configured:.2f}: on the held-out set"
        f" {at.right_share:.1%} answered right, {at.wrong_share:.1%} wrongly deflected"
        f" ({at.unanswerable_share:.1%} of questions no article answers)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deskbot kb", description=__doc__)
    parser.add_argument("--rules", type=Path, default=None, help="rules.yaml (default DESK_RULES)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("index", help="embed new and changed articles into the stored index")
    ev = sub.add_parser("eval", help="answered right / wrongly deflected per threshold")
    ev.add_argument("--tune", type=Path, help="default: <kb>/questions/tune.yaml")
    ev.add_argument("--held-out", type=Path, help="default: <kb>/questions/held_out.yaml")
    ev.add_argument("--json", action="store_true")
    ev.add_argument(
        "--all-languages",
        action="store_true",
        help="measure as if kb.languages listed every language of the articles",
    )
    args = parser.parse_args(argv)

    rules_path = args.rules or Path(os.environ.get("DESK_RULES") or "rules.yaml")
    try:
        if args.command == "index":
            return asyncio.run(_index(rules_path))
        folder = kb_folder(_rules(rules_path), rules_path)
        return _eval(
            rules_path,
            args.tune or folder / "questions" / "tune.yaml",
            args.held_out or folder / "questions" / "held_out.yaml",
            args.json,
            args.all_languages,
        )
    except (ArticleError, RulesError, SettingsError, EncoderError, OSError) as exc:
        print(f"deskbot kb: {exc}", file=sys.stderr)
        return 2
