"""``dep-eval plot``: figures from lm-eval output folders, as PNG and SVG.

- ``bars_<metric>``: one bar per method (row) and category, for every quality metric, with
  the cell's 95 % bootstrap interval as an error bar (none for results without intervals);
- ``k_ablation_<metric>``: DEP's metric against K, from the runs whose ``model_args`` set
  ``k`` (one line per combination of DEP's other args, one panel per category): the sweep
  DEP declares where it registers (``registry.Sweep``), as any method may;
- ``quality_vs_cost_<metric>``: the metric (averaged over the test categories) against
  seconds per sample and against prompt + generated tokens per sample.

The numbers are the leaderboard's (``dep_eval.report``), so rows, labels and the choice of
the newest run agree with the table. Rows with mismatched settings are starred in legends.
Figures are drawn on ``matplotlib.figure.Figure`` objects, which render through Agg without
pyplot or any global backend switch, so importing this module never disturbs a caller's
matplotlib session.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dep_eval.report.results import TaskResult
from dep_eval.report.table import (
    AVERAGE,
    COST,
    QUALITY_METRICS,
    Leaderboard,
    Row,
    build_leaderboard,
    load_some_results,
    method_name,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

FORMATS = ("png", "svg")
DEFAULT_METRIC = "meteor"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, output_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    import matplotlib

    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = output_dir / f"{stem}.{fmt}"
        # A fixed hash salt keeps SVG element ids stable, so re-plotting does not churn git.
        with matplotlib.rc_context({"svg.hashsalt": "dep-eval"}):
            figure.savefig(path, format=fmt, dpi=150, metadata=_metadata(fmt))
        paths.append(path)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def _metadata(fmt: str) -> dict[str, Any] | None:
    # Without a date the files are reproducible byte for byte.
    return {"Date": None} if fmt == "svg" else None


def _colors(n: int) -> list[Any]:
    # tab10 repeats after 10 rows; ablation tables easily have more.
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


MARKERS = "osD^vP*Xhp<>"


def _legend_label(row: Row) -> str:
    return f"{row.label} *" if row.flags else row.label


def _mismatch_note(figure: Figure, rows: Iterable[Row]) -> None:
    if any(row.flags for row in rows):
        figure.supxlabel(
            "* mismatched run settings: see the leaderboard's warnings", fontsize="small"
        )


def _error(value: float | None, interval: tuple[float, float] | None) -> tuple | None:
    """(below, above) for matplotlib's asymmetric ``yerr``; None without an interval."""
    if value is None or interval is None:
        return None
    return max(0.0, value - interval[0]), max(0.0, interval[1] - value)


def metric_bars(board: Leaderboard, output_dir: Path, formats: Sequence[str]) -> list[Path]:
    """One grouped bar chart per quality metric: categories on x, one bar per row."""
    rows = [row for row in board.rows if row.kind == "measured"]
    metrics = {c.metric.key: c.metric for c in board.columns if c.group != COST}
    written = []
    for key, metric in metrics.items():
        indices = [j for j, c in enumerate(board.columns) if c.metric.key == key]
        groups = [board.columns[j].group for j in indices]
        if not any(row.values[j] is not None for row in rows for j in indices):
            continue
        # the legend sits right of the axes: leave the axes room of their own
        figure = _figure(min(16.0, 7.0 + 0.25 * len(groups) * len(rows)), 4.0)
        axes = figure.add_subplot()
        width = 0.8 / max(1, len(rows))
        for i, (row, color) in enumerate(zip(rows, _colors(len(rows)), strict=True)):
            xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
            heights = [row.values[j] for j in indices]
            shown = [
                (x, h, _error(h, row.intervals[j] if j < len(row.intervals) else None))
                for x, h, j in zip(xs, heights, indices, strict=True)
                if h is not None
            ]
            if shown:
                x, h, errors = zip(*shown, strict=True)
                axes.bar(x, h, width=width, color=color, label=_legend_label(row))
                with_bars = [(xi, hi, e) for xi, hi, e in shown if e is not None]
                if with_bars:
                    bx, by, be = zip(*with_bars, strict=True)
                    axes.errorbar(
                        bx, by, yerr=list(zip(*be, strict=True)), fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2,
                    )  # fmt: skip
        axes.set_xticks(range(len(groups)), groups)
        axes.set_ylabel(metric.label)
        has_bars = any(row.intervals[j] for row in rows for j in indices if j < len(row.intervals))
        note = " (error bars: 95 % intervals)" if has_bars else ""
        figure.suptitle(f"{metric.label} by method and category{note}")
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        _mismatch_note(figure, rows)
        written += _save(figure, output_dir, f"bars_{key}", formats)
    return written


