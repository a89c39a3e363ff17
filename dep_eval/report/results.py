"""Reading the aggregated results files that ``lm_eval --output_path DIR`` writes.

lm-eval 0.4.13 (``loggers/evaluation_tracker.py``) writes one JSON file per run to
``DIR/<model_name_sanitized>/results_<ISO date>.json`` (or ``<stem>_<date>.json`` beside
``--output_path FILE.json``). Per run it holds:

- ``results[task]["<metric>,<filter>"]`` (plus ``<metric>_stderr,<filter>``, ``alias``...);
- ``configs[task]``: the task config, with ``generation_kwargs`` and ``metadata`` (the task
  YAML's metadata, ``--metadata`` and the model args, merged);
- ``config``: ``model`` (the registry name, e.g. ``dep``), ``model_args``, ``limit``,
  ``gen_kwargs`` (``--gen_kwargs``), the seeds; ``n-samples[task]["effective"]``;
  ``versions[task]``; ``date`` (start time, epoch seconds).

Group entries (``amazon_review_personalized``) have no ``configs`` entry and are skipped: a
group's score is a size-weighted mean the leaderboard recomputes its own way.

Intervals: ``<metric>_ci_low`` / ``<metric>_ci_high`` (written by this project's tasks, see
``dep_eval.metrics.harness``) become ``TaskResult.intervals``; files from before them have
none. Per-document scores are read from the samples file beside the results file
(``samples_<task>_<date>.jsonl``, written with ``--log_samples``), keyed by each document's
identity (``Sample.key``), so that two runs can be paired document by document.

Sampling seeds: a run's ``--gen_kwargs seed=S`` (this project's models default to 1234) is
not a "generation setting" that makes runs incomparable; runs that differ only in it are
kept side by side (one per seed) and the leaderboard reports their mean and spread.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonlines

logger = logging.getLogger(__name__)

TASK_PREFIX = "amazon_review_personalized"
# Task-name suffix -> the dataset's category name (the paper's three categories).
KNOWN_CATEGORIES = {
    "books": "Books",
    "movies_and_tv": "Movies_and_TV",
    "cds_and_vinyl": "CDs_and_Vinyl",
}
# Model args that change how a run executes but not what it generates: they do not make a
# separate leaderboard row.
RUNTIME_ARGS = frozenset(
    {"batch_size", "max_batch_size", "device", "parallelize", "trust_remote_code", "cache_dir"}
)
# The settings two cells must share to be compared. "n-samples" and "task version" are
# compared within a category only (categories legitimately differ in size).
GLOBAL_SETTINGS = ("data source", "limit", "generation settings", "seed", "sampling seeds")
PER_CATEGORY_SETTINGS = ("n-samples", "task version")
# What this project's models use when --gen_kwargs has no seed (GenerationSettings.seed).
DEFAULT_SAMPLING_SEED = 1234
INTERVAL_BOUNDS = ("_ci_low", "_ci_high")


@dataclass(frozen=True)
class TaskResult:
    """One task of one results file: the unit the leaderboard puts into a cell."""

    path: Path
    task: str
    category: str
    split: str  # "test" or "val"
    method: str  # lm-eval's model name, e.g. "dep"
    model_args: Mapping[str, str]  # normalised to strings, runtime args dropped
    metrics: Mapping[str, float]
    settings: Mapping[str, str]  # canonical JSON per setting name
    n_samples: int | None
    date: float
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    sampling_seed: int = DEFAULT_SAMPLING_SEED
    # after merging the runs of several sampling seeds (dep_eval.report.table.merge_seeds):
    seeds: tuple[int, ...] = ()
    spreads: Mapping[str, float] = field(default_factory=dict)  # std over the seeds
    members: tuple[TaskResult, ...] = ()  # the per-seed results

    @property
    def runs(self) -> tuple[TaskResult, ...]:
        """The single-seed results this one stands for (itself when not merged)."""
        return self.members or (self,)

    @property
    def samples_path(self) -> Path:
        """Where lm-eval's --log_samples put this task's samples."""
        stamp = self.path.stem.removeprefix("results_")
        if stamp == self.path.stem:  # --output_path FILE.json: <stem>_<date>.json
            return self.path.with_name(f"samples_{self.task}_{self.path.stem}.jsonl")
        return self.path.with_name(f"samples_{self.task}_{stamp}.jsonl")

    @property
    def row_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.method, tuple(sorted(self.model_args.items()))

    @property
    def column(self) -> str:
        return self.category if self.split == "test" else f"{self.category} (val)"


def _normalise(value: Any) -> Any:
    """Make equal settings compare equal: ``2.0`` and ``2`` (a ``--limit``), key order."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def canonical(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, ensure_ascii=False, default=str)


