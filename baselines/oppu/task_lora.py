"""OPPU's shared task LoRA: ``dep-eval train --method oppu-base``.

The OPPU reference trains, before any user's own LoRA, one "task LoRA" on the training
queries of the other users (its ``task_LoRA.py``): the same LoRA shape and optimiser as the
users' (rank 8, alpha 8, dropout 0.05, AdamW lr 1e-4, weight decay 0.01, 10 % warm-up,
gradient norm 0.3, batches of 16), 3 epochs, no step cap. Here its rows are the train
split's: each row's prompt is the one OPPU shows at inference (Non-Perso's, or RAG's with
``with_retrieval``) and its target is the row's review text (clipped to
``max_target_tokens``) plus EOS, so the LoRA learns the task and not any user.

The output folder is a PEFT adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``, written atomically) plus ``oppu.json`` (rows, steps, losses,
seconds, what it was trained on), which ``--model oppu --model_args base_adapter=FOLDER``
folds into the LLM before the users' LoRAs.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.registry import TrainTarget

from .config import OppuConfig
from .training import Example, target_ids, train_adapter

logger = logging.getLogger(__name__)

NAME = "oppu-base"  # dep-eval train --method oppu-base; reproduce's OUTPUT/oppu-base
# task_LoRA.py's own settings where they differ from the per-user LoRA's
TASK_EPOCHS = 3
TASK_MAX_STEPS = None
# The generic `dep-eval train` options it reads (TrainConfig field -> OppuConfig field; when
# not given, the task LoRA's own defaults) and those it has no use for (refused when given)
CLI_OPTIONS = {
    "epochs": "epochs",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "max_target_tokens": "max_target_tokens",
    "micro_batch_size": "micro_batch_size",
    "max_length": "max_prompt_tokens",
}
CLI_UNUSED = (
    "encoder",
    "base_adapter",
    "grad_accum",
    "val_rows",
    "val_max_new_tokens",
    "dtype",
    "resume",
)


def task_config(**overrides: object) -> OppuConfig:
    """The task LoRA's settings: the users' LoRA settings with the reference's 3 epochs and
    no step cap, then ``overrides`` (OppuConfig fields)."""
    config = OppuConfig(**{"epochs": TASK_EPOCHS, "max_steps": TASK_MAX_STEPS, **overrides})
    config.check()
    return config


def task_rows(
    source: str, categories: Sequence[str], *, all_rows: bool, max_rows: int | None, seed: int
) -> list[tuple[Sample, DataPool]]:
    """The train-split rows the task LoRA learns from, each with its category's pool.

    A train row whose review text is also the target of a val or test row is left out (and
    counted in a warning): the task LoRA must never learn a text it will be scored against.
    """
    from dep_eval.data.loaders import load_pool, load_split
    from dep_eval.train.common import select_rows

    chosen: list[tuple[Sample, DataPool]] = []
    for category in categories:
        pool = load_pool(source, category)
        held_out = {
            row.target.text.strip()
            for split in ("val", "test")
            for row in load_split(source, category, split)
        }
        train = select_rows(load_split(source, category, "train"), all_rows)
        kept = [row for row in train if row.target.text.strip() not in held_out]
        if len(kept) < len(train):
            logger.warning(
                "oppu-base: %d %s train row(s) left out: their review text is also a val or "
                "test target",
                len(train) - len(kept),
                category,
            )
        chosen += [(row, pool) for row in kept]
    if max_rows is not None:
        random.Random(seed).shuffle(chosen)
        chosen = chosen[:max_rows]
    return chosen


def train_task_lora(
    output: str | Path,
    *,
    config: OppuConfig,
    categories: Sequence[str],
    data_dir: str | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    all_rows: bool = True,
    max_rows: int | None = None,
) -> Path:
    """Train the task LoRA on the train split of ``categories`` and write it to ``output``.

    Args:
        output: the adapter folder to write (replaced atomically if it exists).
        config: the LoRA's and prompts' settings (``task_config()``).
        categories: categories whose train split is used.
        data_dir: a local data folder (default: ``$DEP_EVAL_DATA_DIR``, else the hub).
        pretrained: the LLM (default: the embedded SmolLM2).
        device: where to train (default: what the engine picks).
        all_rows: every train row (the reference trains on every query), else one per user.
        max_rows: a seeded subset of this many rows (default: all).

    Returns:
        ``output``.
    """
    from dep_eval.data.loaders import resolve_source
    from dep_eval.engine import load_trainable_engine

    from .method import Oppu

    if config.base_adapter:
        raise ValueError("--method oppu-base trains the base adapter; it takes no base_adapter")
    source = resolve_source({"data_dir": data_dir} if data_dir else None)
    chosen = task_rows(source, categories, all_rows=all_rows, max_rows=max_rows, seed=config.seed)
    if not chosen:
        raise ValueError(
            f"oppu-base: no train rows to learn from in {', '.join(categories)} of {source} "
            f"(max_rows={max_rows}): give a category with a train split, or more --max-rows"
        )
    llm = load_trainable_engine(pretrained=pretrained, device=device, dtype="float32")
    method = Oppu(config, llm)  # its prompts, so training rows are what inference shows
    for pool in {id(pool): pool for _, pool in chosen}.values():
        method.setup(pool)
    examples = []
    for sample, pool in chosen:
        prompt = method.prompt_for(sample, pool)
        examples.append(Example(prompt, target_ids(llm, prompt, sample.target.text, config)))
    logger.info(
        "oppu-base: training the task LoRA on %d train rows of %s", len(examples), categories
    )
    folder = Path(output)
    info = train_adapter(
        llm,
        examples,
        config,
        config.seed,
        folder,
        extra={
            "kind": "oppu task LoRA",
            "llm": llm.name,
            "categories": list(categories),
            "source": source,
            "config": dataclasses.asdict(config),
        },
        progress="oppu-base: task LoRA steps",
    )
    logger.info(
        "oppu-base: %d steps in %.1f s, loss %s -> %s; use it with --model oppu "
        "--model_args base_adapter=%s",
        info["steps"],
        info["train_seconds"],
        info["losses"][0],
        info["losses"][-1],
        folder,
    )
    return folder


def train_from_cli(generic: dict[str, Any], given: frozenset[str]) -> Path:
    """``dep-eval train --method oppu-base``: ``generic`` holds the ``TrainConfig`` values,
    ``given`` the options the command line named (the others keep the task LoRA's
    defaults; ``--all-rows`` is on unless given)."""
    overrides = {field: generic[dest] for dest, field in CLI_OPTIONS.items() if dest in given} | {
        "seed": generic["seed"]
    }
    try:
        config = task_config(**overrides)
    except ValueError as error:
        raise SystemExit(f"dep-eval train --method {NAME}: {error}") from error
    return train_task_lora(
        generic["output"],
        config=config,
        categories=generic["categories"],
        data_dir=generic["data_dir"],
        pretrained=generic["pretrained"],
        device=generic["device"],
        all_rows=generic["all_rows"] if "all_rows" in given else True,
        max_rows=generic["max_rows"],
    )


TRAIN_TARGET = TrainTarget(
    NAME,
    train_from_cli,
    trains="one LoRA of the LLM on the train split, with no module and no val selection",
    unused=CLI_UNUSED,
    done_file="adapter_model.safetensors",
)
