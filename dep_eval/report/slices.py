"""Slices: where personalization helps. Per-document fields, and metrics per slice of users.

Two halves, one module:

**Recording** (model side, same process as lm-eval's ``process_results``, as
``dep_eval.costs``). A method records what it found for a document with ``record(key,
name=value)``; ``tasks/utils.py``'s ``process_results`` adds ``document_fields(doc)`` to
each document's metrics, so the values land in lm-eval's samples file (``--log_samples``)
beside the scores, and their means in the results file. Fields:

- ``profile_size``: the number of earlier reviews the document's profile holds (what every
  method received; written for every model, lm-eval's own included);
- ``dep_peers``: DEP only: how many distinct other users of the pool reviewed the items of
  the user's history slots, i.e. the peers DEP's diff embeddings were averaged over (0 when
  no slot item has another reviewer: the his-only cold start, e.g. on LongLaMP);
- ``dep_diff_slots``: DEP only: how many of its K slots got a diff embedding.

**Report** (``dep-eval leaderboard --slices``): read the samples files of a set of runs,
put each document in its slices, and compute each metric with its 95 % bootstrap interval
per slice and method, a paired test of each method against the reference per slice, and
each method's gain over Non-Perso per profile-length slice (with the interval of the paired
difference). Slices are defined by fields in the samples, never recomputed from the data:

- ``profile length``: quantile buckets (``--profile-buckets``, default 4) of
  ``profile_size`` over the reference run's documents;
- ``DEP peers``: ``dep_peers`` of the DEP run's samples, in buckets 0, 1-2, 3+
  (``--peer-edges``); every method's documents are put in the bucket DEP found for them
  (joined on the document's identity, ``Sample.key``), so slices hold the same documents
  for every method;
- ``cold start``: ``profile_size <= N`` (``--cold-start``, default 8) against the rest.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FIELDS",
    "SliceOptions",
    "add_arguments",
    "clear",
    "document_fields",
    "lookup",
    "options_from",
    "record",
    "slice_report",
]

FIELDS = ("profile_size", "dep_peers", "dep_diff_slots")

_lock = threading.Lock()
_fields: dict[str, dict[str, float]] = {}


def record(doc_key: str, **values: float) -> None:
    """Remember per-document slice fields (``dep_peers=3``) for ``doc_key``."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown slice field(s) {sorted(unknown)}; known: {', '.join(FIELDS)}")
    with _lock:
        _fields.setdefault(doc_key, {}).update({k: float(v) for k, v in values.items()})


def lookup(doc_key: str) -> dict[str, float]:
    with _lock:
        return dict(_fields.get(doc_key, {}))


def clear() -> None:
    with _lock:
        _fields.clear()


def document_fields(doc: Mapping[str, Any]) -> dict[str, float]:
    """The slice fields of one lm-eval document: its profile size (from the document
    itself) and whatever the method recorded for it; {} for a document not in this
    project's layout."""
    from dep_eval.data.records import Sample

    try:
        key = Sample.from_doc(dict(doc)).key
        size = len(doc["profile"])
    except (KeyError, TypeError, ValueError):
        return {}
    return {"profile_size": float(size), **lookup(key)}


# =========================================================================== the report

SLICE_METRICS = ("rouge1", "rougeL", "meteor", "bleu")
METRIC_LABELS = {"rouge1": "R-1", "rougeL": "R-L", "meteor": "METEOR", "bleu": "BLEU"}
PROFILE = "profile length"
PEERS = "DEP peers"
COLD = "cold start"


@dataclass(frozen=True)
class SliceOptions:
    reference: str = "nonperso"  # paired marks against this method's row
    profile_buckets: int = 4  # quantile buckets of profile_size
    peer_edges: tuple[int, ...] = (1, 3)  # dep_peers buckets: 0, 1-2, 3+
    cold_start: int = 8  # cold: profile_size <= this
    metrics: tuple[str, ...] = SLICE_METRICS
    dep: str = "dep"  # the method whose dep_peers define the peer slices


