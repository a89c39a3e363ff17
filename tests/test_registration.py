"""Plain ``lm_eval`` sees dep-eval's models and tasks; the hook can be switched off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = ("nonperso", "rag", "pag", "dpl", "pplug", "oppu", "dep")
PROBE = (
    "import lm_eval.models\n"
    "from lm_eval.api.registry import model_registry\n"
    f"print(sorted(n for n in model_registry if n in {{'hf', *{MODELS!r}}}))\n"
)


def python(code: str, tmp_path: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return result.stdout.strip()


def test_models_registered_beside_the_built_in_ones(tmp_path: Path) -> None:
    assert python(PROBE, tmp_path) == str(sorted(["hf", *MODELS]))


def test_hook_switched_off_by_environment_variable(tmp_path: Path) -> None:
    assert python(PROBE, tmp_path, DEP_EVAL_LM_EVAL_HOOK="0") == "['hf']"


def test_hook_stands_down_when_lm_eval_reads_entry_points_itself(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dep_eval._lm_eval_hook import _native_support

    native = tmp_path / "registry.py"
    native.write_text('for ep in entry_points(group="lm_eval.models"): ...\n')
    mentions = tmp_path / "other.py"
    mentions.write_text('"""see lm_eval.models.huggingface"""\n')
    assert _native_support(SimpleNamespace(__file__=str(native)), "lm_eval.models")
    assert not _native_support(SimpleNamespace(__file__=str(mentions)), "lm_eval.models")


def test_packaged_without_generic_top_level_names(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "print(u.find_spec('tasks'), u.find_spec('baselines'), "
        "u.find_spec('dep_eval.tasks') is not None, u.find_spec('dep_eval.baselines') is not None)"
    )
    assert python(code, tmp_path) == "None None True True"


@pytest.mark.parametrize("hook", ["1", "0"])
def test_tasks_listed_by_lm_eval_ls(tmp_path: Path, hook: str) -> None:
    # with the hook off, the dep-eval wrapper is the route that always works
    command = ["lm_eval", "ls", "tasks"] if hook == "1" else ["dep-eval", "lm_eval", "ls", "tasks"]
    executable = shutil.which(command[0], path=str(Path(sys.executable).parent))
    assert executable, f"{command[0]} is not installed beside {sys.executable}"
    result = subprocess.run(
        [executable, *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "DEP_EVAL_LM_EVAL_HOOK": hook},
        check=True,
    )
    for task in (
        "amazon_review_personalized",
        "amazon_review_personalized_books",
        "amazon_review_personalized_movies_and_tv_val",
        "amazon_review_personalized_custom",
    ):
        assert task in result.stdout


def test_the_registry_and_pyproject_entry_points_agree() -> None:
    import tomllib

    from dep_eval import registry

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"]["lm_eval.models"]
    builtin = {name: spec for name, spec in registry.methods().items() if spec.builtin}
    assert set(declared) == set(builtin)
    for name, target in declared.items():
        module, _, attribute = target.partition(":")
        # the entry point names the lm-eval model of exactly the registered method
        import importlib

        model = getattr(importlib.import_module(module), attribute)
        assert model.method_class is builtin[name].method_class
    assert {n for n, s in builtin.items() if s.trainable} == {"dep", "pplug"}
    assert [builtin[n].label for n in MODELS] == [
        "Non-Perso",
        "RAG",
        "PAG",
        "DPL",
        "PPlug",
        "OPPU",
        "DEP",
    ]


def test_a_second_method_cannot_take_a_registered_name() -> None:
    from dep_eval.api import PersonalizationMethod, register_method

    class Impostor(PersonalizationMethod):
        name = "dep"

    with pytest.raises(ValueError, match="method name 'dep' is taken by dep_eval.dep.method.DEP"):
        register_method(Impostor)
