"""The README's and docs/' relative links lead somewhere: the file exists, and a #fragment names one of its headings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens (outside code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text("utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    assert broken == [], broken


def test_the_benchmark_history_lives_on_its_own_page_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    benchmarks = readme.split("\n## Benchmarks\n", 1)[1].split("\n## ", 1)[0]
    assert "](docs/BENCHMARKS.md)" in benchmarks
    history = (ROOT / "docs" / "BENCHMARKS.md").read_text("utf-8")
    assert "## Version 0.1.0 (December 2026)" in history
    times = "\N{MULTIPLICATION SIGN}"
    for earlier in (f"{times}3.7 the bare echo", f"{times}4.30"):  # earlier figures: on the history page only
        assert earlier in history and earlier not in readme