def _arg_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text.lower() if text.lower() in {"true", "false"} else text


def parse_typed_args(raw: Any) -> dict[str, Any]:
    """``model_args``/``gen_kwargs`` as lm-eval stores them (a dict, or ``"a=1,b=x"``), typed.

    A string is read by lm-eval's own ``simple_parse_args_string`` (numbers, ``true``/``false``,
    ``none``), the function that read it on the command line, so ``--gen_kwargs
    temperature=0.8`` compares equal to a YAML ``temperature: 0.8``. Imported here, not at the
    top: rendering a table must not import lm-eval (tests/test_registration.py).
    """
    if not raw:
        return {}
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(str(raw))


def parse_args(raw: Any) -> dict[str, str]:
    """Like ``parse_typed_args``, each value as the text a table shows and a row key compares."""
    return {key: _arg_text(value) for key, value in parse_typed_args(raw).items()}


def category_of(task: str, task_config: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(category, split)`` of a task, or None for tasks that are not this project's.

    The fixed tasks pin both in ``dataset_kwargs`` (``task_category``, ``task_split``; see
    tasks/utils.py); the ``_custom`` task takes them from the run's metadata (``category``,
    ``split``, default test). The task name is the fallback for files without either.
    """
    if task != TASK_PREFIX and not task.startswith(TASK_PREFIX + "_"):
        # another task run beside ours gets the run's --metadata (category and all) too
        return None
    metadata = task_config.get("metadata") or {}
    pinned = task_config.get("dataset_kwargs") or {}
    name = task.removesuffix("_val")
    suffix = name[len(TASK_PREFIX) + 1 :] if name.startswith(TASK_PREFIX + "_") else None
    category = pinned.get("task_category") or KNOWN_CATEGORIES.get(suffix or "")
    category = category or metadata.get("category") or suffix
    if not isinstance(category, str) or not category:
        return None
    split = pinned.get("task_split")
    if not split and task.endswith("_val"):
        split = "val"
    split = split or metadata.get("split") or task_config.get("test_split")
    return category, "val" if split == "val" else "test"


def _metrics(task_results: Mapping[str, Any]) -> dict[str, float]:
    """``{"rouge1": 0.31, ...}`` from ``{"rouge1,none": 0.31, "rouge1_stderr,none": ...}``."""
    out: dict[str, float] = {}
    for key, value in task_results.items():
        name, sep, filter_name = key.partition(",")
        if not sep or name.endswith(("_stderr", *INTERVAL_BOUNDS)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # "N/A" and friends
        if not math.isfinite(value):
            continue
        # Our tasks have only the "none" filter; if a task has several, "none" wins.
        if filter_name == "none" or name not in out:
            out[name] = float(value)
    return out


def _intervals(task_results: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{"rouge1": (low, high)}`` from ``rouge1_ci_low,none`` and ``rouge1_ci_high,none``."""
    bounds: dict[str, dict[str, float]] = {}
    for key, value in task_results.items():
        name, sep, filter_name = key.partition(",")
        if not sep or filter_name != "none" or not name.endswith(INTERVAL_BOUNDS):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # "N/A": a single document, or intervals switched off
        suffix = next(b for b in INTERVAL_BOUNDS if name.endswith(b))
        bounds.setdefault(name.removesuffix(suffix), {})[suffix] = float(value)
    return {
        name: (pair["_ci_low"], pair["_ci_high"])
        for name, pair in bounds.items()
        if len(pair) == 2 and all(math.isfinite(v) for v in pair.values())
    }


def _generation(data: Mapping[str, Any], task_config: Mapping[str, Any]) -> dict[str, Any]:
    generation = dict(task_config.get("generation_kwargs") or {})
    # --gen_kwargs overrides the YAML
    generation.update(parse_typed_args((data.get("config") or {}).get("gen_kwargs")))
    return generation


def _sampling_seed(generation: Mapping[str, Any]) -> int:
    seed = generation.get("seed")
    try:
        return DEFAULT_SAMPLING_SEED if seed is None else int(seed)
    except (TypeError, ValueError):
        return DEFAULT_SAMPLING_SEED


