"""results/README.md lists every file under results/ once, with its command, and nothing else.

A benchmark or a reproduction that writes a new file must add its row; a file no command
writes any more must be deleted (its commit keeps it)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MANIFEST = RESULTS / "README.md"
ROW = re.compile(r"^\| `([^`]+)` \|(.*)\|\s*$")


def manifest_rows(text: str) -> list[tuple[str, str]]:
    """(file, command) of every table row whose first cell is one backticked path."""
    rows = []
    for line in text.splitlines():
        found = ROW.match(line)
        if found:
            cells = [cell.strip() for cell in found.group(2).split(" | ")]
            rows.append((found.group(1), cells[-1]))
    return rows


def files_under(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path != MANIFEST
    }


def test_every_file_is_listed_once_and_every_listed_file_exists() -> None:
    rows = manifest_rows(MANIFEST.read_text(encoding="utf-8"))
    listed = Counter(name for name, _ in rows)
    twice = sorted(name for name, count in listed.items() if count > 1)
    assert not twice, f"results/README.md lists these more than once: {twice}"
    present = files_under(RESULTS)
    unlisted = sorted(present - set(listed))
    assert not unlisted, f"in results/ but not in results/README.md (add a row): {unlisted}"
    missing = sorted(set(listed) - present)
    assert not missing, f"in results/README.md but not in results/ (remove the row): {missing}"


def test_every_row_names_its_command() -> None:
    for name, command in manifest_rows(MANIFEST.read_text(encoding="utf-8")):
        assert command and command != "–", f"results/README.md: {name} has no command"


def test_the_parser_sees_rows_and_only_rows() -> None:
    text = (
        "| file | what | command |\n|---|---|---|\n"
        "| `a.md` | a table | `python x.py` |\n"
        "Some `b.md` prose.\n"
        "| `figures/c.png` | a figure | the command above |\n"
    )
    assert manifest_rows(text) == [
        ("a.md", "`python x.py`"),
        ("figures/c.png", "the command above"),
    ]