@dataclass(frozen=True)
class Run:
    """One row (method + args) in one column (category/split): its per-document rows."""

    label: str
    method: str
    cell: Any  # dep_eval.report.results.TaskResult (seeds merged)
    fields: dict[str, dict[str, float]]  # field -> doc key -> value


@dataclass
class SliceCell:
    n: int
    value: float
    low: float | None
    high: float | None
    test: tuple[float, float] | None = None  # (difference, p) against the reference


@dataclass
class SliceTable:
    kind: str  # PROFILE, PEERS or COLD
    column: str  # the category (and split)
    slices: list[tuple[str, list[str]]]  # (label, doc keys)
    cells: dict[tuple[str, str, str], SliceCell]  # (row label, metric, slice label)
    gains: dict[tuple[str, str, str], SliceCell] = field(default_factory=dict)
    note: str = ""


def _doc_values(cell: Any, name: str) -> dict[str, Any]:
    from dep_eval.report.table import _doc_rows

    return _doc_rows(cell, name) or {}


def load_runs(paths: Iterable[Path | str]) -> tuple[dict[str, list[Run]], list[str]]:
    """Per column (e.g. "All_Beauty"), every row's run with its per-document values."""
    from dep_eval.report.table import (
        _method_order,
        load_some_results,
        merge_seeds,
        row_labels,
    )

    results, notes = load_some_results(paths)
    cells = sorted(merge_seeds(results), key=lambda c: (_method_order(c.method), c.row_key))
    keys = list(dict.fromkeys(cell.row_key for cell in cells))
    labels = dict(zip(keys, row_labels(keys), strict=True))
    columns: dict[str, list[Run]] = defaultdict(list)
    for cell in cells:
        values = {name: _doc_values(cell, name) for name in FIELDS}
        if not values["profile_size"]:
            notes.append(
                f"{labels[cell.row_key]} ({cell.column}): no profile_size per document "
                "in its samples (run before slice fields, or without --log_samples)"
            )
            continue
        columns[cell.column].append(Run(labels[cell.row_key], cell.method, cell, values))
    return dict(columns), notes


def profile_slices(run: Run, buckets: int) -> list[tuple[str, list[str]]]:
    """Quantile buckets of profile_size over ``run``'s documents, labelled by size range."""
    sizes = run.fields["profile_size"]
    values = np.array(sorted(sizes.values()))
    edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1], method="higher"))
    out = []
    for low, high in zip([-np.inf, *edges], [*edges, np.inf], strict=True):
        keys = sorted(k for k, v in sizes.items() if low <= v < high)
        if keys:
            found = [sizes[k] for k in keys]
            out.append((_range_label(min(found), max(found)), keys))
    return out


def _range_label(low: float, high: float) -> str:
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def edge_slices(
    values: Mapping[str, float], edges: Sequence[int], unit: str
) -> list[tuple[str, list[str]]]:
    """Fixed buckets [0, e1), [e1, e2), ..., [ek, inf): "0", "1-2", "3+"."""
    bounds = [0, *edges]
    out = []
    for i, low in enumerate(bounds):
        high = bounds[i + 1] if i + 1 < len(bounds) else None
        keys = sorted(k for k, v in values.items() if v >= low and (high is None or v < high))
        label = f"{low}+" if high is None else _range_label(low, high - 1)
        out.append((f"{label} {unit}", keys))
    return out


def cold_slices(run: Run, cutoff: int) -> list[tuple[str, list[str]]]:
    sizes = run.fields["profile_size"]
    return [
        (f"<= {cutoff} reviews", sorted(k for k, v in sizes.items() if v <= cutoff)),
        (f"> {cutoff} reviews", sorted(k for k, v in sizes.items() if v > cutoff)),
    ]


# --------------------------------------------------------------------------- numbers


