"""Slices (dep_eval/report/slices.py): recording per-document fields, bucketing, per-slice
metrics with intervals and paired marks, the gain over Non-Perso, the command and its plot.

The runs are written in lm-eval's layout by tests/fixtures/make_leaderboard_fixtures.py's
writer, with MADE-UP per-document scores: DEP gains nothing on short profiles and a lot on
long ones, so the slices must show it.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dep_eval.report import slices

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DOCUMENTS = 60


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_leaderboard_fixtures as module
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(module, "ROOT", tmp_path / "runs")
    return module


def documents(method: str) -> list[dict[str, Any]]:
    base, noise = random.Random(0), random.Random(method)
    rows = []
    for i in range(DOCUMENTS):
        size = 2 + (i % 20)  # profile sizes 2..21
        r1, me = base.uniform(0.1, 0.3), base.uniform(0.05, 0.25)
        lift = 0.08 if (method == "dep" and size >= 12) else 0.0
        jitter = noise.uniform(-0.005, 0.005) if method != "nonperso" else 0.0
        row = {
            "rouge1": r1 + lift + jitter,
            "rougeL": r1 - 0.05 + lift + jitter,
            "meteor": me + lift + jitter,
            "bleu": [30, 30, 10 + (5 if lift else 0), 5, 2, 1, 30, 29, 28, 27],
            "profile_size": float(size),
        }
        if method == "dep":
            row |= {"dep_peers": float(i % 5), "dep_diff_slots": float(min(i % 5, 8))}
        rows.append(row)
    return rows


def write_runs(maker: Any) -> Path:
    for hour, method in enumerate(("nonperso", "rag", "dep")):
        scores = documents(method)
        metrics = {
            k: float(np.mean([r[k] for r in scores])) for k in scores[0] if not k.startswith("bleu")
        }
        metrics["bleu"] = 1.0
        maker.write_run(
            "slices",
            f"2026-06-01T1{hour}-00-00",
            method,
            {},
            {"Books": metrics},
            limit=None,
            n_samples=DOCUMENTS,
            samples={"Books": maker._sample_lines(scores)},
        )
    return maker.ROOT / "slices"


def test_record_and_document_fields() -> None:
    doc = {
        "user_id": "U1",
        "category": "Books",
        "profile": [{"asin": "A", "rating": 4.0, "title": "t", "text": "x", "timestamp": 1}] * 3,
        "target": {"asin": "B", "rating": 5.0, "title": "t", "text": "y", "timestamp": 9},
        "item": {"asin": "B", "title": "", "description": ""},
        "source": "local:/d",
        "split": "test",
        "row": 1,
    }
    slices.clear()
    assert slices.document_fields(doc) == {"profile_size": 3.0}
    slices.record("Books/test/U1/B/9", dep_peers=4, dep_diff_slots=2)
    assert slices.document_fields(doc) == {
        "profile_size": 3.0,
        "dep_peers": 4.0,
        "dep_diff_slots": 2.0,
    }
    assert slices.document_fields({"text": "not this project's layout"}) == {}
    with pytest.raises(ValueError, match="unknown slice field"):
        slices.record("k", peers=1)


def test_buckets() -> None:
    values = {f"d{i}": float(i % 5) for i in range(10)}
    got = slices.edge_slices(values, (1, 3), "peers")
    assert [label for label, _ in got] == ["0 peers", "1-2 peers", "3+ peers"]
    assert [len(keys) for _, keys in got] == [2, 4, 4]
    run = slices.Run("X", "x", None, {"profile_size": {f"d{i}": float(i) for i in range(1, 9)}})
    buckets = slices.profile_slices(run, 4)
    assert [label for label, _ in buckets] == ["1-2", "3-4", "5-6", "7-8"]
    assert [label for label, _ in slices.cold_slices(run, 3)] == ["<= 3 reviews", "> 3 reviews"]


def test_gain_is_the_paired_difference_with_its_interval() -> None:
    mine = {f"d{i}": 0.3 + 0.01 * i for i in range(30)}
    base = {f"d{i}": 0.2 + 0.01 * i for i in range(30)}
    cell = slices.gain(mine, base, sorted(mine), "rouge1")
    assert cell.n == 30 and cell.value == pytest.approx(0.1)
    assert cell.low == pytest.approx(0.1) and cell.high == pytest.approx(0.1)  # no spread


@pytest.mark.slow
def test_slices_show_where_dep_gains(maker: Any) -> None:
    folder = write_runs(maker)
    columns, notes = slices.load_runs([folder])
    assert list(columns) == ["Books"] and not notes
    tables, more = slices.build_tables(columns, slices.SliceOptions())
    assert not more
    profile, peers, cold = tables
    assert [label for label, _ in peers.slices] == ["0 peers", "1-2 peers", "3+ peers"]
    assert [len(keys) for _, keys in peers.slices] == [12, 24, 24]
    short, *_, long = profile.slices
    assert profile.gains[("DEP", "rouge1", long[0])].low > 0.05  # long profiles: clear gain
    short_gain = profile.gains[("DEP", "rouge1", short[0])]
    assert short_gain.low < 0 < short_gain.high  # short profiles: none
    assert profile.cells[("DEP", "meteor", long[0])].test[1] < 0.05  # ▲ against Non-Perso
    assert profile.cells[("Non-Perso", "meteor", long[0])].test is None  # the reference
    assert ("RAG", "rouge1", long[0]) in profile.gains
    cold_cell = cold.cells[("DEP", "rouge1", "<= 8 reviews")]
    assert cold_cell.n == sum(1 for i in range(DOCUMENTS) if 2 + i % 20 <= 8)


@pytest.mark.slow
def test_leaderboard_slices_command_writes_report_and_plot(maker: Any, tmp_path: Path) -> None:
    from dep_eval.cli import main

    folder = write_runs(maker)
    out, figures = tmp_path / "slices.md", tmp_path / "figures"
    main(
        ["leaderboard", str(folder), "--slices", "--output", str(out), "--slice-plot", str(figures)]
    )
    text = out.read_text()
    assert "Books: profile length" in text and "Books: number of peers DEP found" in text
    assert "Books: cold start" in text and "gain over Non-Perso by profile length" in text
    assert "▲" in text and "| DEP | R-1 |" in text
    assert (figures / "slices_gain_Books.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="--peer-edges"):
        main(["leaderboard", str(folder), "--slices", "--peer-edges", "3,1"])


def test_runs_without_slice_fields_are_named(maker: Any) -> None:
    scores = [{k: v for k, v in row.items() if k != "profile_size"} for row in documents("rag")]
    maker.write_run(
        "old", "2026-06-01T10-00-00", "rag", {}, {"Books": {"rouge1": 0.2}},
        limit=None, n_samples=DOCUMENTS, samples={"Books": maker._sample_lines(scores)},
    )  # fmt: skip
    with pytest.raises(ValueError, match="no run with per-document slice fields"):
        slices.slice_report([maker.ROOT / "old"], slices.SliceOptions())
