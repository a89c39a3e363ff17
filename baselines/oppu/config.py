"""Every setting of OPPU: its ``--model_args``.

The LoRA's shape and optimiser follow the OPPU reference code (Tan et al., EMNLP 2024:
``OPPU.py``): rank 8, alpha 8, dropout 0.05 on ``q_proj`` and ``v_proj``, AdamW at lr 1e-4
with weight decay 0.01, 10 % linear warm-up then linear decay, gradient norm clipped to 0.3,
2 epochs over the user's history in batches of 16, and ``k = 1`` retrieved history entry
when retrieval is on. Two defaults differ so that a run fits a CPU: ``max_steps`` (4
optimizer steps per user at most; the reference has no cap) and ``max_target_tokens`` (a
training review is clipped to 128 tokens; the reference keeps 2,048 tokens of prompt and
review together). ``max_steps=none,max_target_tokens=none`` is the reference recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from dep_eval.methods.base import MethodConfig


@dataclass
class OppuConfig(MethodConfig):
    """``--model_args`` of ``--model oppu``."""

    with_retrieval: bool = False  # RAG's BM25-retrieved past reviews in every prompt
    k: int = 1  # retrieved reviews per prompt when with_retrieval (RAG's own default is 8)
    base_adapter: str | None = None  # a shared task LoRA folded in before the users' LoRAs
    r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    target_modules: str = "q_proj,v_proj"  # comma-separated module names
    lr: float = 1e-4
    weight_decay: float = 0.01
    epochs: int = 2
    train_batch_size: int = 16  # profile reviews per optimizer step
    micro_batch_size: int = 4  # rows per forward pass (memory only: same gradient)
    warmup_ratio: float = 0.1
    max_grad_norm: float = 0.3
    max_steps: int | None = 4  # optimizer steps per user at most (none: no cap)
    max_target_tokens: int | None = 128  # clip each training review (none: whole review)
    max_prompt_tokens: int = 3072
    seed: int = 42  # LoRA initialisation and data order (with the user and profile)

    def modules(self) -> list[str]:
        names = [name.strip() for name in self.target_modules.split(",") if name.strip()]
        if not names:
            raise ValueError("target_modules is empty: name at least one module, e.g. q_proj")
        return names

    def check(self) -> None:
        positive = {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "epochs": self.epochs,
            "train_batch_size": self.train_batch_size,
            "micro_batch_size": self.micro_batch_size,
            "max_prompt_tokens": self.max_prompt_tokens,
        }
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        if self.max_target_tokens is not None:
            positive["max_target_tokens"] = self.max_target_tokens
        if self.with_retrieval:
            positive["k"] = self.k
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"oppu: {name}={value} must be at least 1")
        if self.lr <= 0:
            raise ValueError(f"oppu: lr={self.lr} must be positive")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("oppu: lora_dropout and warmup_ratio must be in [0, 1)")
        self.modules()
