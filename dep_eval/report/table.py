"""The leaderboard as data: rows, column groups, best/second-best marks, mismatch flags.

Rendering (Markdown, CSV, LaTeX) is ``dep_eval.report.render``; this module decides what
the table says:

- one row per method (lm-eval's model name) and model-args variant, e.g. DEP and
  DEP (use_diff=false); args every row shares (usually ``pretrained``) are left out of labels;
- one column group per category (``_val`` tasks get their own groups), then "Average"
  (unweighted over the test categories, '–' for a row that lacks one), then "Cost";
- per column the best value is marked "best" and the next distinct value "second"; values
  are compared as displayed (rounded), so equal-looking numbers always get the same mark;
  missing cells and the paper's reference rows take no part;
- runs that were set up differently (data source, limit, generation settings, seeds,
  n-samples, task version) are reported as ``Mismatch``es and their rows marked, never
  silently put side by side;
- uncertainty: each quality cell carries its 95 % bootstrap interval over documents (from
  the results file; ``None`` for files from before intervals). Runs of one row that differ
  only in the sampling seed are merged (``merge_seeds``): the cell is the mean over seeds,
  its interval the mean of the per-seed bounds, and ``spreads`` the standard deviation
  across seeds. With ``against=METHOD`` every per-category quality cell is tested against
  that method's row, document by document (``dep_eval.metrics.uncertainty.paired_test``);
- length: ``length_ratio`` (generated over reference words) is a column of its own, shown
  and not ranked; ``length_controlled=True`` puts the metrics of predictions cut to the
  reference's word count (``<metric>_lc``) in the quality columns instead.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dep_eval.report.paper import paper_rows
from dep_eval.report.results import (
    GLOBAL_SETTINGS,
    KNOWN_CATEGORIES,
    PER_CATEGORY_SETTINGS,
    TaskResult,
    canonical,
    document_scores,
    load_results,
    parse_args,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    key: str  # the name in lm-eval's results, e.g. "rouge1"
    label: str
    higher_is_better: bool
    decimals: int
    ranked: bool = True  # False: shown, never marked best (a length ratio is not a score)
    quality: bool = True  # a score with a bootstrap interval

    def display(self, value: float | None) -> str:
        return "–" if value is None else f"{value:.{self.decimals}f}"


PAPER_BERTSCORE = "bertscore_f1"
QUALITY_METRICS = (
    Metric("rouge1", "R-1", True, 4),
    Metric("rougeL", "R-L", True, 4),
    Metric("meteor", "METEOR", True, 4),
    Metric("bleu", "BLEU", True, 2),  # sacrebleu's 0-100 scale, as in the paper
    Metric(PAPER_BERTSCORE, "BERTScore", True, 4),
)
LC = "_lc"  # dep_eval.metrics.harness: the prediction cut to the reference's word count
LENGTH_CONTROLLED_METRICS = tuple(
    Metric(m.key + LC, f"{m.label} (lc)", True, m.decimals) for m in QUALITY_METRICS[:4]
)
LENGTH_RATIO = Metric("length_ratio", "len. ratio", False, 2, ranked=False, quality=False)
COST_METRICS = (
    Metric("llm_calls", "calls/sample", False, 2, quality=False),
    Metric("prompt_tokens", "prompt tok./sample", False, 1, quality=False),
    Metric("generated_tokens", "gen. tok./sample", False, 1, quality=False),
    Metric("seconds_per_sample", "s/sample", False, 2, quality=False),
    Metric("setup_seconds", "setup s (total)", False, 1, quality=False),
)
SIGNIFICANCE = 0.05
AVERAGE = "Average"
COST = "Cost"
PAPER_CATEGORY_ORDER = tuple(KNOWN_CATEGORIES.values())


def fallback_bertscore(key: str) -> Metric:
    """A BERTScore from another encoder than the paper's: its own, clearly named column.

    Scores from different encoders live on different scales, so e.g. ``bertscore_minilm_f1``
    must never land in the paper's BERTScore column.
    """
    encoder = key.removeprefix("bertscore_").removesuffix("_f1") or key
    return Metric(key, f"BERTScore-{encoder} (fallback, not the paper's)", True, 4)


def is_fallback_bertscore(key: str) -> bool:
    return key.startswith("bertscore_") and key != PAPER_BERTSCORE and key.endswith("_f1")


@dataclass(frozen=True)
class Column:
    group: str  # a category, "Books (val)", AVERAGE or COST
    metric: Metric

    @property
    def title(self) -> str:
        return f"{self.group} {self.metric.label}"


@dataclass
class Row:
    label: str
    kind: str  # "measured" or "paper"
    values: list[float | None]
    method: str = ""
    model_args: dict[str, str] = field(default_factory=dict)
    marks: list[str | None] = field(default_factory=list)  # "best" / "second" per column
    flags: list[str] = field(default_factory=list)  # markers of the mismatches it is in
    intervals: list[tuple[float, float] | None] = field(default_factory=list)  # 95 % bounds
    spreads: list[float | None] = field(default_factory=list)  # std across sampling seeds
    # against the reference row: (difference, p-value) per column, None when not tested
    tests: list[tuple[float, float] | None] = field(default_factory=list)
    seeds: int = 1
    reference: bool = False  # the row the others are tested against

    def significance(self, j: int, metric: Metric) -> str | None:
        """ "better" / "worse" when column ``j`` differs from the reference at p < 0.05."""
        test = self.tests[j] if j < len(self.tests) else None
        if test is None or test[1] >= SIGNIFICANCE:
            return None
        return "better" if (test[0] > 0) == metric.higher_is_better else "worse"


@dataclass(frozen=True)
class Mismatch:
    marker: str  # "⚠1"
    setting: str
    column: str | None  # None: compared across the whole table
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (value, where), most common first

    def describe(self) -> str:
        scope = f" in {self.column}" if self.column else ""
        parts = "; ".join(f"{value} for {', '.join(where)}" for value, where in self.groups)
        return f"{self.marker} {self.setting} differs{scope}: {parts}"


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: str | None = None  # label of the row tested against (--against)
    length_controlled: bool = False
    show_intervals: bool = True

    @property
    def groups(self) -> list[tuple[str, list[Column]]]:
        out: dict[str, list[Column]] = {}
        for column in self.columns:
            out.setdefault(column.group, []).append(column)
        return list(out.items())


# --------------------------------------------------------------------------- rows


def method_name(method: str) -> str:
    """The registry's label of a method (``dep_eval.registry``), or its name if unknown here."""
    from dep_eval import registry

    return registry.label(method)


