"""The public API for personalization methods, including third-party ones.

A method is a ``PersonalizationMethod`` subclass; ``register_method`` records it in
dep-eval's registry (label, order, variants), and a package declares the class as an
``lm_eval.models`` entry point::

    # my_pkg/__init__.py
    import dataclasses

    from dep_eval.api import (
        MethodConfig, PersonalizationMethod, Prompt, register_method, review_messages,
    )

    @dataclasses.dataclass
    class MyConfig(MethodConfig):
        n_recent: int = 1  # every field is a --model_args argument

    class MyMethod(PersonalizationMethod):
        name = "my_method"
        Config = MyConfig

        def build_prompt(self, sample, pool):
            recent = list(reversed(sample.profile))[: self.config.n_recent]
            return Prompt(review_messages(sample, pool, recent))

    register_method(MyMethod, label="My method")

    # pyproject.toml
    [project.entry-points."lm_eval.models"]
    my_method = "my_pkg:MyMethod"

After ``pip install``, ``lm_eval --model my_method --tasks amazon_review_personalized ...``
runs it (dep-eval's start-up hook reads the entry points; ``dep-eval lm_eval ...`` works
without the hook). A method that needs LLM calls before the final one overrides ``plan``
instead of ``build_prompt``: it yields lists of ``Prompt``s, receives their texts, and
returns the final ``Prompt``; those calls are batched across documents and cached on disk.
See docs/plugins.md and examples/my_method_plugin.

This module imports torch (lm-eval only for ``PersonalizedLM``, when asked for): import it
from method code, never from a package's ``__init__`` that runs at interpreter start-up
(``dep_eval/__init__.py`` stays light for that reason).
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