def _sweep_value(result: TaskResult, arg: str) -> int | None:
    try:
        return int(float(result.model_args[arg]))
    except (KeyError, ValueError):
        return None


def sweep_curves(
    results: Sequence[TaskResult], output_dir: Path, metric: str, formats: Sequence[str]
) -> list[Path]:
    """Each registered sweep's figure (``registry.Sweep``: DEP's K), from the runs of its
    method whose model_args set its argument."""
    from dep_eval import registry

    written: list[Path] = []
    for spec in registry.methods().values():
        if spec.sweep is not None:
            written += sweep_curve(results, output_dir, metric, formats, spec)
    return written


def sweep_curve(
    results: Sequence[TaskResult],
    output_dir: Path,
    metric: str,
    formats: Sequence[str],
    spec: Any,
) -> list[Path]:
    """A method's ``metric`` against its sweep's argument, per test category, one line per
    combination of its other args (``spec``: the method's ``registry.MethodSpec``)."""
    sweep, arg = spec.sweep, spec.sweep.arg
    runs = [
        r for r in results if r.method.lower() == spec.name and _sweep_value(r, arg) is not None
    ]
    if not runs:
        logger.info("no %s runs with %s=... in model_args: no %s plot", spec.label, arg, arg)
        return []
    # (category, variant) -> [(value, metric, interval or None)]
    lines: dict[str, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if metric not in run.metrics:
            continue
        others = [
            f"{k}={v}" for k, v in sorted(run.model_args.items()) if k not in {arg, "pretrained"}
        ]
        variant = f"{method_name(run.method)} ({', '.join(others)})" if others else spec.label
        point = (_sweep_value(run, arg), run.metrics[metric], run.intervals.get(metric))
        lines[run.column][variant].append(point)
    if not lines:
        logger.info("no %s %s=... run reports %s: no %s plot", spec.label, arg, metric, arg)
        return []
    columns = sorted(lines, key=lambda c: (c.endswith(" (val)"), c))
    figure = _figure(4.0 * len(columns), 3.6)
    label = _metric_label(metric)
    for i, column in enumerate(columns):
        axes = figure.add_subplot(1, len(columns), i + 1)
        for variant, points in sorted(lines[column].items()):
            points.sort(key=lambda point: point[0])
            xs, values, _ = zip(*points, strict=True)
            (line,) = axes.plot(xs, values, marker="o", label=variant)
            bars = [(x, v, _error(v, c)) for x, v, c in points if c is not None]
            if bars:
                bx, bv, be = zip(*bars, strict=True)
                yerr = list(zip(*be, strict=True))
                axes.errorbar(bx, bv, yerr=yerr, fmt="none", ecolor=line.get_color(), capsize=2)
        axes.set_title(column)
        axes.set_xlabel(sweep.axis_label)
        axes.set_ylabel(label)
        axes.set_xticks(list(sweep.values))
        axes.legend(fontsize="small")
    figure.suptitle(f"{spec.label}: {label} against {sweep.symbol}")
    return _save(figure, output_dir, f"{arg}_ablation_{metric}", formats)


def _metric_label(key: str) -> str:
    return next((m.label for m in QUALITY_METRICS if m.key == key), key)


def _column(board: Leaderboard, group: str, key: str) -> int | None:
    return next(
        (j for j, c in enumerate(board.columns) if c.group == group and c.metric.key == key),
        None,
    )


def quality_vs_cost(
    board: Leaderboard, output_dir: Path, metric: str, formats: Sequence[str]
) -> list[Path]:
    """``metric`` (average over test categories) against two costs per sample."""
    groups = [name for name, _ in board.groups]
    tests = [g for g in groups if g not in {AVERAGE, COST} and not g.endswith(" (val)")]
    quality_group = AVERAGE if AVERAGE in groups else (tests[0] if tests else None)
    quality = _column(board, quality_group, metric) if quality_group else None
    seconds = _column(board, COST, "seconds_per_sample")
    prompt = _column(board, COST, "prompt_tokens")
    generated = _column(board, COST, "generated_tokens")
    if quality is None or (seconds is None and prompt is None and generated is None):
        logger.info("no %s or no cost metrics in the results: no quality/cost plot", metric)
        return []
    rows = [row for row in board.rows if row.kind == "measured"]

    def tokens(row: Row) -> float | None:
        parts = [row.values[j] for j in (prompt, generated) if j is not None]
        return None if not parts or None in parts else sum(parts)  # type: ignore[arg-type]

    panels = [
        ("seconds per sample", lambda row: row.values[seconds] if seconds is not None else None),
        ("prompt + generated tokens per sample", tokens),
    ]
    figure = _figure(11.0, 4.0)
    label = f"{_metric_label(metric)} ({quality_group})"
    markers = [MARKERS[i % len(MARKERS)] for i in range(len(rows))]
    styles = list(zip(_colors(len(rows)), markers, strict=True))
    for i, (x_label, x_of) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        for row, (color, marker) in zip(rows, styles, strict=True):
            x, y = x_of(row), row.values[quality]
            if x is None or y is None:
                if i == 0:  # e.g. no Average because a category is missing
                    logger.info("quality/cost plot: no %s or cost for %s", label, row.label)
                continue
            axes.scatter([x], [y], color=color, marker=marker, s=50, label=_legend_label(row))
            error = _error(y, row.intervals[quality] if quality < len(row.intervals) else None)
            if error is not None:
                axes.errorbar(
                    [x], [y], yerr=[[error[0]], [error[1]]], fmt="none", ecolor=color, capsize=2
                )
        axes.set_xlabel(x_label)
        axes.set_ylabel(label)
        if i == 1:
            axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f"{_metric_label(metric)} against cost per sample")
    _mismatch_note(figure, rows)
    return _save(figure, output_dir, f"quality_vs_cost_{metric}", formats)


