"""LLM engines: the interface (``base``), the shared soft-prompt table, and two backends.

``load_engine("hf", ...)`` is the transformers engine (default; also what the trainer uses),
``load_engine("vllm", ...)`` stock vLLM. Importing this package loads torch but neither
transformers nor vLLM.
"""

from __future__ import annotations

from typing import Any

from dep_eval.engine.base import Engine, Generation, GenerationSettings, Prompt, seed_for
from dep_eval.engine.loading import EMBEDDED_LLM

BACKENDS = ("hf", "vllm")


def load_engine(backend: str = "hf", **options: Any) -> Engine:
    """An engine by name; ``options`` are that engine's constructor arguments."""
    if backend == "hf":
        from dep_eval.engine.hf import HFEngine

        return HFEngine(**options)
    if backend == "vllm":
        from dep_eval.engine.vllm import VLLMEngine

        return VLLMEngine(**options)
    raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "EMBEDDED_LLM",
    "Engine",
    "Generation",
    "GenerationSettings",
    "Prompt",
    "load_engine",
    "seed_for",
]
