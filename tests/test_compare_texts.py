"""``dep-eval compare-texts``: the check that a refactor changes no generated text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dep_eval import cli


def _run(folder: Path, texts: dict[int, str]) -> Path:
    """An lm_eval --log_samples folder holding ``texts`` (doc_id -> generation)."""
    model = folder / "model"
    model.mkdir(parents=True)
    rows = [{"doc_id": doc, "filtered_resps": [text]} for doc, text in texts.items()]
    (model / "samples_task_2026.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_identical_runs_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _run(tmp_path / "a", {0: "good", 1: "fine"})
    after = _run(tmp_path / "b", {1: "fine", 0: "good"})
    cli.main(["compare-texts", str(before), str(after)])
    assert "2/2 documents identical" in capsys.readouterr().out


def test_a_changed_text_fails_and_shows_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _run(tmp_path / "a", {0: "good", 1: "fine", 2: "ok"})
    after = _run(tmp_path / "b", {0: "good", 1: "finer"})
    with pytest.raises(SystemExit) as exit_:
        cli.main(["compare-texts", str(before), str(after)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "1/3 documents identical" in out
    assert "first difference, doc 1:\n  before: 'fine'\n  after:  'finer'" in out


def test_a_folder_without_samples_is_refused(tmp_path: Path) -> None:
    after = _run(tmp_path / "b", {0: "good"})
    with pytest.raises(SystemExit, match="expected one samples_\\*.jsonl, found 0"):
        cli.main(["compare-texts", str(tmp_path / "missing"), str(after)])


def test_a_row_that_is_not_a_samples_row_names_its_line(tmp_path: Path) -> None:
    folder = _run(tmp_path / "a", {0: "good"})
    path = next(folder.rglob("samples_*.jsonl"))
    path.write_text(path.read_text() + '{"doc_id": 1}\n')
    with pytest.raises(SystemExit, match=r"samples_task_2026\.jsonl:2: not an lm-eval"):
        cli.main(["compare-texts", str(folder), str(folder)])
