"""Start-up hook that lets plain ``lm_eval`` see plugins' models and tasks.

lm-eval 0.4.13 has no plugin discovery. Upstream work adds the entry-point groups
``lm_eval.models`` and ``lm_eval.tasks``; this package (and any third-party method built on
it) declares its models and tasks there. Until lm-eval reads those groups itself, this
module, imported from ``dep_eval_lm_eval.pth`` at interpreter start-up, does it for lm-eval:

- after ``lm_eval.models`` is imported (so that lm-eval's built-in models are registered
  first), every ``lm_eval.models`` entry point is added to lm-eval's model registry, lazily;
- ``TaskManager`` gets every ``lm_eval.tasks`` entry point's folder appended to its
  ``include_path``.

It costs one ``sys.meta_path`` entry and imports nothing until lm-eval is imported. It stands
down by itself when the installed lm-eval already mentions an entry-point group in its
source, and is switched off with ``DEP_EVAL_LM_EVAL_HOOK=0``. ``dep-eval lm_eval ...`` is
the route that works without it.
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


def register_models(models_module: object) -> list[str]:
    """Add every ``lm_eval.models`` entry point to lm-eval's model registry."""
    from lm_eval.api import registry

    if _native_support(registry, MODELS_GROUP) or _native_support(models_module, MODELS_GROUP):
        return []
    added = []
    for entry_point in importlib.metadata.entry_points(group=MODELS_GROUP):
        if entry_point.name not in registry.model_registry:
            registry.model_registry.register(entry_point.name, target=entry_point)
            added.append(entry_point.name)
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

    def __init__(self, *args, include_path=None, **kwargs):  # noqa: ANN001, N807
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

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001
            original_exec(module)
            try:
                callback(module)
            except Exception:  # a broken plugin must never break lm-eval itself
                logger.exception("dep-eval's lm-eval hook failed in %s", fullname)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    if os.environ.get(SWITCH, "1").lower() in {"0", "false", "no", "off"}:
        return
    if any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        return
    callbacks = {"lm_eval.models": register_models, "lm_eval.tasks.manager": patch_task_manager}
    already = [name for name in callbacks if name in sys.modules]
    for name in already:  # lm_eval was imported before this hook (unusual): patch now
        callbacks.pop(name)(sys.modules[name])
    if callbacks:
        sys.meta_path.insert(0, _AfterImport(callbacks))


install()
