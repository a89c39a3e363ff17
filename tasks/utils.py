"""Functions the task YAMLs reference with ``!function utils.<name>``.

lm-eval 0.4.13 imports this file by its path (module name = the path), so it must use
absolute imports only; the real code lives in ``dep_eval``.

How metadata reaches ``load_dataset`` (read from lm-eval 0.4.13's source):

1. ``lm_eval --model_args A --metadata M``: the run's metadata is ``A | M`` (``M`` wins)
   (``config/evaluate_config.py``; ``evaluator.simple_evaluate`` does the same).
2. ``TaskFactory`` merges it into each task's YAML ``metadata`` as ``yaml_metadata | run``:
   the RUN wins, so a YAML ``metadata: {category: Books}`` could be silently overridden by
   ``--metadata '{"category": ...}'`` (``tasks/_factory.py``). It also adds
   ``config_source``.
3. ``ConfigurableTask.download`` calls ``custom_dataset(**metadata, **dataset_kwargs)``
   (``api/task.py``); a key present in both is a Python ``TypeError``.

So the fixed tasks pin their category and split in ``dataset_kwargs`` under their own names
(``task_category``, ``task_split``); ``load_dataset`` refuses a run's ``category``/``split``
that contradicts them, instead of evaluating Books data under another name. The custom task
pins nothing: ``category`` (required) and ``split`` (default ``test``) come from
``--metadata``. Every other key (``data_dir``, ``source``, model args, ``version``...) goes
to ``dep_eval.data.loaders.load_task_dataset``, which ignores what it does not read.

The chosen split is returned under the fixed name ``eval`` (the YAMLs' ``test_split``),
because lm-eval's split name is static while the custom task's split is not; each document
still records its real split in its ``split`` field.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from dep_eval.data.loaders import HubUnreachable, load_task_dataset
from dep_eval.data.parsing import LONG_TEXT_CHARS
from dep_eval.data.records import Sample
from dep_eval.metrics import harness
from dep_eval.metrics.harness import AGGREGATIONS
from dep_eval.preflight import check_documents, check_metadata_keys, check_run
from dep_eval.prompts import MAX_DESCRIPTION_CHARS, clip_title, clipped_fields
from dep_eval.report import slices

# rouge1, rouge1_stderr, rouge1_ci_low, ..., length_ratio: the aggregations the YAMLs name
globals().update(AGGREGATIONS)

logger = logging.getLogger(__name__)

EVAL_SPLIT = "eval"
DEFAULT_SPLIT = "test"
TASK_PREFIX = "amazon_review_personalized"


def _drop_generic_metadata_hint(record: logging.LogRecord) -> bool:
    """lm-eval warns on every run of a ``custom_dataset`` task that custom kwargs can go to
    ``--metadata`` (with an unrelated ``max_seq_lengths`` example); these tasks document
    their own metadata, so the hint is dropped for them (and only them)."""
    message = record.getMessage()
    return not (message.startswith(TASK_PREFIX) and "Custom kwargs can be passed" in message)


_drop_generic_metadata_hint.dep_eval = True  # type: ignore[attr-defined]
# lm-eval imports this file once per task folder scan: add the filter once
_task_logger = logging.getLogger("lm_eval.api.task")
if not any(getattr(f, "dep_eval", False) for f in _task_logger.filters):
    _task_logger.addFilter(_drop_generic_metadata_hint)


def load_dataset(**options: Any) -> dict[str, datasets.Dataset]:
    """``custom_dataset`` of every task: ``{"eval": the documents to evaluate}``.

    Runs before any document is generated, so it also checks what scoring will need
    (WordNet, the BERTScore encoder, the output folder): see ``dep_eval.preflight``.
    """
    check_run()
    check_metadata_keys(options)  # a misspelled "split" must not evaluate the test split
    options = dict(options)
    for key, pinned_key in (("category", "task_category"), ("split", "task_split")):
        pinned = options.pop(pinned_key, None)
        if pinned is None:
            continue
        given = options.get(key)
        if given not in (None, "", pinned):
            raise ValueError(
                f"this task evaluates {key} {pinned!r}, but the run's metadata asks for "
                f"{given!r}; use amazon_review_personalized_custom to choose {key} freely"
            )
        options[key] = pinned
    split = options.get("split") or DEFAULT_SPLIT
    if not isinstance(split, str):
        raise ValueError(f"split must be one name (train, val or test), got {split!r}")
    options["split"] = split
    try:
        loaded = load_task_dataset(options)
    except HubUnreachable as exc:
        if logging.getLogger("lm_eval").isEnabledFor(logging.DEBUG):  # --verbosity DEBUG
            raise
        # One short error instead of lm-eval's chained tracebacks: nothing in them helps.
        raise SystemExit(f"dep-eval: {exc}") from None
    documents = loaded[split]
    check_documents(documents, doc_to_text)  # room for the outputs
    log_clipped_documents(documents)
    return {EVAL_SPLIT: documents}


def log_clipped_documents(documents: datasets.Dataset) -> None:
    """Say once how many documents hold a text longer than prompts show, each clipped to its
    head, never left to push the instructions out of the context. Routine (Amazon item
    titles run past 100 characters) at info level; a warning when a field is beyond any real
    review's length (``LONG_TEXT_CHARS``), such as a pasted megabyte."""
    counts: dict[str, int] = {}
    clipped = huge = 0
    for doc in documents:
        sample = Sample.from_doc(doc)
        fields = clipped_fields(sample)
        clipped += bool(fields)
        huge += bool(fields) and _longest_field(sample) > LONG_TEXT_CHARS
        for name in fields:
            counts[name] = counts.get(name, 0) + 1
    if clipped:
        logger.log(
            logging.WARNING if huge else logging.INFO,
            "%d of %d documents have a text longer than prompts show, clipped to its head "
            "(%s; caps in dep_eval/prompts.py)",
            clipped,
            len(documents),
            ", ".join(f"{name}: {count}" for name, count in sorted(counts.items())),
        )


def _longest_field(sample: Sample) -> int:
    reviews = (sample.target, *sample.profile)
    texts = [sample.item.title, sample.item.description]
    texts += [review.title for review in reviews] + [review.text for review in sample.profile]
    return max(map(len, texts))


def process_results(doc: dict[str, Any], results: Any) -> dict[str, Any]:
    """Every metric of one document (``dep_eval.metrics.harness``), plus the fields the
    slice report reads (profile size, DEP's peers: ``dep_eval.report.slices``)."""
    return {**harness.process_results(doc, results), **slices.document_fields(doc)}


def doc_to_text(doc: dict[str, Any]) -> str:
    """A plain, non-personalized prompt for models that only read the prompt text.

    This project's models build their own (personalized) prompts from the whole document
    and ignore this text; it makes the task usable with lm-eval's built-in models.
    """
    item, target = doc["item"], doc["target"]
    title = item["title"][:MAX_DESCRIPTION_CHARS]  # whole for real titles (<= 255 here)
    lines = ["Write the text of a product review.", f"Product: {title or '(untitled)'}"]
    if item.get("description"):
        lines.append(f"Description: {item['description'][:MAX_DESCRIPTION_CHARS]}")
    lines += [
        f"Rating: {float(target['rating']):g} out of 5",
        f"Review title: {clip_title(target['title'])}",
        "Review text:",
    ]
    return "\n".join(lines)


def doc_to_target(doc: dict[str, Any]) -> str:
    return str(doc["target"]["text"])
