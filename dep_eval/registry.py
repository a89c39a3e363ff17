"""The one registry of personalization methods.

Each method registers once, beside its code::

    NonPersoLM = register_method(NonPerso, label="Non-Perso")

which records it here and returns the lm-eval model class that the package's
``lm_eval.models`` entry point names. The trainer (trainable methods), the leaderboard
(labels, row order), ``reproduce`` (what to run) and the plugin API all read this registry;
a third-party plugin uses the same call. ``methods()`` loads every ``lm_eval.models`` entry
point first, so the registry is complete whichever module asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dep_eval.methods.base import MethodConfig, PersonalizationMethod
    from dep_eval.methods.lm_eval_model import PersonalizedLM

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lm_eval.models"


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the --model name
    method_class: type[PersonalizationMethod]
    label: str  # how tables and plots name it
    trainable: bool  # `dep-eval train --method NAME` works
    builtin: bool  # shipped with dep-eval (run by `dep-eval reproduce`)
    order: int  # rows of tables and runs of `reproduce` go by it, lowest first

    @property
    def config_class(self) -> type[MethodConfig]:
        return self.method_class.Config


_METHODS: dict[str, MethodSpec] = {}
_entry_points_loaded = False


def register_method(
    method_class: type[PersonalizationMethod], *, label: str | None = None, order: int = 1000
) -> type[PersonalizedLM]:
    """Record ``method_class`` under its ``name`` and return its lm-eval model class.

    Args:
        method_class: a ``PersonalizationMethod`` subclass with ``name`` and ``Config``; it
            is trainable when it also subclasses ``TrainableMethod``.
        label: the name tables and plots show (default: ``method_class.name``).
        order: where its rows go in tables, lowest first (built-ins use 0-99; the default
            puts a plugin after them).

    Returns:
        The ``PersonalizedLM`` subclass to expose as an ``lm_eval.models`` entry point.
    """
    from dep_eval.methods.base import TrainableMethod
    from dep_eval.methods.lm_eval_model import lm_eval_model_for

    name = method_class.name
    known = _METHODS.get(name)
    if known is not None and known.method_class is not method_class:
        raise ValueError(
            f"method name {name!r} is taken by {known.method_class.__module__}."
            f"{known.method_class.__qualname__}; pick another name for "
            f"{method_class.__module__}.{method_class.__qualname__}"
        )
    _METHODS[name] = MethodSpec(
        name=name,
        method_class=method_class,
        label=label or name,
        trainable=issubclass(method_class, TrainableMethod),
        builtin=method_class.__module__.startswith("dep_eval."),
        order=order,
    )
    return lm_eval_model_for(method_class)


def methods() -> dict[str, MethodSpec]:
    """Every method of every installed package, by ``order`` (then name)."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            if point.value.startswith("dep_eval.") or point.name not in _METHODS:
                try:
                    point.load()
                except Exception as error:  # a broken plugin must not break the others
                    logger.warning("lm_eval.models entry point %s failed: %s", point.name, error)
    return dict(sorted(_METHODS.items(), key=lambda item: (item[1].order, item[0])))


def method(name: str) -> MethodSpec:
    found = methods()
    if name not in found:
        raise ValueError(f"no method {name!r}; registered methods: {', '.join(found)}")
    return found[name]


def label(name: str) -> str:
    """The display label of a method, or ``name`` itself for one not installed here."""
    spec = methods().get(name.lower())
    return spec.label if spec else name
