"""The public API for personalization methods, including third-party ones: import what a
method needs from here (the stable surface).

How to write, register and package a method: docs/plugins.md (one walk-through) and
examples/my_method_plugin (a tested package). This module imports torch: import it from
method code, never from a package's ``__init__`` that runs at interpreter start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Item, Review, Sample
from dep_eval.engine import Engine, GenerationSettings, Prompt
from dep_eval.methods.base import (
    CheckpointArgs,
    MethodConfig,
    PersonalizationMethod,
    Plan,
    TrainableMethod,
    TrainingBatch,
)
from dep_eval.prompts import (
    SYSTEM,
    fit_prompt,
    item_lines,
    past_review_block,
    retrieved_reviews_prompt,
    review_messages,
)
from dep_eval.registry import Sweep, TrainTarget, Variant, register_method
from dep_eval.retrieval import retrieve

if TYPE_CHECKING:
    from dep_eval.methods.lm_eval_model import PersonalizedLM, lm_eval_model_for

__all__ = [
    "SYSTEM",
    "CheckpointArgs",
    "Sweep",
    "TrainTarget",
    "Variant",
    "Engine",
    "DataPool",
    "Item",
    "MethodConfig",
    "PersonalizationMethod",
    "PersonalizedLM",
    "Plan",
    "Prompt",
    "GenerationSettings",
    "Review",
    "TrainableMethod",
    "TrainingBatch",
    "Sample",
    "fit_prompt",
    "item_lines",
    "lm_eval_model_for",
    "past_review_block",
    "register_method",
    "retrieve",
    "retrieved_reviews_prompt",
    "review_messages",
]


def __getattr__(name: str) -> object:
    """``PersonalizedLM`` and ``lm_eval_model_for`` import lm-eval: only when asked for, so
    that a plugin importing this module (every method does) stays free of it."""
    if name in {"PersonalizedLM", "lm_eval_model_for"}:
        from dep_eval.methods import lm_eval_model

        return getattr(lm_eval_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
