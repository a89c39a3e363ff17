"""The one registry of personalization methods.

Each method registers once, beside its code::

    register_method(NonPerso, label="Non-Perso", order=0)

which records the method here (its name, class, config class, label, order and variants)
and returns the class unchanged: nothing lm-eval-specific is built, so importing a method
(or drawing a table) never imports lm-eval. The lm-eval model class of a method is built
where lm-eval is used (``dep_eval.lm_eval_models``), from the package's ``lm_eval.models``
entry points, which name the method classes. The trainer (trainable methods), the
leaderboard (labels, row order), ``reproduce`` (what to run, variants, sweeps), the plots
(sweep axes) and the plugin API all read this registry; a third-party plugin uses the same
call. ``methods()`` loads every ``lm_eval.models`` entry point first, so the registry is
complete whichever module asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dep_eval.methods.base import MethodConfig, PersonalizationMethod

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "lm_eval.models"


@dataclass(frozen=True)
class Variant:
    """A named run of a method with other ``--model_args``: an ablation or a variant row.

    ``model_args`` may hold ``{NAME}``, NAME a ``TrainTarget`` of the method: the folder
    ``dep-eval reproduce`` trains it into first (``OUTPUT/NAME``).
    """

    name: str  # the run's name (its output folder and leaderboard row)
    model_args: str  # e.g. "use_diff=false"
    ablation: bool = False  # ablations run after every method's variants (reproduce's order)


@dataclass(frozen=True)
class Sweep:
    """One argument a method's runs vary over, with its own table and figure (DEP's K)."""

    arg: str  # the --model_args name, e.g. "k"
    values: tuple[int, ...]
    symbol: str  # how axes and titles name it, e.g. "K"
    axis_label: str  # e.g. "K (history items)"

    def runs(self, method: str) -> list[tuple[str, str]]:
        """(run name, model_args) of each value: ``dep_k0``, ``k=0``, ..."""
        return [(f"{method}_{self.arg}{value}", f"{self.arg}={value}") for value in self.values]


@dataclass(frozen=True)
class TrainTarget:
    """What ``dep-eval train --method NAME`` trains for a method besides its module (OPPU's
    shared task LoRA, ``oppu-base``)."""

    name: str  # the --method value, and the run folder reproduce trains it into
    # (generic TrainConfig values, names of the options given on the command line) -> the
    # folder written; a ValueError is a usage error
    train: Callable[[dict[str, Any], frozenset[str]], Path]
    trains: str = "what its method declares"  # ends "--method NAME has no use for X: it trains"
    unused: tuple[str, ...] = ()  # generic options it has no use for: refused when given
    done_file: str = ""  # the file of a finished folder (reproduce trains it when missing)


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the --model name
    method_class: type[PersonalizationMethod]
    config_class: type[MethodConfig]
    label: str  # how tables and plots name it
    order: int  # rows of tables and runs of `reproduce` go by it, lowest first
    variants: tuple[Variant, ...] = ()  # extra runs `dep-eval reproduce` makes of it
    sweep: Sweep | None = None  # `dep-eval reproduce --k-ablation` and its figure
    train_targets: tuple[TrainTarget, ...] = ()  # extra `dep-eval train --method` values
    trainable: bool = False  # `dep-eval train --method NAME` works
    builtin: bool = False  # shipped with dep-eval (run by `dep-eval reproduce`)


_METHODS: dict[str, MethodSpec] = {}
_entry_points_loaded = False


def register_method(
    method_class: type[PersonalizationMethod],
    *,
    label: str | None = None,
    order: int = 1000,
    variants: tuple[Variant, ...] = (),
    sweep: Sweep | None = None,
    train_targets: tuple[TrainTarget, ...] = (),
) -> type[PersonalizationMethod]:
    """Record ``method_class`` under its ``name``; returns it unchanged.

    Args:
        method_class: a ``PersonalizationMethod`` subclass with ``name`` and ``Config``; it
            is trainable when it also subclasses ``TrainableMethod``.
        label: the name tables and plots show (default: ``method_class.name``).
        order: where its rows go in tables, lowest first (built-ins use 0-99; the default
            puts a plugin after them).
        variants: named runs with other ``--model_args`` that ``dep-eval reproduce`` makes
            (a plugin's are run only with ``--runs``).
        sweep: an argument whose values ``dep-eval reproduce --k-ablation`` runs, tabulates
            and plots (DEP's K).
        train_targets: what ``dep-eval train --method TARGET`` trains for it besides a
            module (OPPU's task LoRA).

    Returns:
        ``method_class``, so that the call can also be a decorator's.
    """
    from dep_eval.methods.base import TrainableMethod

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
        config_class=method_class.Config,
        label=label or name,
        order=order,
        variants=tuple(variants),
        sweep=sweep,
        train_targets=tuple(train_targets),
        trainable=issubclass(method_class, TrainableMethod),
        builtin=method_class.__module__.startswith("dep_eval."),
    )
    return method_class


def _load_entry_point(point: Any) -> None:
    """Import an ``lm_eval.models`` entry point; one naming an unregistered method class is
    registered with the defaults (a plugin may skip ``register_method``)."""
    target = point.load()
    if isinstance(target, type) and hasattr(target, "plan") and hasattr(target, "Config"):
        from dep_eval.methods.base import PersonalizationMethod

        if issubclass(target, PersonalizationMethod) and target.name not in _METHODS:
            register_method(target)


def methods() -> dict[str, MethodSpec]:
    """Every method of every installed package, by ``order`` (then name)."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            if point.value.startswith("dep_eval.") or point.name not in _METHODS:
                try:
                    _load_entry_point(point)
                except Exception as error:  # a broken plugin must not break the others
                    logger.warning("lm_eval.models entry point %s failed: %s", point.name, error)
    return dict(sorted(_METHODS.items(), key=lambda item: (item[1].order, item[0])))


def train_targets() -> dict[str, TrainTarget]:
    """Every ``TrainTarget`` of every method, by name."""
    return {target.name: target for spec in methods().values() for target in spec.train_targets}


def method(name: str) -> MethodSpec:
    found = methods()
    if name not in found:
        raise ValueError(f"no method {name!r}; registered methods: {', '.join(found)}")
    return found[name]


def label(name: str) -> str:
    """The display label of a method, or ``name`` itself for one not installed here."""
    spec = methods().get(name.lower())
    return spec.label if spec else name