def _method_order(method: str) -> tuple[int, str]:
    """Rows in registry order (built-ins as declared, then plugins); unknown methods last."""
    from dep_eval import registry

    names = list(registry.methods())
    return (names.index(method.lower()) if method.lower() in names else len(names), method)


# which LLM and engine ran a row: shown only when rows differ in them
ENGINE_ARGS = ("pretrained", "backend")


def _short(value: str) -> str:
    # A model or checkpoint path is long and its last part is what tells runs apart.
    return value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value


def row_labels(keys: Sequence[tuple[str, tuple[tuple[str, str], ...]]]) -> list[str]:
    """Labels like "DEP", "DEP (use_diff=false)": the model args that tell rows apart.

    Hidden: ``pretrained`` and ``backend``, each when every row shares it, and args that
    every row of the same method shares when that method has several rows. A method's only
    row shows its args: an ablation must not pass for the default method.
    """
    shared_by_all = {
        name for name in ENGINE_ARGS if len({dict(args).get(name) for _, args in keys}) == 1
    }
    by_method: dict[str, list[set]] = defaultdict(list)
    for method, args in keys:
        by_method[method].append(set(args))
    labels = []
    for method, args in keys:
        siblings = by_method[method]
        common = set.intersection(*siblings) if len(siblings) > 1 else set()
        shown = [(k, v) for k, v in args if (k, v) not in common and k not in shared_by_all]
        text = ", ".join(f"{k}={_short(v)}" for k, v in shown)
        labels.append(f"{method_name(method)} ({text})" if text else method_name(method))
    return labels


def _category_order(column: str) -> tuple[int, int, str]:
    category, val = column.removesuffix(" (val)"), column.endswith(" (val)")
    known = PAPER_CATEGORY_ORDER.index(category) if category in PAPER_CATEGORY_ORDER else 99
    return int(val), known, category


