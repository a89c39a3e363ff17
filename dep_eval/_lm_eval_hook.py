"""Start-up hook that lets plain ``lm_eval`` see plugins' models and tasks.

lm-eval 0.4.13 has no plugin discovery. Upstream work adds the entry-point groups
``lm_eval.models`` and ``lm_eval.tasks``; this package (and any third-party method built on
it) declares its models and tasks there. Until lm-eval reads those groups itself, this
module, imported from ``dep_eval_lm_eval.pth`` at interpreter start-up, does it for lm-eval:

- after ``lm_eval.models`` is imported (so that lm-eval's built-in models are registered
  first), every ``lm_eval.models`` entry point is added to lm-eval's model registry, lazily
  and adapted: one that names a dep-eval method class (as dep-eval's own and its plugins'
  do) gives lm-eval that method's ``PersonalizedLM`` subclass
  (``dep_eval.lm_eval_models.model_class``); an lm-eval model passes through unchanged;
- ``TaskManager`` gets every ``lm_eval.tasks`` entry point's folder appended to its
  ``include_path``.

It costs one ``sys.meta_path`` entry and imports nothing until lm-eval is imported. Where the
installed lm-eval reads an entry-point group itself, the hook leaves the task folders alone
and only swaps lm-eval's lazy model entries for the adapting ones (a method class is no
lm-eval model). ``DEP_EVAL_LM_EVAL_HOOK=0`` (or false, no) switches it off;
``dep-eval lm_eval ...`` is the route that works without it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MODELS_GROUP = "lm_eval.models"
TASKS_GROUP = "lm_eval.tasks"
SWITCH = "DEP_EVAL_LM_EVAL_HOOK"


def _native_support(module: object, group: str) -> bool:
    """True when lm-eval itself reads ``group`` (then the hook must not register twice).

    The group names are also module names, so look for an ``entry_points(...)`` call that
    names the group, not for the bare string.
    """
    source = getattr(module, "__file__", None)
    try:
        text = Path(source).read_text(encoding="utf-8") if source else ""
    except OSError:
        return False
    return re.search(r"entry_points\([^)]*[\"']" + re.escape(group) + r"[\"']", text) is not None


class AdaptedEntryPoint(importlib.metadata.EntryPoint):
    """An ``lm_eval.models`` entry point whose ``load`` gives lm-eval a model class: a
    dep-eval method class becomes its ``PersonalizedLM`` subclass. It equals the plain entry
    point (same name, value, group), so it may replace lm-eval's own lazy entry for it."""

    def load(self) -> object:
        from dep_eval.lm_eval_models import model_class

        return model_class(super().load())

    def __eq__(self, other: object) -> bool:
        # EntryPoint.__eq__ calls other._key(): comparing against a model class lm-eval has
        # already loaded under this name would raise AttributeError instead of "not equal"
        if not isinstance(other, importlib.metadata.EntryPoint):
            return NotImplemented
        return super().__eq__(other)

    __hash__ = importlib.metadata.EntryPoint.__hash__


def register_models(models_module: object) -> list[str]:
    """Add every ``lm_eval.models`` entry point to lm-eval's model registry, adapted.

    A name lm-eval already holds as a loaded model (its own ``hf``, say) is left alone.
    """
    from lm_eval.api import registry

    added = []
    for point in importlib.metadata.entry_points(group=MODELS_GROUP):
        adapted = AdaptedEntryPoint(point.name, point.value, point.group)
        try:  # equal to a lazy entry lm-eval made of the same entry point: replaces it
            registry.model_registry.register(point.name, target=adapted)
        except ValueError:
            continue
        added.append(point.name)
    return added


def task_folders() -> list[str]:
    """Folders of every ``lm_eval.tasks`` entry point (a value names a package)."""
    folders = []
    for entry_point in importlib.metadata.entry_points(group=TASKS_GROUP):
        spec = importlib.util.find_spec(entry_point.value)
        if spec is None or not spec.submodule_search_locations:
            logger.warning(
                "lm_eval.tasks entry point %s: no package %s", entry_point.name, entry_point.value
            )
            continue
        folders.extend(spec.submodule_search_locations)
    return folders


def patch_task_manager(manager_module: object) -> None:
    """Make every new ``TaskManager`` also index the plugins' task folders."""
    task_manager = manager_module.TaskManager  # type: ignore[attr-defined]
    original_init = task_manager.__init__
    if _native_support(manager_module, TASKS_GROUP) or getattr(
        original_init, "_dep_eval_patched", False
    ):
        return

    def __init__(self, *args, include_path=None, **kwargs):
        paths = (
            []
            if include_path is None
            else (list(include_path) if isinstance(include_path, (list, tuple)) else [include_path])
        )
        paths += [folder for folder in task_folders() if folder not in map(str, paths)]
        original_init(self, *args, include_path=paths or None, **kwargs)

    __init__._dep_eval_patched = True  # type: ignore[attr-defined]
    task_manager.__init__ = __init__


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback right after a named module has executed."""

    def __init__(self, callbacks: dict[str, Callable[[object], object]]) -> None:
        self.callbacks = callbacks

    def find_spec(self, fullname, path, target=None):
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            try:
                callback(module)
            except Exception:  # a broken plugin must never break lm-eval itself
                logger.exception("dep-eval's lm-eval hook failed in %s", fullname)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    from dep_eval.model_args import to_bool

    try:
        if not to_bool(SWITCH, os.environ.get(SWITCH, "1")):
            return
    except ValueError as error:  # at interpreter start-up: say so, and stay on
        logger.warning("%s; the lm-eval hook stays on", error)
    if any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        return
    callbacks = {"lm_eval.models": register_models, "lm_eval.tasks.manager": patch_task_manager}
    already = [name for name in callbacks if name in sys.modules]
    for name in already:  # lm_eval was imported before this hook (unusual): patch now
        callbacks.pop(name)(sys.modules[name])
    if callbacks:
        sys.meta_path.insert(0, _AfterImport(callbacks))


install()
