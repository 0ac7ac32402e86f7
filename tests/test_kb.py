"""The knowledge base's pure parts (articles, extracts, search, figures) and its stored index."""

from __future__ import annotations

import functools
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from bot.domain.classifier import Classification
from bot.domain.rules import load_rules
from bot.selfservice.kb import KnowledgeBase, deflectable
from nlp.encoder import Encoder
from nlp.kb import (
    Article,
    ArticleError,
    Index,
    Question,
    Scored,
    choose_threshold,
    extract,
    figures,
    parse_article,
    read_articles,
)
from storage.db import create_engine, migrate, session_factory
from storage.models import KbArticle

ROOT = Path(__file__).parent.parent
RULES = load_rules(ROOT / "rules.yaml")
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_articles_parse_in_four_languages() -> None:
    articles = read_articles(ROOT / "kb")
    assert len(articles) >= 12
    assert {a.language for a in articles} == {"en", "zh", "es", "ru"}
    reset = next(a for a in articles if a.slug == "reset-password")
    assert reset.title == "Reset your password"
    assert reset.tags == ("account", "login", "password")
    assert reset.url == "https://help.example.com/articles/reset-password"
    assert reset.extract.startswith("If you forgot your password, open the sign-in page and")
    assert "**" not in reset.extract  # Markdown is taken off for a chat message


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no front matter", "no front matter"),
        ("---\ntitle: [unclosed\n---\nbody", "not valid YAML"),
        ("---\nlanguage: en\n---\nbody", "title: field required"),
        ("---\ntitle: T\n---\nbody", "language: a language tag"),
        ("---\ntitle: T\nlanguage: en\nurl: ftp://x\n---\nbody", "url: must be an http"),
        ("---\ntitle: T\nlanguage: en\ntags: refund\n---\nbody", "tags: must be a list"),
        ("---\ntitle: T\nlanguage: en\nauthor: me\n---\nbody", "unknown front matter"),
        ("---\ntitle: T\nlanguage: en\n---\n", "has no text"),
    ],
)
def test_a_broken_article_names_its_file_and_field(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, "broken.md", text)
    with pytest.raises(ArticleError, match=error) as caught:
        parse_article(path)
    assert "broken.md" in str(caught.value)


def test_an_extract_stops_at_a_sentence_within_the_limit() -> None:
    body = "First sentence is here. " * 30 + "\n\nSecond paragraph."
    cut = extract(body, 100)
    assert cut.endswith(".") and len(cut) <= 100
    assert extract("Short [link](https://x.example) and *bold*.") == "Short link and bold."


def _article(slug: str, language: str) -> Article:
    return Article(slug, slug, language, (), None, "text", "0" * 64)


def test_search_only_looks_at_articles_in_the_language_asked() -> None:
    vectors = np.eye(3, dtype=np.float32)
    index = Index([_article("a", "en"), _article("b", "es"), _article("c", "en")], vectors)
    query = np.array([0.1, 0.9, 0.2], dtype=np.float32)
    assert [h.article.slug for h in index.search(query, "en", 3)] == ["c", "a"]
    assert [h.article.slug for h in index.search(query, "es", 3)] == ["b"]
    assert index.search(query, "ru", 3) == []


def test_figures_count_right_answers_and_wrong_deflections() -> None:
    scored = [
        Scored(Question("q1", "a"), "a", 0.8),  # right
        Scored(Question("q2", "a"), "b", 0.7),  # wrong article
        Scored(Question("q3", "b"), "b", 0.5),  # right, but only below 0.6
        Scored(Question("q4", None), "a", 0.65),  # nothing answers it: wrongly deflected
        Scored(Question("q5", None), "b", 0.3),
    ]
    at = figures(scored, 0.6)
    assert (at.right, at.wrong_article, at.deflected_unanswerable) == (1, 1, 1)
    assert at.right_share == pytest.approx(1 / 3) and at.wrong_share == pytest.approx(2 / 5)
    # 0.75: 1 right, 0 wrong (worth 1) beats 0.4: 2 right, 2 wrong (worth 2 - 6).
    assert choose_threshold(scored, (0.4, 0.75)).threshold == 0.75


