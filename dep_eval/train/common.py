"""What every trainer shares: the choice of training rows and the learning-rate schedule.

A neutral module (no trainer, no engine): the generic trainer (``dep_eval.train.trainer``)
and a method's own training (OPPU's users' LoRAs and its task LoRA) import it, so no method
imports the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dep_eval.data.records import Sample

if TYPE_CHECKING:
    import torch


def select_rows(samples: list[Sample], all_rows: bool) -> list[Sample]:
    """One training row per user (the longest profile), as the reference does, or all."""
    if all_rows:
        return samples
    best: dict[tuple[str, str], Sample] = {}
    for sample in samples:
        key = (sample.category, sample.user_id)
        if key not in best or len(sample.profile) > len(best[key].profile):
            best[key] = sample
    return list(best.values())


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at step ``total``.

    transformers' ``get_linear_schedule_with_warmup`` starts at lr 0 (its step 0 is wasted,
    and with 1 % warm-up of a small run that is the whole warm-up); here the first step
    already has lr / warmup, which is what the shipped checkpoints and OPPU's LoRAs used.
    """
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
