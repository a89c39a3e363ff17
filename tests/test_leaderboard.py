"""Leaderboard and plots on the committed, made-up lm-eval results in fixtures/leaderboard.

The fixtures come from tests/fixtures/make_leaderboard_fixtures.py (see its docstring for
what each scenario holds); ``test_fixtures_match_their_generator`` keeps the two in step.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import logging
import re
from pathlib import Path

import pytest

from dep_eval.leaderboard import add_leaderboard_parser, choose_format
from dep_eval.plots import add_plot_parser, plot_all
from dep_eval.report.render import render, to_csv, to_latex, to_markdown
from dep_eval.report.results import load_results, parse_args, parse_typed_args
from dep_eval.report.table import (
    AVERAGE,
    COST,
    Leaderboard,
    Metric,
    build_leaderboard,
    leaderboard_from_paths,
    rank_marks,
)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = FIXTURES / "leaderboard"
MAIN = ROOT / "main"
MISMATCHED = ROOT / "mismatched"
K_ABLATION = ROOT / "k_ablation"
CUSTOM = ROOT / "custom"


def cell(board: Leaderboard, row_label: str, title: str) -> float | None:
    row = next(r for r in board.rows if r.label == row_label)
    return row.values[[c.title for c in board.columns].index(title)]


def mark(board: Leaderboard, row_label: str, title: str) -> str | None:
    row = next(r for r in board.rows if r.label == row_label)
    return row.marks[[c.title for c in board.columns].index(title)]


@pytest.fixture(scope="module")
def main_board() -> Leaderboard:
    return leaderboard_from_paths([MAIN])


@pytest.fixture(scope="module")
def mismatched_board() -> Leaderboard:
    return leaderboard_from_paths([MISMATCHED])


# --------------------------------------------------------------------------- fixtures


def test_fixtures_match_their_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_leaderboard_fixtures", FIXTURES / "make_leaderboard_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = tmp_path / "leaderboard"
    module.main()
    made = {p.relative_to(module.ROOT): p.read_bytes() for p in module.ROOT.rglob("*.json")}
    committed = {p.relative_to(ROOT): p.read_bytes() for p in ROOT.rglob("*.json")}
    assert made == committed, "re-run tests/fixtures/make_leaderboard_fixtures.py"


# --------------------------------------------------------------------------- reading


def test_reads_tasks_and_skips_groups_and_foreign_tasks() -> None:
    results, _ = load_results([CUSTOM])
    assert {(r.task, r.column) for r in results} == {
        ("amazon_review_personalized_custom", "All_Beauty"),  # category from metadata
        ("amazon_review_personalized_custom", "Digital_Music (val)"),  # split from metadata
    }
    results, _ = load_results([MAIN])
    tasks = {r.task for r in results}
    assert "amazon_review_personalized" not in tasks  # the group entry
    assert {r.column for r in results} == {"Books", "Movies_and_TV", "CDs_and_Vinyl", "Books (val)"}


def test_newest_run_wins_and_the_older_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        board = leaderboard_from_paths([MAIN])
    assert cell(board, "Non-Perso", "Books R-1") == pytest.approx(0.2512)
    assert any("superseded" in note and "2026-01-09" in note for note in board.notes)
    assert "older run ignored" in caplog.text


def test_model_args_parsing() -> None:
    assert parse_args("pretrained=a/b,k=4,use_diff=False") == {
        "pretrained": "a/b",
        "k": "4",
        "use_diff": "false",
    }
    assert parse_args({"k": 4.0, "use_diff": False}) == {"k": "4", "use_diff": "false"}
    # the text form is read as lm-eval read it on the command line: the same run written
    # "k=4.0,peft=None" or "k=4,peft=none" is one row
    assert (
        parse_args("k=4.0,peft=None")
        == parse_args("k=4,peft=none")
        == {
            "k": "4",
            "peft": "none",
        }
    )
    # --gen_kwargs text compares equal to the YAML's typed values
    assert parse_typed_args("temperature=0.8,do_sample=true") == {
        "temperature": 0.8,
        "do_sample": True,
    }


# --------------------------------------------------------------------------- table


def test_rows_are_methods_and_variants(main_board: Leaderboard) -> None:
    assert [r.label for r in main_board.rows] == [
        "Non-Perso",
        "RAG (k=8)",
        "PPlug",
        "DEP",
        "DEP (use_diff=false)",
    ]
    groups = [name for name, _ in main_board.groups]
    assert groups == ["Books", "Movies_and_TV", "CDs_and_Vinyl", AVERAGE, "Books (val)", COST]


def test_best_bold_second_underlined_with_ties(main_board: Leaderboard) -> None:
    # Books METEOR: DEP and DEP (use_diff=false) tie for best, RAG and PPlug for second.
    assert mark(main_board, "DEP", "Books METEOR") == "best"
    assert mark(main_board, "DEP (use_diff=false)", "Books METEOR") == "best"
    assert mark(main_board, "RAG (k=8)", "Books METEOR") == "second"
    assert mark(main_board, "PPlug", "Books METEOR") == "second"
    assert mark(main_board, "Non-Perso", "Books METEOR") is None
    # Books R-1: no ties
    assert mark(main_board, "DEP", "Books R-1") == "best"
    assert mark(main_board, "DEP (use_diff=false)", "Books R-1") == "second"
    # costs: lower is better
    assert mark(main_board, "Non-Perso", "Cost s/sample") == "best"
    assert mark(main_board, "RAG (k=8)", "Cost s/sample") == "second"

    text = to_markdown(main_board)
    dep_row = next(line for line in text.splitlines() if line.startswith("| DEP |"))
    assert "**0.3105**" in dep_row and "**0.2400**" in dep_row
    rag_row = next(line for line in text.splitlines() if line.startswith("| RAG (k=8) |"))
    assert "<u>0.2100</u>" in rag_row


def test_rank_marks_rules() -> None:
    higher = Metric("m", "M", True, 4)
    lower = Metric("c", "C", False, 2)
    assert rank_marks([0.3, 0.2, None, 0.1], higher) == ["best", "second", None, None]
    assert rank_marks([0.3, 0.3, 0.2, 0.2], higher) == ["best", "best", "second", "second"]
    # compared as displayed: both show 0.2400, so they tie
    assert rank_marks([0.24004, 0.23996, 0.1], higher) == ["best", "best", "second"]
    assert rank_marks([5.0, 2.0, 3.0], lower) == [None, "best", "second"]
    assert rank_marks([0.5, None], higher) == [None, None]  # one number is not a ranking
    assert rank_marks([None, None], higher) == [None, None]
    assert rank_marks([0.2, 0.2], higher) == ["best", "best"]


def test_missing_cells_show_a_dash_and_take_no_part(main_board: Leaderboard) -> None:
    assert cell(main_board, "RAG (k=8)", "CDs_and_Vinyl R-1") is None
    assert cell(main_board, "RAG (k=8)", "Average R-1") is None  # lacks a category
    assert mark(main_board, "RAG (k=8)", "CDs_and_Vinyl R-1") is None
    assert mark(main_board, "DEP (use_diff=false)", "CDs_and_Vinyl R-1") == "second"
    # only DEP has Books (val): a lone number gets no mark
    assert mark(main_board, "DEP", "Books (val) R-1") is None
    rag_row = next(
        line for line in to_markdown(main_board).splitlines() if line.startswith("| RAG")
    )
    assert "| – |" in rag_row
    assert any("RAG (k=8): costs cover" in note for note in main_board.notes)


def test_average_and_costs(main_board: Leaderboard) -> None:
    assert cell(main_board, "DEP", "Average R-1") == pytest.approx((0.3105 + 0.2702 + 0.2799) / 3)
    assert cell(main_board, "DEP", "Cost prompt tok./sample") == pytest.approx(1450.0)
    # setup time is per run, not per category: one file counts once
    assert cell(main_board, "DEP", "Cost setup s (total)") == pytest.approx(95.0)


def test_fallback_bertscore_gets_its_own_column(main_board: Leaderboard) -> None:
    titles = [c.title for c in main_board.columns]
    fallback = "Books BERTScore-minilm (fallback, not the paper's)"
    assert fallback in titles
    assert "Books (val) BERTScore-minilm (fallback, not the paper's)" not in titles
    assert cell(main_board, "PPlug", "Books BERTScore") is None
    assert cell(main_board, "PPlug", fallback) == pytest.approx(0.6012)
    assert cell(main_board, "DEP", fallback) is None
    assert mark(main_board, "DEP", "Books BERTScore") == "best"
    assert "BERTScore-minilm (fallback, not the paper's)" in to_markdown(main_board)


def test_consistent_runs_raise_no_warning(main_board: Leaderboard) -> None:
    assert main_board.mismatches == []
    assert "Warning" not in to_markdown(main_board)


def test_mismatched_runs_are_flagged(
    mismatched_board: Leaderboard, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {(m.setting, m.column) for m in mismatched_board.mismatches}
    assert settings == {
        ("data source", None),
        ("limit", None),
        ("generation settings", None),
        ("seed", None),
        ("n-samples", "Books"),
        ("n-samples", "Movies_and_TV"),
    }
    flagged = {r.label for r in mismatched_board.rows if r.flags}
    assert flagged == {"RAG", "PAG", "DPL", "DEP"}  # the majority (Non-Perso) is not
    text = to_markdown(mismatched_board)
    assert "Warning: mismatched runs" in text
    assert "temperature=0.8 for DPL, Non-Perso, PAG, RAG; temperature=0.2 for DEP" in text
    assert re.search(r"^\| RAG ⚠\d", text, re.MULTILINE)
    rows = list(csv.DictReader(io.StringIO(to_csv(mismatched_board))))
    assert "limit differs" in next(r for r in rows if r["label"] == "RAG")["warnings"]
    assert next(r for r in rows if r["label"] == "Non-Perso")["warnings"] == ""
    with caplog.at_level(logging.WARNING):
        leaderboard_from_paths([MISMATCHED])
    assert "mismatched runs" in caplog.text


def test_paper_rows_are_reference_only() -> None:
    board = leaderboard_from_paths([MAIN], with_paper=True)
    paper = [r for r in board.rows if r.kind == "paper"]
    assert len(paper) == 7
    assert all("(paper, Qwen2.5-" in r.label and "not measured here" in r.label for r in paper)
    assert all(m is None for r in paper for m in r.marks)
    assert cell(board, "DEP (paper, Qwen2.5-7B, not measured here)", "Books R-1") == 0.3745
    assert cell(board, "DEP (paper, Qwen2.5-7B, not measured here)", "Books R-L") is None
    # a higher paper number does not take the measured best mark away
    assert mark(board, "DEP", "Books R-1") == "best"
    text = to_markdown(board)
    assert "*DPL (paper, Qwen2.5-32B, not measured here)*" in text


# --------------------------------------------------------------------------- formats


def test_csv_is_rectangular_and_numeric(main_board: Leaderboard) -> None:
    rows = list(csv.reader(io.StringIO(to_csv(main_board))))
    header, body = rows[0], rows[1:]
    assert len(body) == len(main_board.rows)
    assert all(len(row) == len(header) for row in body)
    assert header[:4] == ["label", "kind", "method", "model_args"] and header[-1] == "warnings"
    for row in body:
        for value in row[4:-1]:
            if value:
                float(value)
    dep = next(r for r in body if r[0] == "DEP")
    assert float(dep[header.index("Books R-1")]) == pytest.approx(0.3105)
    assert dep[header.index("Books BERTScore-minilm (fallback, not the paper's)")] == ""


def _strip_escaped(text: str) -> str:
    return re.sub(r"\\[{}&%$#_]", "", text)


@pytest.mark.parametrize("with_paper", [False, True])
def test_latex_is_well_formed(with_paper: bool) -> None:
    board = leaderboard_from_paths([MISMATCHED], with_paper=with_paper)
    text = to_latex(board)
    plain = _strip_escaped(text)
    assert plain.count("{") == plain.count("}")
    for env in ("table*", "tabular"):
        assert text.count(rf"\begin{{{env}}}") == text.count(rf"\end{{{env}}}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", text).group(1)
    assert len(spec) == 1 + len(board.columns)
    body = text.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    lines = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(lines) == len(board.rows)
    for line in lines:
        assert _strip_escaped(line).count("&") == len(board.columns)
    assert r"\textbf{0.3000}" in text and r"\underline{0.2900}" in text
    assert r"Movies\_and\_TV" in text and "Movies_and_TV" not in plain.replace(r"\_", "")
    assert "⚠" not in text and "–" not in text  # not in standard LaTeX fonts
    assert "Warning: mismatched runs" in text


def test_render_dispatch(main_board: Leaderboard) -> None:
    assert render(main_board, "csv") == to_csv(main_board)
    with pytest.raises(ValueError):
        render(main_board, "html")


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="dep-eval")
    sub = parser.add_subparsers(dest="command")
    add_leaderboard_parser(sub)
    add_plot_parser(sub)
    args = parser.parse_args(argv)
    args.handler(args)


def test_cli_leaderboard_writes_the_chosen_format(tmp_path: Path) -> None:
    out = tmp_path / "lb" / "table.tex"
    _cli(["leaderboard", str(MAIN), "--output", str(out), "--with-paper"])
    assert out.read_text().startswith("% Needs")  # format from the suffix
    _cli(["leaderboard", str(MAIN), "--format", "csv", "--output", str(out)])
    assert out.read_text().startswith("label,kind")
    assert choose_format(None, None) == "markdown"
    assert choose_format("csv", Path("x.tex")) == "csv"


def test_cli_leaderboard_to_stdout(capsys: pytest.CaptureFixture) -> None:
    _cli(["leaderboard", str(CUSTOM)])
    assert capsys.readouterr().out.startswith("| Method | All_Beauty R-1")


def test_cli_without_results_exits_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no lm-eval results"):
        _cli(["leaderboard", str(tmp_path)])


def test_dep_eval_main_has_both_commands(capsys: pytest.CaptureFixture) -> None:
    from dep_eval.cli import main

    main(["leaderboard", str(CUSTOM), "--format", "csv"])
    assert capsys.readouterr().out.startswith("label,kind")
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "k_ablation_<metric>" in capsys.readouterr().out


# --------------------------------------------------------------------------- plots


@pytest.mark.slow
def test_plots_write_png_and_svg(tmp_path: Path) -> None:
    written = plot_all([MAIN, K_ABLATION], tmp_path)
    names = {p.name for p in written}
    for stem in ("bars_meteor", "bars_bertscore_minilm_f1", "k_ablation_meteor"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert {"quality_vs_cost_meteor.png", "quality_vs_cost_meteor.svg"} <= names
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert b"<svg" in data[:1000]


@pytest.mark.slow
def test_plots_skip_what_the_results_cannot_show(tmp_path: Path) -> None:
    # no DEP k=... runs and no costs: only the bars
    written = plot_all([CUSTOM], tmp_path, formats=["svg"])
    assert written and all(p.name.startswith("bars_") and p.suffix == ".svg" for p in written)
    _cli(["plot", str(K_ABLATION), "--output", str(tmp_path / "cli"), "--formats", "png"])
    assert (tmp_path / "cli" / "k_ablation_meteor.png").is_file()


def test_build_leaderboard_of_nothing_is_empty() -> None:
    board = build_leaderboard([])
    assert board.rows == [] and board.columns == []


# --------------------------------------------------------------------------- uncertainty

PAIRED = ROOT / "paired"


def test_samples_files_match_their_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_leaderboard_fixtures", FIXTURES / "make_leaderboard_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = tmp_path / "leaderboard"
    module.main()
    made = {p.relative_to(module.ROOT): p.read_bytes() for p in module.ROOT.rglob("*.jsonl")}
    committed = {p.relative_to(ROOT): p.read_bytes() for p in ROOT.rglob("*.jsonl")}
    assert made and made == committed, "re-run tests/fixtures/make_leaderboard_fixtures.py"


@pytest.fixture(scope="module")
def paired_board() -> Leaderboard:
    return leaderboard_from_paths([PAIRED], against="nonperso")


def _row(board: Leaderboard, label: str):
    return next(r for r in board.rows if r.label == label)


def _index(board: Leaderboard, title: str) -> int:
    return [c.title for c in board.columns].index(title)


def test_intervals_are_read_and_shown(paired_board: Leaderboard) -> None:
    j = _index(paired_board, "Books R-1")
    nonperso = _row(paired_board, "Non-Perso")
    low, high = nonperso.intervals[j]
    assert low < nonperso.values[j] < high and high - low == pytest.approx(0.04)
    line = next(x for x in to_markdown(paired_board).splitlines() if x.startswith("| Non-Perso"))
    assert "±0.0200" in line and "(reference)" in line
    hidden = leaderboard_from_paths([PAIRED], against="nonperso")
    hidden.show_intervals = False
    assert "±" not in to_markdown(hidden).split("\n\n")[0]


def test_old_results_render_without_intervals_and_say_so(paired_board: Leaderboard) -> None:
    pag = _row(paired_board, "PAG")
    assert pag.values[_index(paired_board, "Books R-1")] == pytest.approx(0.2)
    assert all(interval is None for interval in pag.intervals)
    text = to_markdown(paired_board)
    line = next(x for x in text.splitlines() if x.startswith("| PAG"))
    assert "±" not in line
    assert "No ± on PAG" in text
    assert any("PAG: no per-document scores" in note for note in paired_board.notes)
    # the main fixture is all old files: it renders exactly as before, plus the legend
    assert "| DEP | **0.3105** |" in to_markdown(leaderboard_from_paths([MAIN]))


def test_paired_marks(paired_board: Leaderboard) -> None:
    dep, rag = _row(paired_board, "DEP"), _row(paired_board, "RAG")
    for title in ("Books R-1", "Books METEOR", "Books BLEU"):
        j = _index(paired_board, title)
        assert dep.significance(j, paired_board.columns[j].metric) == "better", title
        assert dep.tests[j][1] < 0.05
        assert rag.tests[j] == (0.0, 1.0)  # the same per-document scores: no difference
        assert rag.significance(j, paired_board.columns[j].metric) is None
    line = next(x for x in to_markdown(paired_board).splitlines() if x.startswith("| DEP"))
    assert line.count("▲") == 4 and "▼" not in line  # R-1, R-L, METEOR, BLEU
    rows = list(csv.DictReader(io.StringIO(to_csv(paired_board))))
    assert float(next(r for r in rows if r["label"] == "RAG")["Books R-1 p vs Non-Perso"]) == 1


def test_length_controlled_view_shows_how_much_of_a_gain_is_length() -> None:
    board = leaderboard_from_paths([PAIRED], against="nonperso", length_controlled=True)
    titles = [c.title for c in board.columns]
    assert "Books METEOR (lc)" in titles and "Books METEOR" not in titles
    dep = _row(board, "DEP")
    j = titles.index("Books METEOR (lc)")
    # DEP's METEOR gain of 0.05 was all length: cut to the reference's length it is gone
    assert dep.values[j] == pytest.approx(_row(board, "Non-Perso").values[j], abs=0.005)
    assert dep.significance(j, board.columns[j].metric) is None
    assert dep.significance(titles.index("Books R-1 (lc)"), board.columns[0].metric) == "better"


def test_length_ratio_is_a_column_that_is_never_ranked(paired_board: Leaderboard) -> None:
    j = _index(paired_board, "Books len. ratio")
    assert _row(paired_board, "DEP").values[j] == pytest.approx(40 / 30)
    assert _row(paired_board, "Non-Perso").values[j] == pytest.approx(25 / 30)
    assert all(row.marks[j] is None for row in paired_board.rows)


def test_seeds_are_merged_into_mean_and_spread(paired_board: Leaderboard) -> None:
    from dep_eval.report.results import load_results

    results, notes = load_results([PAIRED])
    dep_runs = [r for r in results if r.method == "dep"]
    assert sorted(r.sampling_seed for r in dep_runs) == [1234, 1235, 1236] and not notes
    dep = _row(paired_board, "DEP")
    j = _index(paired_board, "Books R-1")
    values = [r.metrics["rouge1"] for r in dep_runs]
    assert dep.seeds == 3
    assert dep.values[j] == pytest.approx(sum(values) / 3)
    assert dep.spreads[j] == pytest.approx(float(__import__("statistics").stdev(values)))
    line = next(x for x in to_markdown(paired_board).splitlines() if x.startswith("| DEP"))
    assert " sd 0.00" in line
    # a row with other seeds than the rest is flagged, never silently compared
    assert [m.setting for m in paired_board.mismatches] == ["sampling seeds"]


def test_against_an_absent_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="--against dpl: no row of that method"):
        leaderboard_from_paths([PAIRED], against="dpl")


def test_against_picks_one_of_a_methods_rows_by_its_args(tmp_path: Path) -> None:
    """``--against oppu,backend=hf``: two rows of one method, one of them the reference."""
    import shutil

    folder = tmp_path / "paired"
    shutil.copytree(PAIRED, folder)
    for path in folder.rglob("results_*.json"):  # RAG's run becomes Non-Perso on vLLM
        data = json.loads(path.read_text())
        if data["config"]["model"] == "rag":
            data["config"]["model"] = "nonperso"
            data["config"]["model_args"]["backend"] = "vllm"
            path.write_text(json.dumps(data))
    plain = leaderboard_from_paths([folder], against="nonperso")
    on_vllm = leaderboard_from_paths([folder], against="nonperso,backend=vllm")
    assert [r.label for r in plain.rows if r.reference] == ["Non-Perso"]
    assert [r.label for r in on_vllm.rows if r.reference] == ["Non-Perso (backend=vllm)"]
    with pytest.raises(ValueError, match="no row of that method with those args"):
        leaderboard_from_paths([folder], against="nonperso,backend=hf")


@pytest.mark.slow
def test_latex_and_plots_carry_intervals_and_marks(
    paired_board: Leaderboard, tmp_path: Path
) -> None:
    text = to_latex(paired_board)
    assert r"$\pm$0.0200" in text and r"$^{\blacktriangle}$" in text
    assert "±" not in text and "▲" not in text
    plot_all([PAIRED], tmp_path / "paired", formats=["svg"])
    plot_all([MAIN], tmp_path / "main", formats=["svg"])
    # matplotlib draws each errorbar() call's bars as one LineCollection: one per row with
    # intervals (Non-Perso, RAG, DEP; not PAG), none for the old files of the main fixture
    bars = (tmp_path / "paired" / "bars_meteor.svg").read_text()
    assert bars.count('<g id="LineCollection_') == 3
    assert "LineCollection" not in (tmp_path / "main" / "bars_meteor.svg").read_text()


def test_engine_args_are_labelled_only_where_rows_differ_in_them() -> None:
    from dep_eval.report.table import row_labels

    vllm = ("backend", "vllm")
    shared = [("nonperso", (vllm,)), ("dep", (vllm,)), ("dep", (vllm, ("use_diff", "false")))]
    assert row_labels(shared) == ["Non-Perso", "DEP", "DEP (use_diff=false)"]
    mixed = [("nonperso", (vllm,)), ("oppu", (("backend", "hf"),))]
    assert row_labels(mixed) == ["Non-Perso (backend=vllm)", "OPPU (backend=hf)"]


def test_a_row_names_the_engine_that_ran_it_not_only_the_one_asked_for(tmp_path: Path) -> None:
    """backend=auto (the default) records the engine it chose in the results' config; the
    row is keyed by it, as if the user had named it."""
    folder = _custom_copy(tmp_path)
    path = sorted(folder.rglob("results_*.json"))[0]
    data = json.loads(path.read_text())
    before = {r.path: r.model_args for r in load_results([folder])[0]}[path]
    assert "backend" not in before
    data["config"]["engine"] = "vllm"
    path.write_text(json.dumps(data))
    after = {r.path: r.model_args for r in load_results([folder])[0]}[path]
    assert after == {**before, "backend": "vllm"}


# ------------------------------------------------ files a failed or odd run left (issue 32)


def _custom_copy(tmp_path: Path) -> Path:
    import shutil

    folder = tmp_path / "runs"
    shutil.copytree(CUSTOM, folder)
    return folder


def _table_and_log(folder: Path, caplog: pytest.LogCaptureFixture) -> str:
    from dep_eval.cli import main

    out = folder.parent / "table.md"
    with caplog.at_level(logging.WARNING, logger="dep_eval.report.results"):
        main(["leaderboard", str(folder), "--output", str(out)])
    return out.read_text()


@pytest.mark.bad_input("leaderboard-failed-run")
def test_a_failed_runs_results_file_is_named_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk leaves lm_eval's results file empty or cut (and lm_eval exits 0)."""
    folder = _custom_copy(tmp_path)
    llm = folder / "HuggingFaceTB__SmolLM2-135M-Instruct"
    empty, cut = llm / "results_2026-06-01T10-00-00.json", llm / "results_2026-06-01T11-00-00.json"
    empty.write_text("")
    cut.write_text('{"results": {"amazon_review_personalized_custom": {"rouge1,none": 0.')
    table = _table_and_log(folder, caplog)
    for path, problem in (
        (empty, "it is empty (0 bytes): the run that wrote it failed (a full disk?)"),
        (cut, "it is not valid JSON (Expecting ',' delimiter: line 1 column 68"),
    ):
        assert f"{path} skipped: {problem}" in table  # a note under the table
        assert f"{path} skipped: {problem}" in caplog.text
    assert "| Non-Perso |" in table  # the good runs still make the table


