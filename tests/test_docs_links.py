"""The README and the pages in docs/ link to files that exist and to headings that exist.

Every relative link (``[text](path)``, ``![alt](path)``, ``[ref]: path``, ``href=``/``src=``)
in README.md and docs/*.md must name a file in the repository, and a ``#anchor`` must be the
GitHub slug of a heading in the page it points into. http(s) and mailto links are not checked
(nothing here goes on the network). The README must link to every docs page, so that none is
orphaned, and every page links back to the README.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # the text, which may hold one level of [brackets]
    r"\(\s*(<[^>]*>|[^)\s]+)"  # the target, bare or in <angle brackets>
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"  # an optional title
)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_TARGET = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
ATX_HEADING = re.compile(r"^\s{0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: a ``# comment`` in a YAML block is no
    heading, and a link in a shell example is no link."""
    out: list[tuple[int, str]] = []
    fence = ""
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            continue
        if opening:
            fence = opening.group(1)
            continue
        out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, without punctuation
    (letters, digits, ``_`` and ``-`` stay), each space a hyphen."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")  # code and emphasis marks are not rendered
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes in a Markdown page; a repeated heading gets -1, -2, …"""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(HTML_ANCHOR.findall(line))
        heading = ATX_HEADING.match(line)
        if not heading:
            continue
        base = slug(heading.group(2) or "")
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in the page's prose, inline code left out."""
    out: list[tuple[int, str]] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        found = [*INLINE_LINK.finditer(line), *HTML_TARGET.finditer(line)]
        reference = REFERENCE.match(line)
        if reference:
            found.append(reference)
        out += [(number, m.group(1).strip("<>")) for m in sorted(found, key=lambda m: m.start())]
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of one page, as ``file:line: target: why``."""
    problems: list[str] = []
    for number, target in links(path):
        if target.lower().startswith(EXTERNAL):
            continue
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        goal = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not goal.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not goal.exists():
            problems.append(f"{where}: no such file")
        elif anchor and goal.suffix == ".md" and unquote(anchor) not in anchors(goal):
            problems.append(f"{where}: no heading with that anchor in {goal.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_to_every_docs_page() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README)
        if not target.lower().startswith(EXTERNAL)
    }
    orphans = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert orphans == [], "docs pages the README does not link to"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_starts_with_a_summary_and_a_way_back(page: Path) -> None:
    lines = [line for line in page.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# "), "a page starts with its title"
    assert "](../README.md)" in lines[1], "then one line: what the page is, and the README"


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# A page\n\n## Supervisors' numbers: `/desk stats`, roles and audit\n\n## Twice\n\n"
        "## Twice\n",
        encoding="utf-8",
    )
    (tmp_path / "pic.png").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n\n"
        "[ok](docs/page.md#supervisors-numbers-desk-stats-roles-and-audit) "
        "[ok](docs/page.md#twice-1) ![ok](pic.png) [ok](#top) [web](https://example.com/x)\n"
        "[gone](docs/nothing.md) [bad anchor](docs/page.md#twice-2) [self](#nowhere)\n"
        "`[in code](docs/nothing.md)`\n\n"
        "```\n[in a fence](docs/nothing.md)\n```\n\n"
        '<img src="docs/missing.png"> [out](../outside.md)\n',
        encoding="utf-8",
    )
    found = broken_links(readme, root=tmp_path)
    assert found == [
        "README.md:4: docs/nothing.md: no such file",
        "README.md:4: docs/page.md#twice-2: no heading with that anchor in docs/page.md",
        "README.md:4: #nowhere: no heading with that anchor in README.md",
        "README.md:11: docs/missing.png: no such file",
        "README.md:11: ../outside.md: leaves the repository",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        (
            "Supervisors' numbers: `/desk stats`, `deskbot report`, roles and audit",
            "supervisors-numbers-desk-stats-deskbot-report-roles-and-audit",
        ),
        ("The agent's console in Slack", "the-agents-console-in-slack"),
        ("Replies that cannot leak: `slack.relay`", "replies-that-cannot-leak-slackrelay"),
        (
            "Chaos: several processes, SIGKILL and a database cut",
            "chaos-several-processes-sigkill-and-a-database-cut",
        ),
        ("Home: my queue in the app's Home tab", "home-my-queue-in-the-apps-home-tab"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
