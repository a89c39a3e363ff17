"""A ``Leaderboard`` as Markdown, CSV or LaTeX text.

Markdown and LaTeX are for reading: rounded numbers, best in bold, second best underlined
(as in the paper's Table 1), '–' for missing cells, mismatch markers on row labels and the
warnings spelled out under the table. Quality cells carry "± h", half the width of their
95 % bootstrap interval (unless ``show_intervals`` is off), "sd s" for the spread across
sampling seeds, and ▲/▼ when the paired test against the reference row is significant.
CSV is for further processing: full-precision numbers, empty cells for missing values, the
exact interval bounds, seed spreads and p-values in columns of their own, and the warnings
in a last column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from dep_eval.report.table import AVERAGE, COST, SIGNIFICANCE, Leaderboard, Row

FORMATS = ("markdown", "csv", "latex")
T = TypeVar("T")


def legend(board: Leaderboard) -> str:
    groups = {name for name, _ in board.groups}
    parts = [
        "Bold: best, underlined: second best per column (measured rows only, compared as "
        "shown; ties share the mark; '–': not measured)."
    ]
    if AVERAGE in groups:
        parts.append(
            f"{AVERAGE}: unweighted mean over the test categories, '–' if a row lacks one."
        )
    if COST in groups:
        parts.append(
            f"{COST}: means over the test categories, weighted by their samples; "
            "setup s is one-off time per run."
        )
    if any(row.kind == "paper" for row in board.rows):
        parts.append("Paper rows: Table 1 of the paper, not measured here and not ranked.")
    parts += _interval_notes(board)
    if board.reference is not None:
        parts.append(
            f"{BETTER} / {WORSE}: significantly better / worse than {board.reference} "
            f"(paired approximate randomization over the same documents, p < {SIGNIFICANCE}); "
            "no mark: not significant."
        )
    if any(column.metric.key == "length_ratio" for column in board.columns):
        parts.append("len. ratio: generated words / reference words (not ranked).")
    if board.length_controlled:
        parts.append(
            "(lc): length-controlled, each prediction cut to its reference's number of "
            "words before scoring."
        )
    return " ".join(parts)


BETTER, WORSE = "▲", "▼"


def _interval_notes(board: Leaderboard) -> list[str]:
    """The legend's sentences on intervals and seed spreads."""
    notes: list[str] = []
    measured = [row for row in board.rows if row.kind == "measured"]
    with_intervals = [row for row in measured if _has_intervals(row)]
    if board.show_intervals and measured and not with_intervals:
        notes.append(
            "No ±: these results files have no intervals (made before dep-eval wrote them)."
        )
    elif board.show_intervals and measured:
        notes.append(
            "± h: half the width of the 95 % bootstrap interval over documents (exact bounds "
            "in the CSV; for the Average, the categories' half-widths combined as independent)."
        )
        without = [row.label for row in measured if not _has_intervals(row)]
        if without:
            notes.append(
                f"No ± on {', '.join(without)}: their results files have no intervals "
                "(made before dep-eval wrote them)."
            )
        if any(
            "±?" in _annotation(board, row, j)[0]
            for row in measured
            for j in range(len(board.columns))
        ):
            notes.append("±?: no interval for this cell (e.g. a single document).")
        if any(row.seeds > 1 for row in measured):
            seeds = sorted({row.seeds for row in measured if row.seeds > 1})
            notes.append(
                "sd s: standard deviation of the score across sampling seeds "
                f"({'/'.join(map(str, seeds))} seeds; the value is their mean, the interval "
                "the mean of their bounds)."
            )
    return notes


def _has_intervals(row: Row) -> bool:
    return any(interval is not None for interval in row.intervals)


def _annotation(board: Leaderboard, row: Row, j: int) -> tuple[str, str]:
    """(text after the number, significance mark) of cell ``j`` of ``row``."""
    column, value = board.columns[j], row.values[j]
    if row.kind != "measured" or value is None or not column.metric.quality:
        return "", ""
    text = ""
    decimals = column.metric.decimals
    if board.show_intervals:
        interval = row.intervals[j] if j < len(row.intervals) else None
        if interval is not None:
            text += f" ±{(interval[1] - interval[0]) / 2:.{decimals}f}"
        elif _has_intervals(row):
            text += " ±?"
        spread = row.spreads[j] if j < len(row.spreads) else None
        if spread is not None and row.seeds > 1:
            text += f" sd {spread:.{decimals}f}"
    significance = row.significance(j, column.metric)
    mark = {"better": BETTER, "worse": WORSE}.get(significance or "", "")
    return text, f" {mark}" if mark else ""


def _label(board: Leaderboard, row: Row) -> str:
    label = _flagged(row)
    if row.reference:
        label += " (reference)"
    return label


WARNING_TITLE = "Warning: mismatched runs"
WARNING_TEXT = "the flagged rows were not run under the same settings; compare them with care."