@pytest.mark.bad_input("leaderboard-other-task-metadata")
def test_another_task_that_got_the_runs_metadata_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``lm_eval --tasks amazon_review_personalized_custom,arc_easy --metadata {...}`` gives
    arc_easy the category too; it used to supersede the real result ("-" everywhere)."""
    import json

    folder = _custom_copy(tmp_path)
    path = (
        folder / "HuggingFaceTB__SmolLM2-135M-Instruct" / "results_2026-04-01T10-00-00.000000.json"
    )
    data = json.loads(path.read_text())
    ours = data["configs"]["amazon_review_personalized_custom"]["metadata"]
    data["configs"]["arc_easy"]["metadata"].update(ours)
    path.write_text(json.dumps(data))
    rouge1 = data["results"]["amazon_review_personalized_custom"]["rouge1,none"]

    board = leaderboard_from_paths([folder])
    assert cell(board, "Non-Perso", "All_Beauty R-1") == pytest.approx(rouge1)
    note = (
        f"{path}: task arc_easy ignored: not a review-generation task (it got the run's --metadata)"
    )
    assert note in board.notes
    assert note in _table_and_log(folder, caplog)


@pytest.mark.bad_input("leaderboard-odd-shape")
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([], "it holds a JSON list, not an object"),
        ({"results": [], "configs": {}, "config": {}}, "its 'results' is list, not an object"),
        ({"results": {}, "configs": {}, "config": "dep"}, "its 'config' is str, not an object"),
        (
            {"results": {}, "configs": {"amazon_review_personalized_custom": 3}, "config": {}},
            "configs['amazon_review_personalized_custom'] is int, not an object",
        ),
        (
            {
                "results": {"amazon_review_personalized_custom": {"rouge1,none": 0.3}},
                "configs": {"amazon_review_personalized_custom": {"metadata": ["All_Beauty"]}},
                "config": {},
            },
            "configs['amazon_review_personalized_custom'].metadata is not an object",
        ),
    ],
)
def test_an_odd_shaped_results_file_is_skipped_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: object, problem: str
) -> None:
    import json

    folder = _custom_copy(tmp_path)
    odd = folder / "HuggingFaceTB__SmolLM2-135M-Instruct" / "results_2026-06-01T12-00-00.json"
    odd.write_text(json.dumps(content))
    table = _table_and_log(folder, caplog)
    message = f"{odd} skipped: not an lm-eval results file ({problem})"
    assert message in table and message in caplog.text
    assert "| Non-Perso |" in table
