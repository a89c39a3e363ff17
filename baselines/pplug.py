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
pplug``, the trainer DEP uses); checkpoints use DEP's safetensors + JSON format.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Sample
from dep_eval.dep.checkpoint import identity_fields, load_checkpoint
from dep_eval.dep.encoder import DEFAULT_ENCODER_DIM, DEFAULT_ENCODER_NAME
from dep_eval.dep.method import SHIPPED_CHECKPOINT as DEP_SHIPPED_CHECKPOINT
from dep_eval.dep.module import DEFAULT_LLM_HIDDEN_SIZE, DEFAULT_LLM_NAME
from dep_eval.engine import EMBEDDED_LLM, Engine, Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod, TrainingBatch
from dep_eval.methods.lm_eval_model import lm_eval_model_for
from dep_eval.prompts import MAX_DESCRIPTION_CHARS, SYSTEM, review_messages

if TYPE_CHECKING:
    from dep_eval.train.trainer import TrainConfig

logger = logging.getLogger(__name__)

SYSTEM_WITH_PERSONA = SYSTEM + (
    " The user message starts with two embedding tokens: an instruction, and a summary of "
    "this user's past reviews. Use them as hints about the user's style and preferences."
)
INSTRUCTION_INIT_TEXT = " Write the way this user writes, using their persona:"
# beside DEP's in the package (this file may live outside dep_eval/ in a source checkout)
SHIPPED_CHECKPOINT = DEP_SHIPPED_CHECKPOINT.parent / "pplug-smollm2-minilm"


@dataclass
class PPlugModuleConfig:
    encoder_name: str = DEFAULT_ENCODER_NAME
    encoder_dim: int = DEFAULT_ENCODER_DIM
    llm_name: str = DEFAULT_LLM_NAME
    llm_hidden_size: int = DEFAULT_LLM_HIDDEN_SIZE
    soft_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "instruction": "[PPLUG_INSTRUCTION]",
            "persona": "[PPLUG_PERSONA]",
        }
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPlugModuleConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown PPlugModuleConfig fields {unknown}")
        return cls(**data)


class PPlugModule(nn.Module):
    """What PPlug trains: the projector (d -> H -> H) and the instruction vector (H)."""

    checkpoint_format = "dep-eval/pplug-module"
    config_class = PPlugModuleConfig

    def __init__(self, config: PPlugModuleConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.llm_hidden_size
        self.projector = nn.Sequential(
            nn.Linear(config.encoder_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.instruction = nn.Parameter(torch.zeros(hidden))

    def forward(
        self, history: torch.Tensor, history_mask: torch.Tensor, query: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``history`` (B, N, d) past-review embeddings, ``history_mask`` (B, N) True where
        present, ``query`` (B, d) target-item embeddings -> instruction and persona (B, H)."""
        param = self.instruction
        history, query = history.to(param.dtype), query.to(param.dtype)
        scores = torch.einsum("bnd,bd->bn", history, query)
        scores = scores.masked_fill(~history_mask, float("-inf"))
        # an empty profile has no weights (softmax of all -inf is NaN): its persona is zero
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        persona = torch.einsum("bn,bnh->bh", weights, self.projector(history))
        return self.instruction.expand_as(persona), persona


def item_text(item: Item) -> str:
    """What the target item's embedding is made from (the "current input" of PPlug)."""
    return f"{item.title}\n{item.description[:MAX_DESCRIPTION_CHARS]}".strip()


@dataclasses.dataclass
class PPlugConfig(MethodConfig):
    """``--model_args`` of ``--model pplug``."""

    checkpoint: str | None = None  # default: the one shipped for the embedded SmolLM2
    encoder: str | None = None  # default: the one the checkpoint was trained with


class PPlug(PersonalizationMethod):
    name = "pplug"
    Config = PPlugConfig
    config: PPlugConfig

    def __init__(self, config: PPlugConfig, llm: Engine, module: PPlugModule | None = None):
        super().__init__(config, llm)
        self.module = self._load(config, llm) if module is None else module
        tokens = self.module.config.soft_tokens
        self.tokens = (tokens["instruction"], tokens["persona"])
        llm.add_placeholder_tokens(list(self.tokens))
        self.encoder: Any = None

    @staticmethod
    def _load(config: PPlugConfig, llm: Engine) -> PPlugModule:
        folder = config.checkpoint
        if folder is None and llm.name == EMBEDDED_LLM and SHIPPED_CHECKPOINT.is_dir():
            folder = str(SHIPPED_CHECKPOINT)
        if folder is None:
            raise ValueError(
                f"--model pplug needs a PPlug checkpoint for {llm.name}: pass --model_args "
                "checkpoint=PATH. Train one with `dep-eval train --method pplug --data-dir DIR "
                "--category CAT --output runs/NAME` (its best epoch lands in runs/NAME/best)."
            )
        return load_checkpoint(
            folder,
            encoder_name=config.encoder,
            llm_name=llm.name,
            llm_hidden_size=llm.hidden_size,
            device=llm.device,
            module_class=PPlugModule,
        )

    @classmethod
    def for_training(cls, config: TrainConfig, llm: Engine) -> PPlug:
        from dep_eval.dep.encoder import CachedEncoder

        encoder = CachedEncoder(config.encoder)
        module = PPlugModule(PPlugModuleConfig(**identity_fields(encoder, llm)))
        # start the instruction vector at a real instruction's mean token embedding
        with torch.no_grad():
            module.instruction.copy_(llm.text_embedding(INSTRUCTION_INIT_TEXT))
        method = cls(PPlugConfig(encoder=config.encoder), llm, module=module.to(llm.device))
        method.encoder = encoder
        return method

    def setup(self, pool: DataPool) -> None:
        from dep_eval.dep.encoder import CachedEncoder

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


PPlugLM = lm_eval_model_for(PPlug)
