"""The lm-eval side of the registry: a ``PersonalizedLM`` subclass per registered method.

The registry (``dep_eval.registry``) records methods and imports nothing of lm-eval; this
module, imported only where lm-eval runs, builds their lm-eval model classes:

- ``model_class(target)``: what an ``lm_eval.models`` entry point gives lm-eval. A
  ``PersonalizationMethod`` subclass (what dep-eval's entry points, and plugins', name) gets
  its ``PersonalizedLM`` subclass, built once; anything else (an lm-eval model, e.g. a
  plugin's own ``PersonalizedLM`` subclass) passes through unchanged;
- ``<Class>LM`` attributes, e.g. ``from dep_eval.lm_eval_models import DEPLM``: the model
  class of a registered method by its class name, for Python callers and tests.

The start-up hook (``dep_eval._lm_eval_hook``) registers every entry point with lm-eval
through ``model_class``, so plain ``lm_eval --model dep`` runs DEP.
"""

from __future__ import annotations

from typing import Any

from dep_eval.methods.lm_eval_model import PersonalizedLM, lm_eval_model_for


def model_class(target: Any) -> Any:
    """The lm-eval model for an entry point's ``target`` (see the module docstring)."""
    from dep_eval.methods.base import PersonalizationMethod

    if isinstance(target, type) and issubclass(target, PersonalizationMethod):
        return lm_eval_model_for(target)
    return target


def __getattr__(name: str) -> type[PersonalizedLM]:
    from dep_eval import registry

    if name.endswith("LM"):
        for spec in registry.methods().values():
            if f"{spec.method_class.__name__}LM" == name:
                return lm_eval_model_for(spec.method_class)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
