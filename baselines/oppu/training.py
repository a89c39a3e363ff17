"""Training one user's LoRA on the frozen LLM (OPPU's per-user step).

A user's training rows are that user's own profile reviews, each as the prompt the method
would show for that past item (the Non-Perso prompt, or RAG's with the reviews before it
retrieved) followed by the user's review text. The loss is the engine's
(``TrainableEngine.target_loss``: mean cross-entropy of the review tokens and EOS), so training
and generation build identical inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Review, Sample
from dep_eval.engine import Engine, Prompt, TrainableEngine
from dep_eval.engine.adapters import new_lora
from dep_eval.io import atomic_folder
from dep_eval.train.common import linear_schedule

from .config import OppuConfig

logger = logging.getLogger(__name__)

INFO_FILE = "oppu.json"  # what the adapter was trained on and how long it took


@dataclasses.dataclass
class Example:
    prompt: Prompt
    target_ids: list[int]  # the review's tokens (clipped) + EOS


def training_reviews(sample: Sample, pool: DataPool) -> list[Review]:
    """The profile reviews a user's LoRA may learn from, oldest first.

    The pool's rule: a review whose text is some row's target text is not in the pool
    (``DataPool.from_samples``), so it is left out here too; otherwise a user's adapter
    could learn a review that is the reference of a val or test row.
    """
    kept = set(pool.reviews.get(sample.user_id, ()))
    return [review for review in sample.profile if review in kept]


def past_sample(sample: Sample, reviews: Sequence[Review], index: int, pool: DataPool) -> Sample:
    """Review ``index`` of ``reviews`` as a sample of its own: written after the ones before."""
    review = reviews[index]
    return dataclasses.replace(
        sample, profile=tuple(reviews[:index]), target=review, item=pool.item(review.asin)
    )


def target_ids(llm: Engine, prompt: Prompt, text: str, config: OppuConfig) -> list[int]:
    """Review tokens clipped to ``max_target_tokens`` and to the prompt budget, plus EOS."""
    tokenizer = llm.tokenizer
    room = config.max_prompt_tokens - len(llm.tokenize(prompt)) - 1
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ids[: config.max_target_tokens][: max(1, room)]
    return [*ids, tokenizer.eos_token_id]


def steps_for(examples: int, config: OppuConfig) -> int:
    steps = config.epochs * math.ceil(examples / config.train_batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def train_adapter(
    llm: TrainableEngine,
    examples: Sequence[Example],
    config: OppuConfig,
    seed: int,
    folder: Path,
    *,
    extra: dict | None = None,
    progress: str | None = None,
) -> dict:
    """Train a fresh LoRA on ``examples`` and write it to ``folder`` atomically.

    Returns what was recorded in the folder's ``oppu.json`` (steps, seconds, ``extra``). The
    LLM is the plain model again afterwards, whatever happens. ``progress``: the label of a
    progress bar over optimizer steps (none for a user's few steps).
    """
    torch.manual_seed(seed)  # the LoRA's A matrices (B starts at zero, as in PEFT)
    started = time.perf_counter()
    peft_model = new_lora(
        llm.model,
        r=config.r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.modules(),
        what=f"oppu: target_modules={config.target_modules}",
    )
    try:
        parameters = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        total = steps_for(len(examples), config)
        warmup = max(1, math.ceil(config.warmup_ratio * total))
        scheduler = linear_schedule(optimizer, warmup, total)  # dep_eval.train's schedule
        order = random.Random(seed)
        batches: list[list[Example]] = []
        for _ in range(config.epochs):
            shuffled = list(examples)
            order.shuffle(shuffled)
            batches += [
                shuffled[i : i + config.train_batch_size]
                for i in range(0, len(shuffled), config.train_batch_size)
            ]
        losses = []
        llm.model.train()  # LoRA dropout on
        for batch in tqdm(batches[:total], desc=progress, disable=progress is None):
            step_loss = 0.0
            for start in range(0, len(batch), config.micro_batch_size):
                micro = batch[start : start + config.micro_batch_size]
                loss = llm.target_loss([e.prompt for e in micro], [e.target_ids for e in micro])
                (loss * len(micro) / len(batch)).backward()
                step_loss += float(loss.detach()) * len(micro) / len(batch)
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(round(step_loss, 4))
        seconds = time.perf_counter() - started
        info = {
            "examples": len(examples),
            "steps": len(losses),
            "losses": losses,
            "train_seconds": round(seconds, 3),
            **(extra or {}),
        }
        with atomic_folder(folder) as staging:
            peft_model.save_pretrained(str(staging), safe_serialization=True)
            (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return info
    finally:
        llm.model.eval()
        peft_model.unload()  # the LoRA layers come out again: the plain frozen LLM
