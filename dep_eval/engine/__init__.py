"""LLM engines: the interface (``base``), the shared soft-prompt table, and two backends.

``load_engine("hf", ...)`` is the transformers engine (default), ``load_engine("vllm", ...)``
stock vLLM; ``load_trainable_engine(...)`` the engine the trainer and OPPU train through (the
transformers one). Callers use the ``Engine`` / ``TrainableEngine`` interfaces, never a
backend's class. Importing this package loads torch but neither transformers nor vLLM.
"""

from __future__ import annotations

from typing import Any

from dep_eval.engine.base import (
    Engine,
    Generation,
    GenerationSettings,
    Prompt,
    TrainableEngine,
    require_trainable,
    seed_for,
    truncate_prompt,
)
from dep_eval.engine.loading import EMBEDDED_LLM

BACKENDS = ("hf", "vllm")
HF_MODEL_ARGS = ("prefill", "decode")  # HFEngine's own --model_args (engine/hf.py)


def load_engine(backend: str = "hf", **options: Any) -> Engine:
    """An engine by name; ``options`` are that engine's constructor arguments."""
    if backend == "hf":
        from dep_eval.engine.hf import HFEngine

        return HFEngine(**options)
    if backend == "vllm":
        from dep_eval.engine.vllm import VLLMEngine

        return VLLMEngine(**options)
    raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")


def load_trainable_engine(**options: Any) -> TrainableEngine:
    """The engine a trainer runs its forward and backward passes through (transformers);
    ``options`` as for ``load_engine("hf", ...)``."""
    from dep_eval.engine.hf import HFEngine

    return HFEngine(**options)


__all__ = [
    "BACKENDS",
    "HF_MODEL_ARGS",
    "EMBEDDED_LLM",
    "Engine",
    "Generation",
    "GenerationSettings",
    "Prompt",
    "TrainableEngine",
    "load_engine",
    "load_trainable_engine",
    "require_trainable",
    "seed_for",
    "truncate_prompt",
]