def _stack(rows: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    return np.asarray([rows[k] for k in keys], dtype=float)


def slice_cell(rows: Mapping[str, Any], keys: Sequence[str], metric: str) -> SliceCell | None:
    """``metric`` over the documents ``keys`` (those ``rows`` has), with its 95 % interval."""
    from dep_eval.metrics.harness import statistic_of
    from dep_eval.metrics.uncertainty import bootstrap_interval

    present = [k for k in keys if k in rows]
    if not present:
        return None
    data = _stack(rows, present)
    statistic = statistic_of(metric)
    interval = bootstrap_interval(data, statistic)
    low, high = (interval.low, interval.high) if interval else (None, None)
    return SliceCell(len(present), float(statistic(data)), low, high)


def paired(
    mine: Mapping[str, Any], theirs: Mapping[str, Any], keys: Sequence[str], metric: str
) -> tuple[float, float] | None:
    """(difference, p) of the paired randomization test on the shared documents of ``keys``."""
    from dep_eval.metrics.harness import statistic_of
    from dep_eval.metrics.uncertainty import paired_test

    shared = [k for k in keys if k in mine and k in theirs]
    if len(shared) < 2:
        return None
    test = paired_test(_stack(mine, shared), _stack(theirs, shared), statistic_of(metric))
    return test.difference, test.p_value


def gain(
    mine: Mapping[str, Any], base: Mapping[str, Any], keys: Sequence[str], metric: str
) -> SliceCell | None:
    """``metric`` of ``mine`` minus ``base`` on their shared documents of ``keys``, with the
    95 % bootstrap interval of that paired difference (documents resampled together)."""
    from dep_eval.metrics.harness import statistic_of
    from dep_eval.metrics.uncertainty import bootstrap_interval

    shared = [k for k in keys if k in mine and k in base]
    if not shared:
        return None
    a, b = _stack(mine, shared), _stack(base, shared)
    axis = -a.ndim  # where the pair axis sits in (..., n, 2, *row)
    statistic = statistic_of(metric)

    def difference(rows: np.ndarray) -> np.ndarray:
        return statistic(np.take(rows, 0, axis=axis)) - statistic(np.take(rows, 1, axis=axis))

    pairs = np.stack([a, b], axis=1)
    interval = bootstrap_interval(pairs, difference)
    low, high = (interval.low, interval.high) if interval else (None, None)
    return SliceCell(len(shared), float(difference(pairs)), low, high)


def _find(runs: Sequence[Run], method: str) -> Run | None:
    """The plainest row of ``method`` (fewest model args)."""
    matching = [run for run in runs if run.method.lower() == method.lower()]
    return min(matching, key=lambda run: len(run.cell.model_args)) if matching else None


def slice_table(
    kind: str,
    column: str,
    runs: Sequence[Run],
    slices: list[tuple[str, list[str]]],
    options: SliceOptions,
) -> SliceTable:
    reference = _find(runs, options.reference)
    baseline = _find(runs, "nonperso")
    table = SliceTable(kind, column, slices, {})
    for run in runs:
        for metric in options.metrics:
            rows = _doc_values(run.cell, metric)
            theirs = _doc_values(reference.cell, metric) if reference else {}
            base = _doc_values(baseline.cell, metric) if baseline else {}
            for label, keys in slices:
                cell = slice_cell(rows, keys, metric)
                if cell is not None and reference is not None and run is not reference:
                    cell.test = paired(rows, theirs, keys, metric)
                table.cells[(run.label, metric, label)] = cell  # type: ignore[assignment]
                if kind == PROFILE and baseline is not None and run is not baseline:
                    table.gains[(run.label, metric, label)] = gain(rows, base, keys, metric)  # type: ignore[assignment]
    return table


def build_tables(
    columns: Mapping[str, list[Run]], options: SliceOptions
) -> tuple[list[SliceTable], list[str]]:
    """Every slice kind for every column; notes say which slices could not be made."""
    tables, notes = [], []
    for column, runs in columns.items():
        anchor = _find(runs, options.reference) or runs[0]
        tables.append(
            slice_table(
                PROFILE, column, runs, profile_slices(anchor, options.profile_buckets), options
            )
        )
        dep = _find(runs, options.dep)
        peers = dep.fields["dep_peers"] if dep is not None else {}
        if peers:
            table = slice_table(
                PEERS, column, runs, edge_slices(peers, options.peer_edges, "peers"), options
            )
            table.note = f"peers as found by the {dep.label} run; every row sliced on its documents"  # type: ignore[union-attr]
            tables.append(table)
        else:
            notes.append(
                f"{column}: no DEP peer slices (no {options.dep} run with dep_peers per document)"
            )
        tables.append(
            slice_table(COLD, column, runs, cold_slices(anchor, options.cold_start), options)
        )
    return tables, notes


# --------------------------------------------------------------------------- rendering

KIND_TEXT = {
    PROFILE: "profile length (quantile buckets of the number of earlier reviews)",
    PEERS: "number of peers DEP found for the user's history items",
    COLD: "cold start (users with at most N earlier reviews)",
}


def _number(value: float, metric: str, signed: bool = False) -> str:
    decimals = 2 if metric == "bleu" else 4
    text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return text if metric == "bleu" else text.replace("0.", ".", 1)


def _cell_text(cell: SliceCell | None, metric: str, signed: bool = False) -> str:
    if cell is None:
        return "–"
    text = _number(cell.value, metric, signed)
    if cell.low is not None and cell.high is not None:
        text += f" [{_number(cell.low, metric, signed)}, {_number(cell.high, metric, signed)}]"
    if cell.test is not None and cell.test[1] < 0.05:
        text += " ▲" if cell.test[0] > 0 else " ▼"
    return text


def render_table(table: SliceTable, runs: Sequence[Run], options: SliceOptions) -> str:
    heads = [f"{label} (n={len(keys)})" for label, keys in table.slices]
    lines = [
        f"### {table.column}: {KIND_TEXT[table.kind]}",
        "",
        *([f"({table.note})", ""] if table.note else []),
        "| Method | Metric | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for run in runs:
        label = run.label + (" (reference)" if run is _find(runs, options.reference) else "")
        for metric in options.metrics:
            cells = [
                _cell_text(table.cells.get((run.label, metric, s)), metric) for s, _ in table.slices
            ]
            lines.append(
                f"| {label} | {METRIC_LABELS.get(metric, metric)} | " + " | ".join(cells) + " |"
            )
    if table.gains:
        lines += [
            "",
            f"#### {table.column}: gain over Non-Perso by profile length "
            "(paired difference, 95 % bootstrap interval over documents)",
            "",
            "| Method | Metric | " + " | ".join(label for label, _ in table.slices) + " |",
            "|---|---|" + "---|" * len(table.slices),
        ]
        for run in runs:
            if not any(key[0] == run.label for key in table.gains):
                continue
            for metric in options.metrics:
                cells = [
                    _cell_text(table.gains.get((run.label, metric, s)), metric, signed=True)
                    for s, _ in table.slices
                ]
                lines.append(
                    f"| {run.label} | {METRIC_LABELS.get(metric, metric)} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines) + "\n"


def render(
    tables: Sequence[SliceTable],
    columns: Mapping[str, list[Run]],
    notes: Sequence[str],
    options: SliceOptions,
) -> str:
    parts = [
        "Per-slice metrics: value [95 % bootstrap interval over the slice's documents]; "
        f"▲/▼: significantly above/below the reference ({options.reference}) on the same "
        "documents (paired approximate randomization, p < 0.05). Slice fields come from the "
        "samples files (profile_size, dep_peers), not from the data.",
        "",
    ]
    for table in tables:
        parts.append(render_table(table, columns[table.column], options))
    if notes:
        parts += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(parts)


def plot_gains(
    tables: Sequence[SliceTable],
    columns: Mapping[str, list[Run]],
    output_dir: Path,
    options: SliceOptions,
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Each method's gain over Non-Perso by profile length, one panel per metric."""
    from dep_eval.plots import _colors, _figure, _save

    paths: list[Path] = []
    for table in (t for t in tables if t.kind == PROFILE and t.gains):
        runs = [r for r in columns[table.column] if any(k[0] == r.label for k in table.gains)]
        figure = _figure(3.2 * len(options.metrics), 3.2)
        axes = figure.subplots(1, len(options.metrics), squeeze=False)[0]
        x = np.arange(len(table.slices))
        for ax, metric in zip(axes, options.metrics, strict=True):
            for i, (run, color) in enumerate(zip(runs, _colors(len(runs)), strict=True)):
                cells = [table.gains.get((run.label, metric, s)) for s, _ in table.slices]
                ys = [c.value if c else np.nan for c in cells]
                err = [
                    [c.value - c.low if c and c.low is not None else 0 for c in cells],
                    [c.high - c.value if c and c.high is not None else 0 for c in cells],
                ]
                offset = (i - (len(runs) - 1) / 2) * 0.08
                ax.errorbar(
                    x + offset, ys, yerr=err, marker="o", capsize=3, color=color, label=run.label
                )
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xticks(x, [label for label, _ in table.slices], fontsize="small")
            ax.set_title(
                f"{METRIC_LABELS.get(metric, metric)} gain over Non-Perso", fontsize="small"
            )
            ax.set_xlabel("earlier reviews in the profile")
        axes[0].legend(fontsize="small")
        stem = f"slices_gain_{table.column.replace(' ', '_').replace('(', '').replace(')', '')}"
        paths += _save(figure, output_dir, stem, formats)
    return paths


def slice_report(
    paths: Iterable[Path | str], options: SliceOptions, plot_dir: Path | None = None
) -> str:
    """The Markdown slice report of the runs under ``paths`` (and the gain plot)."""
    columns, notes = load_runs(paths)
    if not columns:
        raise ValueError(
            "no run with per-document slice fields (profile_size) found; rerun "
            "with --log_samples on a dep-eval with slice fields"
        )
    tables, more = build_tables(columns, options)
    if plot_dir is not None:
        for path in plot_gains(tables, columns, plot_dir, options):
            notes.append(f"figure: {path}")
    return render(tables, columns, [*notes, *more], options)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: Any) -> None:
    """``dep-eval leaderboard --slices`` and its options."""
    group = parser.add_argument_group("slices (--slices)")
    group.add_argument(
        "--slices",
        action="store_true",
        help="per-slice metrics instead of the "
        "leaderboard: profile length, DEP peers, cold start (needs --log_samples runs)",
    )
    group.add_argument(
        "--profile-buckets",
        type=int,
        default=4,
        metavar="Q",
        help="quantile buckets of the profile size (default: 4)",
    )
    group.add_argument(
        "--peer-edges",
        default="1,3",
        metavar="E1,E2",
        help="DEP peer buckets [0,E1), [E1,E2), [E2,inf) (default: 1,3: 0, 1-2, 3+)",
    )
    group.add_argument(
        "--cold-start",
        type=int,
        default=8,
        metavar="N",
        help="cold start: users with at most N earlier reviews (default: 8)",
    )
    group.add_argument(
        "--slice-plot",
        type=Path,
        metavar="DIR",
        help="also write the gain-over-Non-Perso plot(s) to DIR (PNG and SVG)",
    )


def options_from(args: Any) -> SliceOptions:
    try:
        edges = tuple(int(part) for part in str(args.peer_edges).split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--peer-edges {args.peer_edges!r}: whole numbers separated by commas"
        ) from None
    if not edges or list(edges) != sorted(set(edges)) or edges[0] < 1:
        raise ValueError(f"--peer-edges {args.peer_edges!r}: increasing whole numbers >= 1")
    if args.profile_buckets < 1 or args.cold_start < 0:
        raise ValueError("--profile-buckets must be >= 1 and --cold-start >= 0")
    return SliceOptions(
        reference=getattr(args, "against", None) or "nonperso",
        profile_buckets=args.profile_buckets,
        peer_edges=edges,
        cold_start=args.cold_start,
    )
