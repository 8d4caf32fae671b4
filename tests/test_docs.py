"""The documentation's links hold: every relative link in README.md and docs/*.md names a file of this repository,
and every #anchor a heading of its target (GitHub's rule: lower case, punctuation dropped, spaces to hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The page without its fenced code blocks and HTML comments (neither holds links or headings)."""
    text = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (a repeated one gets -1, -2, ...)."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n, candidate = 0, slug
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_pages_exist():
    assert (REPO / "docs").is_dir() and len(PAGES) > 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or REPO not in path.parents:
            broken.append(f"{target}: no such file")
        elif anchor and (path.is_dir() or anchor not in anchors(path)):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_the_anchor_rule_is_githubs():
    page = REPO / "README.md"
    assert {"the-first-hour", "the-real-result", "python-api"} <= anchors(page)
    assert "one-machine---jobs-n" in anchors(REPO / "docs" / "scaling.md")  # One machine: `--jobs N`
    assert "the-seeds-table-and-ours" in anchors(REPO / "docs" / "results.md")  # The seed's table and ours