def _settings(data: Mapping[str, Any], task: str, task_config: Mapping[str, Any]) -> dict:
    run = data.get("config") or {}
    metadata = task_config.get("metadata") or {}
    source = {k: metadata[k] for k in ("source", "data_dir") if metadata.get(k) is not None}
    generation = _generation(data, task_config)
    seed = _sampling_seed(generation)
    generation.pop("seed", None)  # the sampling seed: compared as "sampling seeds"
    n_samples = (data.get("n-samples") or {}).get(task) or {}
    return {
        # Without source/data_dir the loader fell back to DEP_EVAL_DATA_DIR or the hub,
        # which the results file does not record.
        "data source": canonical(source or "default (DEP_EVAL_DATA_DIR or hub)"),
        "limit": canonical(run.get("limit")),
        "generation settings": canonical(generation),
        "seed": canonical({k: run.get(k) for k in ("random_seed", "numpy_seed", "torch_seed")}),
        "n-samples": canonical(n_samples.get("effective")),
        "task version": canonical((data.get("versions") or {}).get(task)),
        "sampling seeds": canonical([seed]),
    }


def _failed_run(path: Path) -> str | None:
    """Why ``path`` holds no results at all (a run that failed while writing it), or None."""
    try:
        if path.stat().st_size == 0:
            return "it is empty (0 bytes): the run that wrote it failed (a full disk?)"
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        return f"it is unreadable ({error})"
    except json.JSONDecodeError as error:
        return f"it is not valid JSON ({error}): the run that wrote it failed or it was cut short"
    return None


def _shape_problem(data: Any) -> str | None:
    """What makes parsed JSON unlike an lm-eval results file, or None."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    for key in ("results", "configs", "config"):
        if not isinstance(data.get(key), dict):
            return f"its {key!r} is {type(data.get(key)).__name__}, not an object"
    for key in ("n-samples", "versions"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"its {key!r} is {type(data[key]).__name__}, not an object"
    for task, config in data["configs"].items():
        if not isinstance(config, dict):
            return f"configs[{task!r}] is {type(config).__name__}, not an object"
        if config.get("metadata") is not None and not isinstance(config["metadata"], dict):
            return f"configs[{task!r}].metadata is not an object"
        results = data["results"].get(task)
        if results is not None and not isinstance(results, dict):
            return f"results[{task!r}] is {type(results).__name__}, not an object"
    return None


def results_file_problem(path: Path) -> str | None:
    """Why ``path`` is no usable lm-eval results file (a failed run's empty or cut file, an
    odd shape), or None."""
    failed = _failed_run(path)
    if failed is not None:
        return failed
    return _shape_problem(json.loads(path.read_text(encoding="utf-8")))


def _looks_like_results(path: Path, data: Any) -> bool:
    """A file lm-eval named as results, or JSON with a "results" entry: one that is not
    well-formed is worth a warning; any other JSON file in the folder is not."""
    return path.name.startswith("results") or (isinstance(data, dict) and "results" in data)


def read_results_file(path: Path, notes: list[str] | None = None) -> list[TaskResult]:
    """This project's tasks in one results file; [] (logged, and noted in ``notes``) when it
    holds none: a failed run's empty or cut file, an odd-shaped one, other tasks only."""
    notes = [] if notes is None else notes
    failed = _failed_run(path)
    if failed is not None:
        note = f"{path} skipped: {failed}; rerun that run"
        logger.warning("%s", note)
        notes.append(note)
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    problem = _shape_problem(data)
    if problem is not None:
        if not _looks_like_results(path, data):
            logger.debug("skipping %s: not an lm-eval results file", path)
            return []
        note = f"{path} skipped: not an lm-eval results file ({problem})"
        logger.warning("%s", note)
        notes.append(note)
        return []
    try:
        return _task_results(path, data, notes)
    except (AttributeError, TypeError, ValueError) as error:  # a shape not foreseen above
        note = f"{path} skipped: not an lm-eval results file ({type(error).__name__}: {error})"
        logger.warning("%s", note)
        notes.append(note)
        return []


