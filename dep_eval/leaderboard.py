"""``dep-eval leaderboard``: one table from many ``lm_eval --output_path`` folders.

The work is done in ``dep_eval.report`` (reading, ranking, flagging, rendering); this module
is the command: argument parsing, choosing the format, writing the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dep_eval.io import atomic_write
from dep_eval.report import slices
from dep_eval.report.render import FORMATS, render
from dep_eval.report.table import leaderboard_from_paths

logger = logging.getLogger(__name__)

SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".tex": "latex"}

DESCRIPTION = """\
Build a leaderboard from lm-eval results: every results_*.json under the given folders
(what `lm_eval --output_path DIR` or `dep-eval lm_eval --output_path DIR` writes).

Rows: one per method (--model) and --model_args variant, e.g. DEP and DEP (use_diff=false).
Columns: per category (Books, Movies_and_TV, CDs_and_Vinyl; the custom task's category;
_val tasks apart) ROUGE-1, ROUGE-L, METEOR, BLEU, BERTScore; a BERTScore from the offline
fallback encoder (bertscore_minilm_f1) gets its own column, never the paper's; then the
average over the test categories and the per-sample costs (LLM calls, tokens, seconds).
Best value in bold, second best underlined, as in the paper's Table 1.

Runs that differ in data source, --limit, generation settings, seeds or n-samples are
flagged (a marker on the row and a warning under the table). When a method was run twice
on a category, the newest run is used and the older one named in the notes; runs that
differ only in the sampling seed (--gen_kwargs seed=S) are repetitions: the cell is their
mean, with "sd" their spread.

Uncertainty: every quality cell shows "± h", half the width of its 95 % bootstrap interval
over documents (from the results file; --no-intervals hides them). --against METHOD tests
each cell against METHOD's row on the same documents (paired approximate randomization on
the per-document scores of the samples files, so runs need --log_samples) and marks
significant differences (p < 0.05) with ▲ (better) or ▼ (worse). --length-controlled shows
the metrics of predictions cut to the reference's word count instead."""

EPILOG = """\
examples:
  dep-eval leaderboard out/
      Markdown table on the terminal
  dep-eval leaderboard out/ --with-paper --output results/leaderboard.md
      with the paper's Table 1 rows (Qwen2.5-7B) as unranked reference lines
  dep-eval leaderboard out/ --against nonperso
      ▲/▼ on the cells significantly above/below Non-Perso
  dep-eval leaderboard out/ --length-controlled --against nonperso
      the same on predictions cut to the reference's length
  dep-eval leaderboard out/ --format latex --output results/table1.tex
  dep-eval leaderboard out/run-a out/run-b/results_2026-01-10T10-00-00.json --format csv
      several folders and single files are merged into one table"""


def add_results_paths(parser: argparse.ArgumentParser) -> None:
    """The positional RESULTS argument that ``leaderboard`` and ``plot`` share."""
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RESULTS",
        help="lm-eval output folders (searched recursively) or results JSON files",
    )


def add_leaderboard_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``leaderboard`` on the CLI's subparsers (``argparse._SubParsersAction``)."""
    parser = subparsers.add_parser(
        "leaderboard",
        help="leaderboard table (Markdown, CSV, LaTeX) from lm-eval output folders",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_results_paths(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: from --output's suffix .md/.csv/.tex, else markdown)",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE instead of standard output"
    )
    parser.add_argument(
        "--with-paper",
        action="store_true",
        help="add the paper's Table 1 rows, marked 'paper, Qwen2.5-7B, not measured here'",
    )
    add_view_arguments(parser)
    slices.add_arguments(parser)
    parser.set_defaults(handler=run_leaderboard)
    return parser


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """--against, --length-controlled, --no-intervals (shared with ``plot``)."""
    parser.add_argument(
        "--against",
        metavar="METHOD",
        help="mark cells significantly better/worse than METHOD's row (e.g. nonperso); "
        "METHOD,ARG=VALUE picks one of a method's rows (e.g. oppu,backend=hf)",
    )
    parser.add_argument(
        "--length-controlled",
        action="store_true",
        help="quality metrics of predictions cut to the reference's word count (<metric>_lc)",
    )
    parser.add_argument(
        "--no-intervals",
        dest="intervals",
        action="store_false",
        help="hide the 95 %% intervals and seed spreads",
    )


def choose_format(fmt: str | None, output: Path | None) -> str:
    if fmt:
        return fmt
    if output is not None and output.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[output.suffix.lower()]
    return "markdown"


def leaderboard_text(
    paths: Iterable[Path | str],
    fmt: str = "markdown",
    *,
    with_paper: bool = False,
    against: str | None = None,
    length_controlled: bool = False,
    intervals: bool = True,
) -> str:
    """The leaderboard of ``paths`` rendered as ``fmt`` (for use from Python)."""
    board = leaderboard_from_paths(
        paths, with_paper=with_paper, against=against, length_controlled=length_controlled
    )
    board.show_intervals = intervals
    return render(board, fmt)


def run_leaderboard(args: argparse.Namespace) -> None:
    fmt = choose_format(args.format, args.output)
    try:
        if getattr(args, "slices", False):  # Markdown only
            plot = getattr(args, "slice_plot", None)
            text = slices.slice_report(args.paths, slices.options_from(args), plot)
        else:
            text = leaderboard_text(
                args.paths,
                fmt,
                with_paper=args.with_paper,
                against=getattr(args, "against", None),
                length_controlled=getattr(args, "length_controlled", False),
                intervals=getattr(args, "intervals", True),
            )
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"dep-eval leaderboard: {error}") from error
    if args.output is None:
        sys.stdout.write(text)
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, text)
    logger.info("wrote %s (%s)", args.output, fmt)