def _weighted_mean(pairs: Iterable[tuple[float, int | None]]) -> float | None:
    pairs = list(pairs)
    if not pairs:
        return None
    weights = [n if n else 1 for _, n in pairs]
    return sum(v * w for (v, _), w in zip(pairs, weights, strict=True)) / sum(weights)


def _cost(cells: Sequence[TaskResult], key: str) -> float | None:
    if key == "setup_seconds":
        # One-off work per process: several tasks of one run may each report the process
        # total, so take each file's largest value once and add up the files.
        per_file: dict[Path, float] = {}
        for cell in cells:
            if key in cell.metrics:
                per_file[cell.path] = max(per_file.get(cell.path, 0.0), cell.metrics[key])
        return sum(per_file.values()) if per_file else None
    # Per-sample means: weight each category by its number of samples.
    return _weighted_mean((c.metrics[key], c.n_samples) for c in cells if key in c.metrics)


# --------------------------------------------------------------------------- ranking


def rank_marks(values: Sequence[float | None], metric: Metric) -> list[str | None]:
    """Marks: "best" for every value equal to the best, "second" for the next distinct one."""
    shown = [None if v is None else float(metric.display(v)) for v in values]
    present = [v for v in shown if v is not None]
    if len(present) < 2 or not metric.ranked:  # one number is not a ranking
        return [None] * len(values)
    distinct = sorted(set(present), reverse=metric.higher_is_better)
    mark = {distinct[0]: "best"}
    if len(distinct) > 1:
        mark[distinct[1]] = "second"
    return [None if v is None else mark.get(v) for v in shown]


# --------------------------------------------------------------------------- mismatches


def find_mismatches(
    results: Sequence[TaskResult], labels: dict[tuple, str]
) -> tuple[list[Mismatch], dict[tuple, list[str]]]:
    """Settings that differ between cells; and which rows to flag for each."""
    scopes: list[tuple[str, str | None, list[TaskResult]]] = [
        (setting, None, list(results)) for setting in GLOBAL_SETTINGS
    ]
    by_column: dict[str, list[TaskResult]] = defaultdict(list)
    for result in results:
        by_column[result.column].append(result)
    for column in sorted(by_column, key=_category_order):
        scopes += [(s, column, by_column[column]) for s in PER_CATEGORY_SETTINGS]

    mismatches: list[Mismatch] = []
    flags: dict[tuple, list[str]] = defaultdict(list)
    for setting, column, cells in scopes:
        counts = Counter(cell.settings[setting] for cell in cells)
        if len(counts) < 2:
            continue
        marker = f"⚠{len(mismatches) + 1}"
        ranked = [value for value, _ in counts.most_common()]
        shown = _differences(ranked)
        # The most common value is the reference; on a tie every row involved is flagged.
        clear_majority = counts[ranked[0]] > counts[ranked[1]]
        groups = []
        for i, value in enumerate(ranked):
            having = [c for c in cells if c.settings[setting] == value]
            groups.append((shown[value], tuple(_where(having, cells, labels))))
            if i > 0 or not clear_majority:
                for key in dict.fromkeys(c.row_key for c in having):
                    flags[key].append(marker)
        mismatch = Mismatch(marker, setting, column, tuple(groups))
        logger.warning("mismatched runs: %s", mismatch.describe())
        mismatches.append(mismatch)
    return mismatches, flags


def _differences(values: Sequence[str]) -> dict[str, str]:
    """Display texts: for settings that are dicts (generation settings), only the keys
    that differ, e.g. ``temperature=0.2`` instead of the whole dict."""
    decoded = [json.loads(v) for v in values]
    if not all(isinstance(d, dict) for d in decoded):
        return {v: v for v in values}
    keys = sorted({k for d in decoded for k in d})
    differing = [k for k in keys if len({json.dumps(d.get(k, "(unset)")) for d in decoded}) > 1]
    return {
        value: ", ".join(f"{k}={json.dumps(d.get(k, '(unset)'))}" for k in differing)
        for value, d in zip(values, decoded, strict=True)
    }


