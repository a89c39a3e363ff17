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
  silently put side by side.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dep_eval.report.paper import paper_rows
from dep_eval.report.results import (
    GLOBAL_SETTINGS,
    KNOWN_CATEGORIES,
    PER_CATEGORY_SETTINGS,
    TaskResult,
    load_results,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    key: str  # the name in lm-eval's results, e.g. "rouge1"
    label: str
    higher_is_better: bool
    decimals: int

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
COST_METRICS = (
    Metric("llm_calls", "calls/sample", False, 2),
    Metric("prompt_tokens", "prompt tok./sample", False, 1),
    Metric("generated_tokens", "gen. tok./sample", False, 1),
    Metric("seconds_per_sample", "s/sample", False, 2),
    Metric("setup_seconds", "setup s (total)", False, 1),
)
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


def _short(value: str) -> str:
    # A model or checkpoint path is long and its last part is what tells runs apart.
    return value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value


def row_labels(keys: Sequence[tuple[str, tuple[tuple[str, str], ...]]]) -> list[str]:
    """Labels like "DEP", "DEP (use_diff=false)": the model args that tell rows apart.

    Hidden: ``pretrained`` when every row shares it, and args that every row of the same
    method shares when that method has several rows. A method's only row shows its args:
    an ablation must not pass for the default method.
    """
    pretrained = {dict(args).get("pretrained") for _, args in keys}
    by_method: dict[str, list[set]] = defaultdict(list)
    for method, args in keys:
        by_method[method].append(set(args))
    labels = []
    for method, args in keys:
        siblings = by_method[method]
        common = set.intersection(*siblings) if len(siblings) > 1 else set()
        shown = [
            (k, v)
            for k, v in args
            if (k, v) not in common and not (k == "pretrained" and len(pretrained) == 1)
        ]
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
    if len(present) < 2:  # one number is not a ranking
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


def build_leaderboard(
    results: Sequence[TaskResult], *, with_paper: bool = False, notes: Sequence[str] = ()
) -> Leaderboard:
    """The table for ``results`` (normally from ``load_results``)."""
    by_row: dict[tuple, list[TaskResult]] = defaultdict(list)
    for result in results:
        by_row[result.row_key].append(result)
    keys = sorted(by_row, key=lambda k: (_method_order(k[0]), len(k[1]), k[1]))
    labels = dict(zip(keys, row_labels(keys) if keys else [], strict=True))

    data_columns = sorted({r.column for r in results}, key=_category_order)
    test_columns = [c for c in data_columns if not c.endswith(" (val)")]
    present = {name for r in results for name in r.metrics}
    costs = [m for m in COST_METRICS if m.key in present]

    def fallbacks(columns: Iterable[str]) -> list[Metric]:
        names = {n for r in results if r.column in columns for n in r.metrics}
        return [fallback_bertscore(n) for n in sorted(names) if is_fallback_bertscore(n)]

    groups = [(c, fallbacks([c])) for c in test_columns]
    if len(test_columns) > 1:
        groups.append((AVERAGE, fallbacks(test_columns)))
    groups += [(c, fallbacks([c])) for c in data_columns if c.endswith(" (val)")]
    columns = [
        Column(group, metric) for group, extra in groups for metric in (*QUALITY_METRICS, *extra)
    ]
    columns += [Column(COST, metric) for metric in costs]

    rows = []
    for key in keys:
        cells = {cell.column: cell for cell in by_row[key]}
        values = _row_values(columns, test_columns, cells)
        rows.append(Row(labels[key], "measured", values, key[0], dict(key[1])))

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

    if with_paper:
        rows += _paper_rows(columns, test_columns)
    return Leaderboard(columns, rows, mismatches, notes)


def _row_values(
    columns: Sequence[Column], test_columns: Sequence[str], cells: dict[str, TaskResult]
) -> list[float | None]:
    tests = [cells[c] for c in test_columns if c in cells] or list(cells.values())
    values: list[float | None] = []
    for column in columns:
        key = column.metric.key
        if column.group == COST:
            values.append(_cost(tests, key))
        elif column.group == AVERAGE:
            per_category = [cells[c].metrics.get(key) if c in cells else None for c in test_columns]
            complete = all(v is not None for v in per_category)
            values.append(sum(per_category) / len(per_category) if complete else None)  # type: ignore[arg-type]
        else:
            cell = cells.get(column.group)
            values.append(None if cell is None else cell.metrics.get(key))
    return values


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
        rows.append(Row(paper.label, "paper", values, marks=[None] * len(columns)))
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


def leaderboard_from_paths(paths: Iterable[Path | str], *, with_paper: bool = False) -> Leaderboard:
    results, notes = load_some_results(paths)
    return build_leaderboard(results, with_paper=with_paper, notes=notes)