def plot_all(
    paths: Iterable[Path | str],
    output_dir: Path | str,
    *,
    metric: str = DEFAULT_METRIC,
    formats: Sequence[str] = FORMATS,
    k_paths: Iterable[Path | str] = (),
) -> list[Path]:
    """Every figure this module draws for the results under ``paths``; the files written.

    The K curve is drawn from the runs under ``k_paths`` as well, when given."""
    results, _ = load_some_results(paths)
    board = build_leaderboard(results)
    output_dir = Path(output_dir)
    written = metric_bars(board, output_dir, formats)
    k_paths = list(k_paths)
    k_results = results + (load_some_results(k_paths)[0] if k_paths else [])
    written += sweep_curves(k_results, output_dir, metric, formats)
    written += quality_vs_cost(board, output_dir, metric, formats)
    return written


EPILOG = """\
examples:
  dep-eval plot out/
      every figure into results/figures/ (PNG and SVG)
  dep-eval plot out/ --output results/figures/ --metric rouge1 --formats png
  dep-eval lm_eval --model dep --model_args k=4 --tasks amazon_review_personalized_books ...
      (once per K) then `dep-eval plot out/` draws the K ablation curve

figures:
  bars_<metric>            each quality metric per method and category
  k_ablation_<metric>      DEP's --metric against K (runs whose model_args set k=...)
  quality_vs_cost_<metric> --metric against seconds and tokens per sample"""


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``plot`` on the CLI's subparsers (``argparse._SubParsersAction``)."""
    from dep_eval.leaderboard import add_results_paths

    parser = subparsers.add_parser(
        "plot",
        help="figures (PNG, SVG) from lm-eval output folders",
        description="Draw figures from lm-eval results (the same runs the leaderboard reads).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_results_paths(parser)
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("results/figures"),
        metavar="DIR",
        help="folder for the figures (default: results/figures)",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="metric of the K curve and the quality/cost plot (default: meteor)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        help="file formats (default: png svg)",
    )
    parser.set_defaults(handler=run_plot)
    return parser


def run_plot(args: argparse.Namespace) -> None:
    try:
        written = plot_all(args.paths, args.output, metric=args.metric, formats=args.formats)
    except FileNotFoundError as error:
        raise SystemExit(f"dep-eval plot: {error}") from error
    logger.info("%d figure files in %s", len(written), args.output)