def _where(
    having: Sequence[TaskResult], scope: Sequence[TaskResult], labels: dict[tuple, str]
) -> list[str]:
    """Row labels, with the categories when only some of the row's cells are meant."""
    out = []
    for key in dict.fromkeys(c.row_key for c in having):
        mine = [c.column for c in having if c.row_key == key]
        if len(mine) == sum(1 for c in scope if c.row_key == key):
            out.append(labels[key])
        else:
            out.append(f"{labels[key]} ({', '.join(sorted(mine))})")
    return sorted(out)


# --------------------------------------------------------------------------- building


def merge_seeds(results: Sequence[TaskResult]) -> list[TaskResult]:
    """One result per (row, category): the runs with other sampling seeds merged into it.

    Metrics are the mean over the seeds, ``spreads`` their standard deviation, intervals the
    mean of the per-seed bounds; a setting on which the seeds' runs disagree keeps all its
    values, so that the merged cell is flagged against the others.
    """
    groups: dict[tuple, list[TaskResult]] = defaultdict(list)
    for result in results:
        groups[(result.row_key, result.column)].append(result)
    merged = []
    for runs in groups.values():
        runs.sort(key=lambda r: r.sampling_seed)
        seeds = tuple(r.sampling_seed for r in runs)
        if len(runs) == 1:
            merged.append(replace(runs[0], seeds=seeds))
            continue
        names = set.intersection(*(set(r.metrics) for r in runs))
        metrics = {n: statistics.fmean(r.metrics[n] for r in runs) for n in sorted(names)}
        spreads = {n: statistics.stdev(r.metrics[n] for r in runs) for n in sorted(names)}
        intervals = {
            n: (
                statistics.fmean(r.intervals[n][0] for r in runs),
                statistics.fmean(r.intervals[n][1] for r in runs),
            )
            for n in sorted(names)
            if all(n in r.intervals for r in runs)
        }
        settings = {}
        for name in runs[0].settings:
            values = sorted({r.settings[name] for r in runs})
            settings[name] = values[0] if len(values) == 1 else canonical(values)
        settings["sampling seeds"] = canonical(list(seeds))
        sizes = {r.n_samples for r in runs}
        newest = max(runs, key=lambda r: r.date)
        merged.append(
            replace(
                newest,
                metrics=metrics,
                intervals=intervals,
                settings=settings,
                n_samples=sizes.pop() if len(sizes) == 1 else None,
                seeds=seeds,
                spreads=spreads,
                members=tuple(runs),
            )
        )
    return sorted(merged, key=lambda r: (r.row_key, r.task))


def build_leaderboard(
    results: Sequence[TaskResult],
    *,
    with_paper: bool = False,
    notes: Sequence[str] = (),
    length_controlled: bool = False,
    against: str | None = None,
) -> Leaderboard:
    """The table for ``results`` (normally from ``load_results``)."""
    results = merge_seeds(results)
    by_row: dict[tuple, list[TaskResult]] = defaultdict(list)
    for result in results:
        by_row[result.row_key].append(result)
    keys = sorted(by_row, key=lambda k: (_method_order(k[0]), len(k[1]), k[1]))
    labels = dict(zip(keys, row_labels(keys) if keys else [], strict=True))

    test_columns, columns, costs = _leaderboard_columns(results, length_controlled)

    rows = []
    for key in keys:
        cells = {cell.column: cell for cell in by_row[key]}
        values, intervals, spreads = _row_values(columns, test_columns, cells)
        row = Row(labels[key], "measured", values, key[0], dict(key[1]))
        row.intervals, row.spreads = intervals, spreads
        row.seeds = max(len(cell.seeds) for cell in by_row[key])
        rows.append(row)

    mismatches, flags = find_mismatches(results, labels)
    for row, key in zip(rows, keys, strict=True):
        row.flags = flags.get(key, [])

    notes = list(notes)
    for row, key in zip(rows, keys, strict=True):
        missing = [c for c in test_columns if c not in {cell.column for cell in by_row[key]}]
        if missing and costs:
            notes.append(f"{row.label}: costs cover its categories only (no {', '.join(missing)})")

    for j, column in enumerate(columns):
        marks = rank_marks([row.values[j] for row in rows], column.metric)
        for row, mark in zip(rows, marks, strict=True):
            row.marks.append(mark)

    reference = None
    if against is not None:
        reference = _test_against(against, keys, rows, by_row, columns, notes)

    if with_paper:
        rows += _paper_rows(columns, test_columns)
    return Leaderboard(
        columns, rows, mismatches, notes, reference=reference, length_controlled=length_controlled
    )


