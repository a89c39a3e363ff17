"""Checks a run's later steps need, made before the first token is generated.

lm-eval scores documents only after generating all of them, so a missing WordNet (METEOR),
an unloadable BERTScore encoder or an unwritable output folder would otherwise surface after
hours of generation. The tasks' ``load_dataset`` calls ``check_run`` (it runs before any
model generates, whichever model the run uses); checkpoint compatibility is checked earlier
still, when a method loads its checkpoint.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RunCheckError(RuntimeError):
    """Something the run needs after generation is missing; the message says what to do."""


def check_run() -> None:
    """Raise ``RunCheckError`` (or the metric's own error) unless the run can finish."""
    run = lm_eval_arguments()
    if not run.get("predict_only"):  # --predict_only computes no metric
        _check_metrics()
    output = getattr(run.get("evaluation_tracker"), "output_path", None)
    if output:
        check_writable(Path(output))


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
