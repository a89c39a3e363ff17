"""Functions the LongLaMP task YAMLs reference with ``!function longlamp_utils.<name>``.

lm-eval imports this file by its path, so it uses absolute imports only; the loader is
``dep_eval.data.longlamp``. The tasks pin their LongLaMP config and split in
``dataset_kwargs`` (``task_category``, ``task_split``) as the Amazon tasks do (tasks/utils.py
says why); the data comes from ``--metadata '{"data_dir": DIR}'`` (a folder
``DIR/<config>/{train,val,test}.jsonl``), ``{"source": "longlamp-hub:REPO"}``, or by default
the hub's ``LongLaMP/LongLaMP``. Scoring, the metric list and the generation settings are the
Amazon tasks' (``_template``): LongLaMP scores with the same ROUGE and METEOR definitions
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from dep_eval.data import longlamp
from dep_eval.data.loaders import HubUnreachable
from dep_eval.preflight import check_run

EVAL_SPLIT = "eval"
TASK_PREFIX = "longlamp_"


def _drop_generic_metadata_hint(record: logging.LogRecord) -> bool:
    """lm-eval's hint that custom kwargs go to --metadata: these tasks document theirs."""
    message = record.getMessage()
    return not (message.startswith(TASK_PREFIX) and "Custom kwargs can be passed" in message)


_drop_generic_metadata_hint.dep_eval_longlamp = True  # type: ignore[attr-defined]
_task_logger = logging.getLogger("lm_eval.api.task")
if not any(getattr(f, "dep_eval_longlamp", False) for f in _task_logger.filters):
    _task_logger.addFilter(_drop_generic_metadata_hint)


def load_dataset(**options: Any) -> dict[str, datasets.Dataset]:
    """``custom_dataset`` of the LongLaMP tasks: ``{"eval": the pinned config and split}``."""
    check_run()
    config, split = options.pop("task_category"), options.pop("task_split")
    for key, pinned in (("category", config), ("split", split)):
        if options.get(key) not in (None, "", pinned):
            raise ValueError(
                f"this task evaluates LongLaMP {key} {pinned!r}, but the run's metadata asks "
                f"for {options[key]!r}; pick the longlamp_* task of that {key} instead"
            )
    options.update(category=config, split=split)
    try:
        loaded = longlamp.load_task_dataset(options)
    except HubUnreachable as exc:
        if logging.getLogger("lm_eval").isEnabledFor(logging.DEBUG):
            raise
        raise SystemExit(f"dep-eval: {exc}") from None
    return {EVAL_SPLIT: loaded[split]}


def doc_to_text(doc: dict[str, Any]) -> str:
    """LongLaMP's own prompt (the row's ``input``), for lm-eval's built-in models.

    This project's models build their personalized prompts from the whole document."""
    return str(doc[longlamp.INPUT_FIELD])