def _task_results(path: Path, data: dict[str, Any], notes: list[str]) -> list[TaskResult]:
    run = data["config"]
    method = str(run.get("model") or data.get("model_source") or "unknown")
    args = {k: v for k, v in parse_args(run.get("model_args")).items() if k not in RUNTIME_ARGS}
    engine = run.get("engine")  # the engine that ran (get_model_info), e.g. what backend=auto chose
    if isinstance(engine, str) and engine:
        args["backend"] = engine
    date = data.get("date")
    if not isinstance(date, (int, float)) or isinstance(date, bool):
        date = path.stat().st_mtime
    out = []
    for task, task_config in sorted(data["configs"].items()):
        where = category_of(task, task_config)
        if where is None:
            if (task_config.get("metadata") or {}).get("category") is not None:
                note = (
                    f"{path}: task {task} ignored: not a review-generation task (it got the "
                    "run's --metadata)"
                )
                logger.info("%s", note)
                notes.append(note)
            else:
                logger.debug("skipping task %s in %s: not a review-generation task", task, path)
            continue
        task_results = data["results"].get(task)
        if not task_results:
            logger.warning("%s: task %s has a config but no results", path, task)
            continue
        effective = ((data.get("n-samples") or {}).get(task) or {}).get("effective")
        out.append(
            TaskResult(
                path=path,
                task=task,
                category=where[0],
                split=where[1],
                method=method,
                model_args=args,
                metrics=_metrics(task_results),
                settings=_settings(data, task, task_config),
                n_samples=int(effective) if isinstance(effective, (int, float)) else None,
                date=float(date),
                intervals=_intervals(task_results),
                sampling_seed=_sampling_seed(_generation(data, task_config)),
            )
        )
    return out


def find_results_files(paths: Iterable[Path]) -> list[Path]:
    """JSON files under ``paths`` (files are taken as given); samples are ``.jsonl``."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        else:
            logger.warning("%s does not exist", path)
    return found


def load_results(paths: Iterable[Path | str]) -> tuple[list[TaskResult], list[str]]:
    """Every task result under ``paths``, the latest run per (row, category) only.

    Returns the kept results and notes about superseded runs (also logged): re-running a
    method is common, and silently mixing an old and a new run would be worse.
    """
    notes: list[str] = []
    results = [
        result
        for path in find_results_files(Path(p) for p in paths)
        for result in read_results_file(path, notes)
    ]
    latest: dict[tuple, TaskResult] = {}
    for result in sorted(results, key=lambda r: r.date):
        # By category, not task name: one _custom task serves many categories; by sampling
        # seed, since runs with other seeds are repetitions, not replacements.
        key = (result.row_key, result.column, result.sampling_seed)
        if key in latest:
            old = latest[key]
            note = f"{result.column} of {result.method} in {old.path} superseded by {result.path}"
            logger.warning("older run ignored: %s", note)
            notes.append(note)
        latest[key] = result
    return sorted(latest.values(), key=lambda r: (r.row_key, r.task)), notes


# --------------------------------------------------------------------------- samples


def _doc_key(sample: Mapping[str, Any]) -> str:
    from dep_eval.data.records import Sample

    try:
        return Sample.from_doc(sample["doc"]).key
    except (KeyError, TypeError, ValueError):
        # not this project's document layout: lm-eval's hash of the document
        return f"hash:{sample.get('doc_hash')}"


def _is_score(value: Any) -> bool:
    """A per-document score or row of statistics (old files hold (prediction, reference))."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


@functools.lru_cache(maxsize=64)
def _read_samples(path: Path) -> dict[str, dict[str, Any]]:
    """metric -> doc key -> per-document value, for every numeric metric in the file."""
    out: dict[str, dict[str, Any]] = {}
    with jsonlines.open(path) as reader:
        try:
            for sample in reader.iter(type=dict, skip_empty=True):
                if sample.get("filter", "none") != "none":
                    continue
                key = _doc_key(sample)
                for metric in sample.get("metrics") or ():
                    value = sample.get(metric)
                    if _is_score(value):
                        out.setdefault(metric, {})[key] = value
        except jsonlines.InvalidLineError as error:
            raise ValueError(f"{path}, line {error.lineno}: {error}") from error
    return out


def document_scores(result: TaskResult, metric: str) -> dict[str, Any] | None:
    """Doc key -> ``metric``'s per-document value in ``result``'s samples file, or None when
    there is none (run without --log_samples, or a file from before per-document scores)."""
    path = result.samples_path
    if not path.is_file():
        return None
    return _read_samples(path).get(metric)
