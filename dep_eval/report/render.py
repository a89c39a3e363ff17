"""A ``Leaderboard`` as Markdown, CSV or LaTeX text.

Markdown and LaTeX are for reading: rounded numbers, best in bold, second best underlined
(as in the paper's Table 1), '–' for missing cells, mismatch markers on row labels and the
warnings spelled out under the table. CSV is for further processing: full-precision
numbers, empty cells for missing values, and the warnings in a column of their own.
"""

from __future__ import annotations

import csv
import io
import re

from dep_eval.report.table import AVERAGE, COST, Leaderboard, Row

FORMATS = ("markdown", "csv", "latex")


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
    return " ".join(parts)


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
        label = _md_escape(_flagged(row))
        label = f"*{label}*" if row.kind == "paper" else label
        cells = [
            _md_cell(column.metric.display(value), mark)
            for column, value, mark in zip(board.columns, row.values, row.marks, strict=True)
        ]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += ["", legend(board)]
    if board.mismatches:
        lines += ["", f"> **⚠ {WARNING_TITLE}:** {WARNING_TEXT}"]
        lines += [f"> - {_md_escape(m.describe())}" for m in board.mismatches]
    if board.notes:
        lines += ["", "Notes:", *(f"- {_md_escape(note)}" for note in board.notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CSV


def to_csv(board: Leaderboard) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["label", "kind", "method", "model_args", *(c.title for c in board.columns), "warnings"]
    )
    by_marker = {m.marker: m.describe() for m in board.mismatches}
    for row in board.rows:
        args = ";".join(f"{k}={v}" for k, v in sorted(row.model_args.items()))
        # 10 significant digits: full precision without float noise (0.16999999999999998).
        values = ["" if v is None else f"{v:.10g}" for v in row.values]
        warnings = " | ".join(by_marker[flag] for flag in row.flags)
        writer.writerow([row.label, row.kind, row.method, args, *values, warnings])
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
        r"% Needs \usepackage{booktabs} and \usepackage{graphicx}.",
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
        label = latex_escape(_flagged(row))
        label = rf"\textit{{{label}}}" if row.kind == "paper" else label
        cells = [
            _latex_cell(column.metric.display(value), mark)
            for column, value, mark in zip(board.columns, row.values, row.marks, strict=True)
        ]
        lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if board.mismatches:
        lines += [
            r"\par\smallskip",
            rf"{{\footnotesize\textbf{{{WARNING_TITLE}:}} {latex_escape(WARNING_TEXT)}\par",
            *(rf"{latex_escape(m.describe())}\par" for m in board.mismatches),
            "}",
        ]
    lines += [rf"\caption{{{latex_escape(legend(board))}}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"