def test_urgent_or_angry_messages_are_not_deflectable() -> None:
    calm = Classification("normal", (), "m", {"anger": 0.1, "sentiment_scores": {"negative": 0.2}})
    assert deflectable(calm, RULES)
    assert not deflectable(Classification("urgent", ("keyword 'fraud'",), "m"), RULES)
    assert not deflectable(Classification("high", (), "m", {"anger": 0.9}), RULES)
    upset = Classification("high", (), "m", {"sentiment_scores": {"negative": 0.95}})
    assert not deflectable(upset, RULES)


@functools.cache
def encoder() -> Encoder:
    return Encoder.load(quantize=True)


async def test_the_index_is_stored_and_only_changed_articles_are_embedded_again(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    for name in ("reset-password.md", "track-order.md", "refund-status.md"):
        shutil.copy(ROOT / "kb" / name, folder / name)
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        kb = KnowledgeBase(folder, encoder())
        first = await kb.sync(sessions, NOW)
        assert (first.added, first.changed, first.removed, first.unchanged) == (3, 0, 0, 0)
        hits = await kb.search("I forgot my password", "en", 1)
        assert hits[0].article.slug == "reset-password" and hits[0].score > 0.5

        again = await KnowledgeBase(folder, encoder()).sync(sessions, NOW)
        assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 3)

        track = folder / "track-order.md"
        track.write_text(track.read_text(encoding="utf-8") + "\nNew paragraph.\n", "utf-8")
        (folder / "refund-status.md").unlink()
        kb = KnowledgeBase(folder, encoder())
        changed = await kb.sync(sessions, NOW)
        assert (changed.added, changed.changed, changed.removed, changed.unchanged) == (
            0,
            1,
            1,
            1,
        )
        async with sessions() as s:
            stored = (await s.scalars(select(KbArticle.slug).order_by(KbArticle.slug))).all()
        assert stored == ["reset-password", "track-order"]
        assert [a.slug for a in kb.index.articles] == ["reset-password", "track-order"]
    finally:
        await engine.dispose()


def test_the_answer_fits_a_whatsapp_body_with_its_title_and_link_whole() -> None:
    from bot.selfservice.kb import answer_text

    texts = RULES.texts.for_language("en")
    long = Article(
        "long",
        "A title " * 30,
        "en",
        (),
        "https://help.example.com/" + "x" * 400,
        "Word " * 600,
        "0" * 64,
    )
    text = answer_text(texts, long)
    assert len(text) <= 1024
    assert text.endswith(long.url or "") and long.title in text


def test_the_two_buttons_must_have_different_titles() -> None:
    from bot.domain.rules import RulesError, parse_rules

    with pytest.raises(RulesError, match="kb_solved and kb_person must differ"):
        parse_rules(
            {
                "version": 1,
                "texts": {
                    "languages": {
                        "en": {
                            "welcome": "w",
                            "ack": "a",
                            "resolved": "r",
                            "rating_thanks": "t",
                            "reopened": "o",
                            "kb_solved": "OK",
                            "kb_person": "OK",
                        }
                    }
                },
            }
        )


def test_kb_eval_picks_the_shipped_threshold_on_the_tune_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default kb.suggest_at is what `deskbot kb eval` chooses on the tune questions."""
    import json

    from bot.commands.kb import main

    assert main(["--rules", str(ROOT / "rules.yaml"), "eval", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chosen_on_tune"] == RULES.kb.suggest_at == result["configured"]
    held = result["held_out_at_configured"]
    assert held["answerable"] >= 30 and held["unanswerable"] >= 15
    assert held["right_share"] >= 0.4 and held["wrong_share"] <= 0.05


def test_kb_index_stores_the_articles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.commands.kb import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    assert main(["--rules", str(ROOT / "rules.yaml"), "index"]) == 0
    first = capsys.readouterr().out
    assert "15 articles (en, es, ru, zh); 15 added, 0 changed, 0 removed, 0 unchanged" in first
    assert main(["--rules", str(ROOT / "rules.yaml"), "index"]) == 0
    assert "0 added, 0 changed, 0 removed, 15 unchanged" in capsys.readouterr().out
