"""Every setting of DEP, in one place.

- ``DEPConfig``: what a checkpoint records (the module's shapes, the encoder and LLM it was
  trained for, its slot tokens, and the prompt it was trained with);
- ``DEPArgs``: ``--model_args`` of ``--model dep`` (inference switches and ablations);
- ``DEPTrainArgs``: what ``dep-eval train --method dep`` adds to the generic trainer options.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dep_eval.checkpoint import (
    MAX_K,
    MAX_WIDTH,
    mapping,
    real_number,
    text,
    true_or_false,
    whole_number,
)
from dep_eval.methods.base import CheckpointArgs, MethodConfig
from dep_eval.module_config import ModuleConfig


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


COLD_STARTS = ("his_only", "empty")  # see dep_eval.dep.embeddings
WEIGHTINGS = ("reference", "uniform")
TRAINED_PROMPT_KEYS = ("k", "with_text", "with_items", "align_slots", "system")


@dataclass
class DEPConfig(ModuleConfig):
    """The module's shapes and slot tokens, beside ``ModuleConfig``'s encoder, LLM and
    training prompt (k, with_text, with_items, align_slots, system text version)."""

    TRAINED_PROMPT_KEYS = TRAINED_PROMPT_KEYS

    sae_dim: int = 512  # h
    k: int = 8  # history slots
    rho: float = 0.05  # SAE sparsity target
    recon_weight: float = 100.0  # step 9: 100 * (recon + 1e-3 * KL)
    kl_weight: float = 1e-3
    align_slots: bool = True  # see embeddings.py; recorded so inference matches training
    cold_start: str = "his_only"
    weighting: str = "reference"
    soft_tokens: dict[str, list[str]] = field(default_factory=dict)

    def check(self) -> None:
        # Types and bounds first, before anything is sized by them (k=10**9 would build
        # two billion token names, sae_dim=10**9 a matrix of gigabytes).
        self.k = whole_number("k", self.k, 0, MAX_K)
        whole_number("sae_dim", self.sae_dim, 1, MAX_WIDTH)
        if not 0.0 < real_number("rho", self.rho, 0.0, 1.0) < 1.0:
            raise ValueError(f"field 'rho' must be in (0, 1), got {self.rho}")
        real_number("recon_weight", self.recon_weight, 0.0)
        real_number("kl_weight", self.kl_weight, 0.0)
        true_or_false("align_slots", self.align_slots)
        text("cold_start", self.cold_start, COLD_STARTS)
        text("weighting", self.weighting, WEIGHTINGS)
        if not self.soft_tokens:
            self.soft_tokens = default_soft_tokens(self.k)
        self._check_soft_tokens()
        self._check_trained_prompt()

    def _check_soft_tokens(self) -> None:
        tokens = mapping("soft_tokens", self.soft_tokens, ("his", "diff", "markers"))
        for name, count in (("his", self.k), ("diff", self.k), ("markers", 4)):
            names = tokens.get(name)
            if (
                not isinstance(names, list)
                or len(names) != count
                or not all(isinstance(n, str) and n for n in names)
            ):
                raise ValueError(
                    f"field 'soft_tokens.{name}' must list {count} token names (k={self.k}: "
                    f"the soft_tokens must name {self.k} his and {self.k} diff tokens and 4 "
                    f"markers), got {names!r}"
                )

    def _check_trained_prompt(self) -> None:
        prompt = mapping("trained_prompt", self.trained_prompt, TRAINED_PROMPT_KEYS)
        if "k" in prompt:
            whole_number("trained_prompt.k", prompt["k"], 0, self.k)
        for name in ("with_text", "with_items", "align_slots"):
            if name in prompt:
                true_or_false(f"trained_prompt.{name}", prompt[name])


@dataclass
class DEPArgs(CheckpointArgs):
    """``--model_args`` of ``--model dep`` (the checkpoint's own config holds the rest).

    ``k``, ``with_text``, ``with_items`` and ``align_slots`` left at None take the values the
    checkpoint was trained with (``DEPConfig.trained_prompt``), else K, true, true and true.
    """

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
