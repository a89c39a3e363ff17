"""Every relative link of README.md, docs/*.md and results/README.md names a file that exists,
so that deleting or moving a file cannot leave a dangling pointer behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    """Link targets that are paths in this repository (no URL, no in-page anchor)."""
    targets = [target.split("#")[0] for target in LINK.findall(text)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in relative_links(page.read_text(encoding="utf-8"))
        if not (page.parent / target).exists()
    ]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_links_are_found_and_urls_and_anchors_skipped() -> None:
    text = "[a](docs/x.md) [b](https://x.org/y) [c](#top) [d](../results/r.md#part)"
    assert relative_links(text) == ["docs/x.md", "../results/r.md"]
