"""The knowledge base: Markdown articles with YAML front matter, their vectors, and matching.

An article is ``kb/<slug>.md``::

    ---
    title: Reset your password
    language: en
    tags: [account, password]
    url: https://help.example.com/articles/reset-password   # optional
    ---
    The answer, in Markdown.

The front matter is parsed with PyYAML (a dependency already; python-frontmatter would only
split the same two ``---`` lines). Everything here is pure: reading files, hashing, extracts and
cosine search over unit vectors; the desk stores the vectors (bot/selfservice/kb.py) and the
encoder makes
them (nlp/encoder.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

Vectors = npt.NDArray[np.float32]

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,79}")
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)
EXTRACT_CHARS = 400  # the customer's answer: a short extract (WhatsApp bodies allow 1024)


class ArticleError(ValueError):
    """An article file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Article:
    slug: str  # the file name without .md: the article's id in the index and in button data
    title: str
    language: str
    tags: tuple[str, ...]
    url: str | None
    body: str
    content_hash: str  # sha256 of the file's bytes: a changed article is embedded again

    @property
    def extract(self) -> str:
        return extract(self.body)

    def embedding_text(self) -> str:
        """What is embedded: the title (a question, often) and the body's first paragraph,
        which is where articles answer; MiniLM reads 128 tokens anyway."""
        first = next((p for p in re.split(r"\n\s*\n", self.body.strip()) if p.strip()), "")
        return f"{self.title}. {_plain(first)}"


def _plain(markdown: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", markdown)  # [text](link) → text
    text = re.sub(r"[*_`#>]+", "", text)
    return re.sub(r"\s+", " ", text).strip()


def extract(body: str, limit: int = EXTRACT_CHARS) -> str:
    """The first paragraph in plain text, cut at a sentence (else a word) within ``limit``."""
    first = next((p for p in re.split(r"\n\s*\n", body.strip()) if p.strip()), "")
    text = _plain(first)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("。"), cut.rfind("! "), cut.rfind("? "))
    if end >= limit // 2:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0] + "…"


