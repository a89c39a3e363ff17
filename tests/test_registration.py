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


@pytest.mark.slow
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
        # the entry point names exactly the registered method class
        import importlib

        assert getattr(importlib.import_module(module), attribute) is builtin[name].method_class
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


def test_the_registry_records_and_returns_the_class_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dep_eval import registry
    from dep_eval.api import PersonalizationMethod
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP

    spec = registry.method("dep")
    assert (spec.method_class, spec.config_class, spec.label, spec.order) == (
        DEP,
        DEPArgs,
        "DEP",
        50,
    )

    class Probe(PersonalizationMethod):
        name = "registry_probe"

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))  # undone afterwards
    assert registry.register_method(Probe, label="Probe") is Probe  # nothing lm-eval
    assert [v.name for v in spec.variants if v.ablation] == [
        "dep_his_only",
        "dep_diff_only",
        "dep_with_text",
    ]
    assert spec.sweep is not None and spec.sweep.runs("dep")[8] == ("dep_k8", "k=8")
    assert set(registry.train_targets()) == {"oppu-base"}


# Importing any method, the API, the plots or reproduce, and drawing a table from lm-eval
# output folders, must not import lm-eval; the registry alone imports neither it nor torch.
NO_LM_EVAL = (
    "dep_eval.api",
    "dep_eval.baselines.nonperso",
    "dep_eval.baselines.rag",
    "dep_eval.baselines.pag",
    "dep_eval.baselines.dpl",
    "dep_eval.baselines.pplug",
    "dep_eval.baselines.oppu",
    "dep_eval.dep.method",
    "dep_eval.plots",
    "dep_eval.reproduce",
)
TABLE = Path(__file__).parent / "fixtures" / "leaderboard" / "main"
LOADED = "import sys\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'lm_eval', 'torch'}))"


@pytest.mark.slow
def test_methods_and_tables_do_not_import_lm_eval(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in NO_LM_EVAL)
        + (
            "from dep_eval import registry\n"
            "from dep_eval.leaderboard import leaderboard_text\n"
            "assert len(registry.methods()) >= 7\n"
            f"text = leaderboard_text([{str(TABLE)!r}])\n"
            "assert '| DEP' in text, text\n"
            # no method imports the trainer (OPPU's task LoRA takes its rows from train.common)
            "assert 'dep_eval.train.trainer' not in sys.modules\n"
        )
    )
    assert python(code + LOADED, tmp_path) == "['torch']"
    assert python("import dep_eval.registry\n" + LOADED, tmp_path) == "[]"


@pytest.mark.slow
def test_lm_eval_gets_one_model_class_per_method_and_plugins_pass_through(
    tmp_path: Path,
) -> None:
    code = (
        "import lm_eval.models\n"
        "from lm_eval.api.registry import get_model\n"
        "from dep_eval.lm_eval_models import DEPLM, model_class\n"
        "from dep_eval.dep.method import DEP\n"
        "from dep_eval.methods.lm_eval_model import PersonalizedLM\n"
        "dep = get_model('dep')\n"
        "print(dep is DEPLM is model_class(DEP), dep.method_class is DEP,"
        " issubclass(dep, PersonalizedLM), model_class(dep) is dep,"
        " model_class(get_model('hf')) is get_model('hf'))\n"
    )
    assert python(code, tmp_path) == "True True True True True"


def test_the_hook_registers_again_after_lm_eval_loaded_a_model() -> None:
    """A second register_models (dep-eval heldout-nll calls it whether or not the start-up
    hook ran) must skip a name whose class lm-eval has already loaded, not crash comparing
    an entry point with that class (CI failure order-dependent before the fix)."""
    import lm_eval.models
    from lm_eval.api import registry

    from dep_eval import _lm_eval_hook

    loaded = registry.get_model("nonperso")  # the lazy entry becomes the class
    added = _lm_eval_hook.register_models(lm_eval.models)
    assert "nonperso" not in added
    assert registry.get_model("nonperso") is loaded
