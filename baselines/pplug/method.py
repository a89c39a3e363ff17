"""PPlug (Liu et al. 2024): one persona vector plugged into a frozen LLM as soft tokens.

Per document:

1. the user's past reviews and the target item are embedded by the encoder stage DEP uses
   (``CachedEncoder``, cached on disk);
2. *attention weights* = softmax over the past reviews of their similarity (dot product of
   the L2-normalised embeddings) to the target item's embedding;
3. *persona vector* = the weighted sum of the past reviews' embeddings, each mapped into the
   LLM's input space by the *projector* (an MLP);
4. a learned *instruction vector* joins it: the two are the input embeddings of two soft
   tokens at the start of the Non-Perso prompt.

Only the projector and the instruction vector are trained (``dep-eval train --method
pplug``, the trainer DEP uses); checkpoints use the shared format of ``dep_eval.checkpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from dep_eval.checkpoint import identity_fields
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Sample
from dep_eval.encoder import CachedEncoder
from dep_eval.engine import Engine, Prompt
from dep_eval.methods.base import MethodConfig, TrainableMethod, TrainingBatch
from dep_eval.prompts import MAX_DESCRIPTION_CHARS, SYSTEM, review_messages

from .config import PPlugConfig, PPlugModuleConfig
from .module import PPlugModule

logger = logging.getLogger(__name__)

SYSTEM_WITH_PERSONA = SYSTEM + (
    " The user message starts with two embedding tokens: an instruction, and a summary of "
    "this user's past reviews. Use them as hints about the user's style and preferences."
)
INSTRUCTION_INIT_TEXT = " Write the way this user writes, using their persona:"
SHIPPED_CHECKPOINT = "pplug-smollm2-minilm"  # under dep_eval/checkpoints/
SYSTEM_VERSION = 1  # recorded in checkpoints; bump when SYSTEM_WITH_PERSONA changes


def item_text(item: Item) -> str:
    """What the target item's embedding is made from (the "current input" of PPlug)."""
    return f"{item.title}\n{item.description[:MAX_DESCRIPTION_CHARS]}".strip()


class PPlug(TrainableMethod):
    name = "pplug"
    Config = PPlugConfig
    config: PPlugConfig
    module_class = PPlugModule
    shipped_checkpoint = SHIPPED_CHECKPOINT

    def __init__(self, config: PPlugConfig, llm: Engine, **kwargs: Any) -> None:
        """``kwargs``: ``module=`` (training) or ``checkpoint=`` (``TrainableMethod``)."""
        super().__init__(config, llm, **kwargs)
        trained = self.module.config.trained_prompt.get("system", SYSTEM_VERSION)
        if trained != SYSTEM_VERSION:
            logger.warning(
                "this checkpoint was trained with system text version %s; this dep-eval "
                "writes version %s",
                trained,
                SYSTEM_VERSION,
            )
        tokens = self.module.config.soft_tokens
        self.tokens = (tokens["instruction"], tokens["persona"])
        llm.add_placeholder_tokens(list(self.tokens))
        self.encoder: Any = None

    @classmethod
    def for_training(
        cls, args: MethodConfig, llm: Engine, *, encoder: str | None, max_prompt_tokens: int
    ) -> PPlug:
        cached = CachedEncoder(encoder)
        module_config = PPlugModuleConfig(
            **identity_fields(cached, llm), trained_prompt={"system": SYSTEM_VERSION}
        )
        module = PPlugModule(module_config)
        # start the instruction vector at a real instruction's mean token embedding
        with torch.no_grad():
            module.instruction.copy_(llm.text_embedding(INSTRUCTION_INIT_TEXT))
        method = cls(PPlugConfig(encoder=encoder), llm, module=module.to(llm.device))
        method.encoder = cached
        return method

    def setup(self, pool: DataPool) -> None:
        if self.encoder is None:
            self.encoder = CachedEncoder(self.config.encoder or self.module.config.encoder_name)
        # one batch now, so that documents later only read the encoder's cache
        texts = [review.text for reviews in pool.reviews.values() for review in reviews]
        self.encoder.encode(texts + [item_text(item) for item in pool.items.values()])

    # -- steps 1-4 ------------------------------------------------------------------------

    def vectors(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Instruction and persona vectors (B, H) of ``samples``."""
        device = self.module.instruction.device
        counts = [len(sample.profile) for sample in samples]
        width = max(1, *counts)
        flat = self.encoder.encode_torch(
            [review.text for sample in samples for review in sample.profile]
        )
        history = torch.zeros(len(samples), width, flat.shape[1])
        mask = torch.zeros(len(samples), width, dtype=torch.bool)
        start = 0
        for row, count in enumerate(counts):
            history[row, :count] = flat[start : start + count]
            mask[row, :count] = True
            start += count
        query = self.encoder.encode_torch([item_text(sample.item) for sample in samples])
        return self.module(history.to(device), mask.to(device), query.to(device))

    def prompts(
        self,
        samples: Sequence[Sample],
        pool: DataPool,
        instruction: torch.Tensor,
        persona: torch.Tensor,
    ) -> list[Prompt]:
        prompts = []
        for row, sample in enumerate(samples):
            messages = review_messages(sample, pool, system=SYSTEM_WITH_PERSONA)
            messages[-1]["content"] = "".join(self.tokens) + "\n\n" + messages[-1]["content"]
            prompts.append(Prompt(messages, torch.stack([instruction[row], persona[row]])))
        return prompts

    def training_batch(self, samples: Sequence[Sample], pool: DataPool) -> TrainingBatch:
        instruction, persona = self.vectors(samples)
        return TrainingBatch(prompts=self.prompts(samples, pool, instruction, persona))

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        with torch.no_grad():
            instruction, persona = self.vectors([sample])
        return self.prompts([sample], pool, instruction, persona)[0]