def render(board: Leaderboard, fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(board)
    if fmt == "csv":
        return to_csv(board)
    if fmt == "latex":
        return to_latex(board)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _flagged(row: Row) -> str:
    return f"{row.label} {' '.join(row.flags)}" if row.flags else row.label


# --------------------------------------------------------------------------- Markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(text: str, mark: str | None) -> str:
    if mark == "best":
        return f"**{text}**"
    if mark == "second":
        return f"<u>{text}</u>"  # Markdown has no underline; GitHub renders <u>
    return text


def to_markdown(board: Leaderboard) -> str:
    header = ["Method", *(c.title for c in board.columns)]
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "---|" + "---:|" * len(board.columns),
    ]
    for row in board.rows:
        label = _md_escape(_label(board, row))
        label = f"*{label}*" if row.kind == "paper" else label
        cells = []
        for j, (column, value, mark) in enumerate(
            zip(board.columns, row.values, row.marks, strict=True)
        ):
            text, significance = _annotation(board, row, j)
            cells.append(_md_cell(column.metric.display(value), mark) + text + significance)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += ["", legend(board)]
    if board.mismatches:
        lines += ["", f"> **⚠ {WARNING_TITLE}:** {WARNING_TEXT}"]
        lines += [f"> - {_md_escape(m.describe())}" for m in board.mismatches]
    if board.notes:
        lines += ["", "Notes:", *(f"- {_md_escape(note)}" for note in board.notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV


def _number(value: float | None) -> str:
    # 10 significant digits: full precision without float noise (0.16999999999999998).
    return "" if value is None else f"{value:.10g}"


def _at(values: Sequence[T | None], j: int) -> T | None:
    return values[j] if j < len(values) else None


def _extra_csv_columns(board: Leaderboard) -> list[tuple[str, Callable[[Row], float | None]]]:
    """(header, cell function) of the interval, spread and test columns that have data."""
    extra: list[tuple[str, Callable[[Row], float | None]]] = []

    def has(attribute: str, j: int) -> bool:
        return any(_at(getattr(row, attribute), j) is not None for row in board.rows)

    def bound(j: int, side: int) -> Callable[[Row], float | None]:
        return lambda row: None if _at(row.intervals, j) is None else row.intervals[j][side]

    def spread(j: int) -> Callable[[Row], float | None]:
        return lambda row: _at(row.spreads, j)

    def p_value(j: int) -> Callable[[Row], float | None]:
        return lambda row: None if _at(row.tests, j) is None else row.tests[j][1]  # type: ignore[index]

    for j, column in enumerate(board.columns):
        if has("intervals", j):
            extra += [(f"{column.title} 95% low", bound(j, 0))]
            extra += [(f"{column.title} 95% high", bound(j, 1))]
        if has("spreads", j):
            extra.append((f"{column.title} sd across seeds", spread(j)))
        if board.reference is not None and has("tests", j):
            extra.append((f"{column.title} p vs {board.reference}", p_value(j)))
    return extra


def to_csv(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    extra = _extra_csv_columns(board)
    writer.writerow(
        [
            "label",
            "kind",
            "method",
            "model_args",
            *(c.title for c in board.columns),
            *(title for title, _ in extra),
            "warnings",
        ]
    )
    by_marker = {m.marker: m.describe() for m in board.mismatches}
    for row in board.rows:
        args = ";".join(f"{k}={v}" for k, v in sorted(row.model_args.items()))
        values = [_number(v) for v in row.values]
        more = [_number(cell(row)) for _, cell in extra]
        warnings = " | ".join(by_marker[flag] for flag in row.flags)
        writer.writerow([row.label, row.kind, row.method, args, *values, *more, warnings])
    return out.getvalue()


# --------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


_LATEX_SIGNIFICANCE = {"▲": r"$^{\blacktriangle}$", "▼": r"$^{\blacktriangledown}$"}


def latex_escape(text: str) -> str:
    # The warning sign is not in standard LaTeX fonts: markers become a dagger.
    escaped = _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)
    return re.sub(r"⚠(\d+)", r"$^{\\dagger\1}$", escaped)


def _latex_cell(text: str, mark: str | None) -> str:
    text = latex_escape(text)
    if mark == "best":
        return rf"\textbf{{{text}}}"
    if mark == "second":
        return rf"\underline{{{text}}}"
    return text


def to_latex(board: Leaderboard) -> str:
    groups = board.groups
    spec = "l" + "".join("r" * len(columns) for _, columns in groups)
    group_line, rules, start = [""], [], 2
    for name, columns in groups:
        end = start + len(columns) - 1
        group_line.append(rf"\multicolumn{{{len(columns)}}}{{c}}{{{latex_escape(name)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{end}}}")
        start = end + 1
    metric_line = ["Method", *(latex_escape(c.metric.label) for c in board.columns)]

    lines = [
        r"% Needs \usepackage{booktabs}, \usepackage{graphicx} and \usepackage{amssymb}.",
        r"\begin{table*}[t]",
        r"\centering",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(group_line) + r" \\",
        " ".join(rules),
        " & ".join(metric_line) + r" \\",
        r"\midrule",
    ]
    previous_kind = "measured"
    for row in board.rows:
        if row.kind != previous_kind:
            lines.append(r"\midrule")
            previous_kind = row.kind
        label = latex_escape(_label(board, row))
        label = rf"\textit{{{label}}}" if row.kind == "paper" else label
        cells = []
        for j, (column, value, mark) in enumerate(
            zip(board.columns, row.values, row.marks, strict=True)
        ):
            text, significance = _annotation(board, row, j)
            text = latex_escape(text).replace("±", r"$\pm$")
            significance = _LATEX_SIGNIFICANCE.get(significance.strip(), "")
            cells.append(_latex_cell(column.metric.display(value), mark) + text + significance)
        lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if board.mismatches:
        lines += [
            r"\par\smallskip",
            rf"{{\footnotesize\textbf{{{WARNING_TITLE}:}} {latex_escape(WARNING_TEXT)}\par",
            *(rf"{latex_escape(m.describe())}\par" for m in board.mismatches),
            "}",
        ]
    caption = latex_escape(legend(board)).replace("±", r"$\pm$")
    for symbol, command in _LATEX_SIGNIFICANCE.items():
        caption = caption.replace(symbol, command)
    lines += [rf"\caption{{{caption}}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"