def parse_article(path: Path) -> Article:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArticleError(f"{path}: not UTF-8 ({exc})") from None
    m = _FRONT.match(text.lstrip("\ufeff"))
    if m is None:
        raise ArticleError(f"{path}: no front matter (a '---' block with title and language)")
    try:
        meta = yaml.safe_load(m[1])
    except yaml.YAMLError as exc:
        raise ArticleError(f"{path}: front matter is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise ArticleError(f"{path}: front matter must be a mapping")
    slug = path.stem.lower()
    if not SLUG.fullmatch(slug):
        raise ArticleError(f"{path}: file name must be a slug (a-z, 0-9, - and _)")
    title, language = meta.get("title"), meta.get("language")
    if not isinstance(title, str) or not title.strip():
        raise ArticleError(f"{path}: title: field required")
    if not isinstance(language, str) or not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", language):
        raise ArticleError(f"{path}: language: a language tag like en or zh is required")
    tags = meta.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ArticleError(f"{path}: tags: must be a list of words")
    url = meta.get("url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("https://", "http://"))
    ):
        raise ArticleError(f"{path}: url: must be an http(s) address")
    unknown = set(meta) - {"title", "language", "tags", "url"}
    if unknown:
        raise ArticleError(f"{path}: unknown front matter field(s): {', '.join(sorted(unknown))}")
    body = m[2].strip()
    if not body:
        raise ArticleError(f"{path}: the article has no text")
    return Article(
        slug=slug,
        title=title.strip(),
        language=language.split("-")[0],
        tags=tuple(tags),
        url=url,
        body=body,
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def read_articles(folder: Path) -> list[Article]:
    """Every ``*.md`` directly in ``folder``, sorted by slug (subfolders hold other things)."""
    if not folder.is_dir():
        return []
    articles = [parse_article(p) for p in sorted(folder.glob("*.md"))]
    seen: set[str] = set()
    for a in articles:
        if a.slug in seen:
            raise ArticleError(f"{folder}: two articles named {a.slug}")
        seen.add(a.slug)
    return articles


@dataclass(frozen=True, slots=True)
class Hit:
    article: Article
    score: float  # cosine similarity


@dataclass
class Index:
    """Articles and their unit vectors (one row each); search is a dot product."""

    articles: list[Article] = field(default_factory=list)
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.articles)

    def languages(self) -> set[str]:
        return {a.language for a in self.articles}

    def search(self, vector: Vectors, language: str | None, k: int = 3) -> list[Hit]:
        """The ``k`` best articles in ``language`` (every language when None), best first.

        Only the message's language is searched: the encoder is English-first, and an answer in
        another language than the question is no answer for the customer anyway."""
        if not self.articles:
            return []
        rows = [
            i for i, a in enumerate(self.articles) if language is None or a.language == language
        ]
        if not rows:
            return []
        scores = self.vectors[rows] @ vector.astype(np.float32)
        order = np.argsort(-scores)[:k]
        return [Hit(self.articles[rows[int(i)]], float(scores[int(i)])) for i in order]


def unit(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    article: str | None  # the slug that answers it, or None when none does


def read_questions(path: Path) -> list[Question]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise ArticleError(f"{path}: a list of {{q, article}} is expected")
    out = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("q"), str):
            raise ArticleError(f"{path}: item {n}: q: a question is required")
        article = item.get("article")
        out.append(Question(item["q"], None if article is None else str(article)))
    return out


@dataclass(frozen=True, slots=True)
class Scored:
    question: Question
    best: str | None  # the top article's slug (in the question's language), if any
    score: float


@dataclass(frozen=True, slots=True)
class Figures:
    threshold: float
    answerable: int
    unanswerable: int
    right: int  # answerable, suggested, and the suggested article is the one that answers
    wrong_article: int  # answerable, suggested, another article
    deflected_unanswerable: int  # no article answers it, yet one was suggested

    @property
    def right_share(self) -> float:
        return self.right / self.answerable if self.answerable else 0.0

    @property
    def wrong(self) -> int:
        return self.wrong_article + self.deflected_unanswerable

    @property
    def wrong_share(self) -> float:
        """Wrongly deflected, as a share of all questions asked."""
        total = self.answerable + self.unanswerable
        return self.wrong / total if total else 0.0

    @property
    def unanswerable_share(self) -> float:
        return self.deflected_unanswerable / self.unanswerable if self.unanswerable else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "answerable": self.answerable,
            "unanswerable": self.unanswerable,
            "right": self.right,
            "right_share": round(self.right_share, 4),
            "wrong_article": self.wrong_article,
            "deflected_unanswerable": self.deflected_unanswerable,
            "wrong_share": round(self.wrong_share, 4),
        }


def figures(scored: Sequence[Scored], threshold: float) -> Figures:
    answerable = [s for s in scored if s.question.article is not None]
    unanswerable = [s for s in scored if s.question.article is None]
    on = [s for s in answerable if s.best is not None and s.score >= threshold]
    return Figures(
        threshold=threshold,
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        right=sum(1 for s in on if s.best == s.question.article),
        wrong_article=sum(1 for s in on if s.best != s.question.article),
        deflected_unanswerable=sum(
            1 for s in unanswerable if s.best is not None and s.score >= threshold
        ),
    )


# A wrong suggestion costs a customer a wrong answer and a click; a missed one costs an agent a
# ticket they would have had anyway. Counted three to one when choosing the threshold.
WRONG_COST = 3.0


def choose_threshold(scored: Sequence[Scored], candidates: Iterable[float]) -> Figures:
    """The candidate with the most right answers less ``WRONG_COST`` × wrong ones; ties go to
    the higher threshold (fewer suggestions for the same worth)."""
    best: Figures | None = None
    for t in candidates:
        f = figures(scored, t)
        worth = f.right - WRONG_COST * f.wrong
        if best is None or worth >= best.right - WRONG_COST * best.wrong:
            best = f
    assert best is not None
    return best