def _leaderboard_columns(
    results: Sequence[TaskResult], length_controlled: bool
) -> tuple[list[str], list[Column], list[Metric]]:
    """``(test categories, every column in order, cost metrics present)`` of a table."""
    data_columns = sorted({r.column for r in results}, key=_category_order)
    test_columns = [c for c in data_columns if not c.endswith(" (val)")]
    present = {name for r in results for name in r.metrics}
    costs = [m for m in COST_METRICS if m.key in present]
    quality = LENGTH_CONTROLLED_METRICS if length_controlled else QUALITY_METRICS
    length = [LENGTH_RATIO] if LENGTH_RATIO.key in present else []

    def fallbacks(columns: Iterable[str]) -> list[Metric]:
        if length_controlled:  # no length-controlled BERTScore (it would cost an encoder pass)
            return []
        names = {n for r in results if r.column in columns for n in r.metrics}
        return [fallback_bertscore(n) for n in sorted(names) if is_fallback_bertscore(n)]

    groups = [(c, fallbacks([c])) for c in test_columns]
    if len(test_columns) > 1:
        groups.append((AVERAGE, fallbacks(test_columns)))
    groups += [(c, fallbacks([c])) for c in data_columns if c.endswith(" (val)")]
    columns = [
        Column(group, metric) for group, extra in groups for metric in (*quality, *extra, *length)
    ]
    columns += [Column(COST, metric) for metric in costs]

    return test_columns, columns, costs


def _doc_rows(cell: TaskResult, metric: str) -> dict[str, object] | None:
    """Doc key -> per-document value of ``metric``, averaged over the cell's seeds."""
    import numpy as np

    per_seed = [document_scores(run, metric) for run in cell.runs]
    if any(scores is None for scores in per_seed):
        return None
    shared = set.intersection(*(set(scores) for scores in per_seed))  # type: ignore[arg-type]
    return {
        key: np.mean([np.asarray(s[key], dtype=float) for s in per_seed], axis=0)  # type: ignore[index]
        for key in shared
    }


def paired_difference(
    cell: TaskResult, reference: TaskResult, metric: str
) -> tuple[float, float, int] | str:
    """(difference, p-value, documents) of ``cell`` minus ``reference`` on their shared
    documents, or the reason why they cannot be paired."""
    from dep_eval.metrics.harness import statistic_of
    from dep_eval.metrics.uncertainty import paired_test

    mine, theirs = _doc_rows(cell, metric), _doc_rows(reference, metric)
    if mine is None or theirs is None:
        return "no per-document scores (run without --log_samples, or an older results file)"
    shared = sorted(mine.keys() & theirs.keys())
    if len(shared) < 2:
        return f"only {len(shared)} shared documents"
    test = paired_test([mine[k] for k in shared], [theirs[k] for k in shared], statistic_of(metric))
    return test.difference, test.p_value, len(shared)


def _test_against(
    against: str,
    keys: Sequence[tuple],
    rows: Sequence[Row],
    by_row: dict[tuple, list[TaskResult]],
    columns: Sequence[Column],
    notes: list[str],
) -> str:
    """Fill every row's ``tests`` against the (plainest) row of method ``against``.

    ``against`` is a method, optionally with model args that pick one of its rows:
    ``oppu,backend=hf`` (the row of ``oppu`` whose args include ``backend=hf``)."""
    method, _, arg_text = against.partition(",")
    wanted = set(parse_args(arg_text).items())
    candidates = [k for k in keys if k[0].lower() == method.lower() and wanted <= set(k[1])]
    if not candidates:
        methods = ", ".join(sorted({k[0] for k in keys}))
        raise ValueError(
            f"--against {against}: no row of that method{' with those args' if wanted else ''} "
            f"here (methods: {methods})"
        )
    reference_key = min(candidates, key=lambda k: len(k[1]))  # fewest model args
    index = list(keys).index(reference_key)
    rows[index].reference = True
    reference_cells = {cell.column: cell for cell in by_row[reference_key]}
    problems: dict[str, set[str]] = defaultdict(set)
    for key, row in zip(keys, rows, strict=True):
        row.tests = [None] * len(columns)
        if key == reference_key:
            continue
        cells = {cell.column: cell for cell in by_row[key]}
        for j, column in enumerate(columns):
            cell, reference = cells.get(column.group), reference_cells.get(column.group)
            if not column.metric.quality or cell is None or reference is None:
                continue  # Average, costs, the length ratio; or a missing cell
            if column.metric.key not in cell.metrics or column.metric.key not in reference.metrics:
                continue
            outcome = paired_difference(cell, reference, column.metric.key)
            if isinstance(outcome, str):
                problems[outcome].add(row.label)
                continue
            difference, p_value, shared = outcome
            row.tests[j] = (difference, p_value)
            sizes = {len(_doc_rows(cell, column.metric.key) or ()), shared}
            if len(sizes) > 1:
                problems[f"tested on the {shared} documents shared with the reference"].add(
                    f"{row.label} ({column.group})"
                )
    label = rows[index].label
    for problem, where in sorted(problems.items()):
        notes.append(f"not tested against {label}: {', '.join(sorted(where))}: {problem}")
    return label


