"""Every setting of DEP, in one place.

- ``DEPConfig``: what a checkpoint records (the module's shapes, the encoder and LLM it was
  trained for, its slot tokens, and the prompt it was trained with);
- ``DEPArgs``: ``--model_args`` of ``--model dep`` (inference switches and ablations);
- ``DEPTrainArgs``: what ``dep-eval train --method dep`` adds to the generic trainer options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dep_eval.encoder import DEFAULT_ENCODER_DIM, DEFAULT_ENCODER_NAME
from dep_eval.engine.loading import EMBEDDED_LLM_HIDDEN_SIZE, EMBEDDED_LLM_ID
from dep_eval.methods.base import MethodConfig


def default_soft_tokens(k: int) -> dict[str, list[str]]:
    """The reference's added tokens: K his and K diff placeholders and four markers."""
    return {
        "his": [f"[HIS_TOKEN_{i}]" for i in range(k)],
        "diff": [f"[DIFF_TOKEN_{i}]" for i in range(k)],
        "markers": [
            "<his_token_start>",
            "<his_token_end>",
            "<diff_token_start>",
            "<diff_token_end>",
        ],
    }


@dataclass
class DEPConfig:
    encoder_name: str = DEFAULT_ENCODER_NAME
    encoder_dim: int = DEFAULT_ENCODER_DIM  # d (reference: bge-m3, 1024)
    sae_dim: int = 512  # h
    llm_name: str = EMBEDDED_LLM_ID
    llm_hidden_size: int = EMBEDDED_LLM_HIDDEN_SIZE  # H
    k: int = 8  # history slots
    rho: float = 0.05  # SAE sparsity target
    recon_weight: float = 100.0  # step 9: 100 * (recon + 1e-3 * KL)
    kl_weight: float = 1e-3
    align_slots: bool = True  # see embeddings.py; recorded so inference matches training
    cold_start: str = "his_only"
    weighting: str = "reference"
    soft_tokens: dict[str, list[str]] = field(default_factory=dict)
    # the prompt the module was trained with (k, with_text, align_slots, system text version):
    # inference takes it as its defaults. Empty for checkpoints of format version 1.
    trained_prompt: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.soft_tokens:
            self.soft_tokens = default_soft_tokens(self.k)
        for name, value in (
            ("encoder_dim", self.encoder_dim),
            ("sae_dim", self.sae_dim),
            ("llm_hidden_size", self.llm_hidden_size),
        ):
            if int(value) <= 0:
                raise ValueError(f"DEPConfig.{name} must be positive, got {value}")
        if not 0.0 < self.rho < 1.0:
            raise ValueError(f"DEPConfig.rho must be in (0, 1), got {self.rho}")
        if (
            len(self.soft_tokens.get("his", ())) != self.k
            or len(self.soft_tokens.get("diff", ())) != self.k
        ):
            raise ValueError(
                f"DEPConfig.soft_tokens must name {self.k} his and {self.k} diff tokens"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DEPConfig:
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DEPConfig fields {unknown}")
        return cls(**data)


@dataclass
class DEPArgs(MethodConfig):
    """``--model_args`` of ``--model dep`` (the checkpoint's own config holds the rest).

    ``k``, ``with_text``, ``with_items`` and ``align_slots`` left at None take the values the
    checkpoint was trained with (``DEPConfig.trained_prompt``), else K, true, true and true.
    """

    checkpoint: str | None = None
    encoder: str | None = None  # default: the one the checkpoint was trained with
    k: int | None = None  # past reviews with slots, 0..K of the checkpoint; 0 = non-personalized
    use_his: bool = True
    use_diff: bool = True
    with_text: bool | None = None  # past review texts in the prompt, or only their slots
    with_items: bool | None = None  # past reviews' product titles/descriptions in the prompt
    align_slots: bool | None = None  # False reproduces the reference's slot/text mismatch
    max_prompt_tokens: int = 3072
    allow_untrained: bool = False  # tests only: a randomly initialised DEP module


@dataclass
class DEPTrainArgs(MethodConfig):
    """``dep-eval train --method dep`` options beyond the generic ones."""

    k: int = field(default=8, metadata={"help": "history slots (K)"})
    sae_dim: int = field(default=512, metadata={"help": "SAE width (h)"})
    with_text: bool = field(
        default=True,
        metadata={"help": "past review texts in the prompt, not only their slots", "flag": "text"},
    )
    with_items: bool = field(
        default=True,
        metadata={
            "help": "past reviews' product titles and descriptions in the prompt",
            "flag": "items",
        },
    )
    align_slots: bool = field(
        default=True,
        metadata={"help": "slot i carries the review shown as text i (false: the reference's)"},
    )
    lora_r: int = field(
        default=0,
        metadata={
            "help": "also train a LoRA of this rank on the LLM (q_proj, v_proj; alpha 2R; no "
            "dropout), saved in the checkpoint's adapter/ and merged into the LLM at inference "
            "(0: the LLM stays frozen)"
        },
    )
