"""Checks a run's later steps need, made before the first token is generated.

lm-eval scores documents only after generating all of them, so a missing WordNet (METEOR),
an unloadable BERTScore encoder or an unwritable output folder would otherwise surface after
hours of generation. The tasks' ``load_dataset`` calls ``check_run`` (it runs before any
model generates, whichever model the run uses) and, once the documents are loaded,
``check_documents``; checkpoint compatibility is checked earlier still, when a method loads
its checkpoint. What is checked:

- dep-eval's cache folder (``check_cache_dir``): a folder, writable; an unusable one would
  otherwise fail deep inside the WordNet copy, the call cache or the encoder;
- WordNet and the BERTScore encoder (``_check_metrics``);
- ``--output_path``: writable (``check_writable``) and with room for what lm-eval will write
  there, estimated from the documents (``check_output_room``): lm-eval catches a failed
  write, logs "Could not save results" and exits 0, leaving empty files;
- the run's metadata keys (``check_metadata_keys``): a misspelled ``split`` would otherwise be
  ignored and the test split evaluated.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dep_eval.cache import CACHE_ENV, cache_dir

logger = logging.getLogger(__name__)


class RunCheckError(RuntimeError):
    """Something the run needs after generation is missing; the message says what to do."""


def check_run() -> None:
    """Raise ``RunCheckError`` (or the metric's own error) unless the run can finish."""
    run = lm_eval_arguments()
    check_cache_dir()  # first: WordNet is copied into it
    if not run.get("predict_only"):  # --predict_only computes no metric
        _check_metrics()
    output = getattr(run.get("evaluation_tracker"), "output_path", None)
    if output:
        check_writable(Path(output))


def check_documents(documents: Sequence[Mapping[str, Any]], prompt: Any) -> None:
    """The checks that need the documents (a list, or the task's ``datasets.Dataset``): room
    for the outputs (``prompt(doc)``: the task's ``doc_to_text``, which lm-eval writes into
    the samples file)."""
    run = lm_eval_arguments()
    output = getattr(run.get("evaluation_tracker"), "output_path", None)
    if not output:
        return
    count = len(documents)
    limit = run.get("limit")
    if limit:  # lm-eval's --limit: a count, or a fraction of the documents below 1
        count = min(count, math.ceil(count * limit) if limit < 1 else int(limit))
    chosen = [documents[i] for i in range(count)]
    check_output_room(
        Path(output),
        chosen if run.get("log_samples") else [],
        prompt,
        _max_gen_toks(run.get("gen_kwargs")),
    )


@functools.lru_cache(maxsize=1)
def _check_metrics() -> None:
    # Once per process: a group of tasks calls load_dataset once per task.
    from dep_eval.metrics import bertscore
    from dep_eval.metrics.wordnet import ensure_wordnet

    ensure_wordnet()  # raises WordNetUnavailableError saying what to install
    # Loads the encoder now (it is cached for scoring); DEP_EVAL_BERTSCORE=paper raises when
    # the paper's encoder cannot load, auto falls back to MiniLM and says so in the log.
    chosen = bertscore.backend()
    logger.info("BERTScore encoder: %s", "off" if chosen is None else chosen.model)


def lm_eval_arguments() -> dict[str, Any]:
    """The arguments of the running ``lm_eval.simple_evaluate``, if called from inside one.

    lm-eval hands its output path (in an ``EvaluationTracker``) and ``predict_only`` to
    ``simple_evaluate``, which passes neither to tasks or models, so they are read from that
    frame of the call stack ({} when not called under ``simple_evaluate``).
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "simple_evaluate" and "lm_eval" in frame.f_code.co_filename:
            return dict(frame.f_locals)
        frame = frame.f_back
    return {}


def check_writable(output: Path) -> None:
    """Prove a file can be written where lm-eval will write, without creating anything:
    a failed run must not leave an empty output folder behind."""
    folder = output.parent if output.suffix == ".json" else output  # lm-eval's own rule
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # lm-eval creates the rest; this is where it starts
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise RunCheckError(
            f"--output_path {output}: cannot write there ({error.strerror or error}); "
            "choose a folder you can write to, or fix its permissions, before generating"
        ) from error


# --------------------------------------------------------------------------- the cache


def check_cache_dir(root: Path | None = None) -> None:
    """dep-eval's cache folder (``dep_eval.cache``) is a folder this process can write to.

    Checked before anything is copied into it (WordNet) and before the LLM loads, so that a
    cache folder that is a file or read-only gets one error naming it and the variable that
    moves it, not a raw ``OSError`` from whichever cache writes first.
    """
    root = root or cache_dir()
    problem = _folder_problem(root)
    for sub in ("calls", "generations", "embeddings", "models", "nltk_data"):
        if problem is None and (root / sub).exists():
            problem = _folder_problem(root / sub)
    if problem:
        raise RunCheckError(
            f"dep-eval's cache folder {root} is unusable: {problem}; fix it, or point "
            f"{CACHE_ENV} at a writable folder (e.g. {CACHE_ENV}=/tmp/dep-eval-cache)"
        )


def _folder_problem(folder: Path) -> str | None:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    return None


# --------------------------------------------------------------------------- outputs

# What lm-eval writes besides the documents, measured on a --limit 2 run (issue 32): a
# results file of 39 KB per task (configs and metrics) and about 3 KB per samples line (its
# metrics, hashes, generation arguments). The estimate rounds both up.
RESULTS_BYTES = 64 * 1024
SAMPLE_OVERHEAD_BYTES = 4 * 1024
BYTES_PER_NEW_TOKEN = 16  # a generous bound on a token's characters, JSON-escaped
DEFAULT_MAX_GEN_TOKS = 256  # the task YAMLs' max_gen_toks


def output_bytes(documents: Iterable[Mapping[str, Any]], prompt: Any, max_gen_toks: int) -> int:
    """An upper estimate of what lm-eval writes for ``documents`` (empty: no samples file):
    the results file, and one samples line per document holding the document, its target
    and prompt, the generated text twice (``resps``, ``filtered_resps``) and its metrics.
    ``json.dumps``' ASCII escapes are longer than the UTF-8 lm-eval writes."""
    total = RESULTS_BYTES
    for doc in documents:
        total += len(json.dumps(doc)) + 2 * len(json.dumps(str(prompt(doc))))
        total += 2 * BYTES_PER_NEW_TOKEN * max_gen_toks + SAMPLE_OVERHEAD_BYTES
    return total


def check_output_room(
    output: Path, documents: list[Mapping[str, Any]], prompt: Any, max_gen_toks: int
) -> None:
    """Refuse to start when the ``--output_path`` disk cannot hold what the run will write."""
    folder = output.parent if output.suffix == ".json" else output
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        stats = os.statvfs(existing)
    except OSError:  # no figure to compare with: check_writable already passed
        return
    free = stats.f_bavail * stats.f_frsize
    needed = output_bytes(documents, prompt, max_gen_toks)
    logger.info(
        "--output_path %s: the outputs need about %s, %s free there",
        output,
        _size(needed),
        _size(free),
    )
    if free < needed:
        what = f"results and samples of {len(documents)} documents" if documents else "results"
        raise RunCheckError(
            f"--output_path {output}: the run will write about {_size(needed)} ({what}) but "
            f"only {_size(free)} is free on {existing}; free space there or choose another "
            "folder before generating"
        )


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def _max_gen_toks(gen_kwargs: Any) -> int:
    """``max_gen_toks`` of ``--gen_kwargs`` (a string ``a=1,b=2`` or a dict), else the YAML's."""
    if isinstance(gen_kwargs, str):
        from lm_eval.utils import simple_parse_args_string

        gen_kwargs = simple_parse_args_string(gen_kwargs)
    if isinstance(gen_kwargs, Mapping):
        value = gen_kwargs.get("max_gen_toks", gen_kwargs.get("max_new_tokens"))
        try:
            return max(int(value), 1) if value is not None else DEFAULT_MAX_GEN_TOKS
        except (TypeError, ValueError):
            return DEFAULT_MAX_GEN_TOKS
    return DEFAULT_MAX_GEN_TOKS


# --------------------------------------------------------------------------- metadata

# The keys the tasks read (tasks/utils.py, dep_eval.data.loaders.load_task_dataset).
TASK_KEYS = ("category", "split", "data_dir", "source")
# Keys lm-eval itself adds to every task's metadata, and the fixed tasks' pinned names.
LM_EVAL_KEYS = frozenset({"config_source", "version", "_metadata", "task_category", "task_split"})


def check_metadata_keys(options: Mapping[str, Any]) -> None:
    """Refuse a metadata key that is no task key but close to one (``spilt``, ``catgory``,
    ``data-dir``): it would be ignored and, for ``split``, the test split evaluated.

    lm-eval merges ``--model_args`` into the metadata, so keys the tasks do not read are
    normal (model arguments); only a near-miss of a task key is an error. The run's model
    arguments are never taken for one.
    """
    model_args = _model_arg_names(lm_eval_arguments().get("model_args"))
    for key in options:
        if key in TASK_KEYS or key in LM_EVAL_KEYS or key in model_args:
            continue
        normal = str(key).strip().lower().replace("-", "_").replace(" ", "_")
        close = [normal] if normal in TASK_KEYS else []
        close = close or difflib.get_close_matches(normal, TASK_KEYS, n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"--metadata key {key!r} is not one this task reads; did you mean "
                f"{close[0]!r}? The task reads {', '.join(TASK_KEYS)} (model arguments "
                "pass through it unread)"
            )


def _model_arg_names(model_args: Any) -> set[str]:
    if isinstance(model_args, Mapping):
        return {str(key) for key in model_args}
    if isinstance(model_args, str) and model_args.strip():
        return {part.split("=", 1)[0].strip() for part in model_args.split(",") if part.strip()}
    return set()