def _row_values(
    columns: Sequence[Column], test_columns: Sequence[str], cells: dict[str, TaskResult]
) -> tuple[list[float | None], list[tuple[float, float] | None], list[float | None]]:
    """Per column: the value, its 95 % interval and its spread across seeds."""
    tests = [cells[c] for c in test_columns if c in cells] or list(cells.values())
    values: list[float | None] = []
    intervals: list[tuple[float, float] | None] = []
    spreads: list[float | None] = []
    for column in columns:
        key = column.metric.key
        interval, spread = None, None
        if column.group == COST:
            value = _cost(tests, key)
        elif column.group == AVERAGE:
            per_category = [cells[c].metrics.get(key) if c in cells else None for c in test_columns]
            complete = all(v is not None for v in per_category)
            value = sum(per_category) / len(per_category) if complete else None  # type: ignore[arg-type]
            bounds = [cells[c].intervals.get(key) if c in cells else None for c in test_columns]
            if value is not None and all(b is not None for b in bounds):
                # categories are independent samples: half-widths add in quadrature
                half = math.sqrt(sum(((b[1] - b[0]) / 2) ** 2 for b in bounds)) / len(bounds)  # type: ignore[index]
                interval = (value - half, value + half)
        else:
            cell = cells.get(column.group)
            value = None if cell is None else cell.metrics.get(key)
            if cell is not None and value is not None:
                interval = cell.intervals.get(key)
                spread = cell.spreads.get(key)
        values.append(value)
        intervals.append(interval)
        spreads.append(spread)
    return values, intervals, spreads


def _paper_rows(columns: Sequence[Column], test_columns: Sequence[str]) -> list[Row]:
    rows = []
    for paper in paper_rows():
        values: list[float | None] = []
        for column in columns:
            key = column.metric.key
            if column.group == AVERAGE:
                numbers = [paper.values.get(c, {}).get(key) for c in test_columns]
                complete = all(v is not None for v in numbers)
                values.append(sum(numbers) / len(numbers) if complete else None)  # type: ignore[arg-type]
            else:
                values.append(paper.values.get(column.group, {}).get(key))
        rows.append(
            Row(
                paper.label,
                "paper",
                values,
                marks=[None] * len(columns),
                intervals=[None] * len(columns),
                spreads=[None] * len(columns),
            )
        )
    return rows


def load_some_results(paths: Iterable[Path | str]) -> tuple[list, list[str]]:
    """``load_results``, but an error naming the paths when they hold no results at all."""
    paths = list(paths)
    results, notes = load_results(paths)
    if not results:
        raise FileNotFoundError(
            "no lm-eval results for this project's tasks found under "
            + ", ".join(str(p) for p in paths)
        )
    return results, notes


def leaderboard_from_paths(
    paths: Iterable[Path | str],
    *,
    with_paper: bool = False,
    length_controlled: bool = False,
    against: str | None = None,
) -> Leaderboard:
    results, notes = load_some_results(paths)
    return build_leaderboard(
        results,
        with_paper=with_paper,
        notes=notes,
        length_controlled=length_controlled,
        against=against,
    )
