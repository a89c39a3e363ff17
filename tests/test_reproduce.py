"""``dep-eval reproduce`` builds lm_eval command lines that lm_eval accepts."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from dep_eval.reproduce import K_RUNS, lm_eval_command, main_runs, run_reproduce, select_runs

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"


def args(**overrides: object) -> argparse.Namespace:
    values = dict(
        data_dir="data",
        category="All_Beauty",
        split="test",
        model_args="",
        dep_checkpoint=None,
        batch_size=4,
        max_gen_toks=128,
        limit=None,
        k_limit=None,
        pplug_checkpoint=None,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_model_args_follow_the_model_name() -> None:
    command = lm_eval_command(args(model_args="device=cpu"), "dep", "use_diff=false", Path("o"))
    i = command.index("--model")
    assert command[i + 1 : i + 4] == ["dep", "--model_args", "use_diff=false,device=cpu"]
    metadata = json.loads(command[command.index("--metadata") + 1])
    assert metadata["category"] == "All_Beauty" and metadata["split"] == "test"
    assert Path(metadata["data_dir"]).is_absolute()


def test_plain_runs_have_no_model_args_and_limit_is_optional() -> None:
    command = lm_eval_command(args(limit=20), "rag", "", Path("o"))
    assert "--model_args" not in command
    assert command[-2:] == ["--limit", "20"]
    assert "max_gen_toks=128" in command


def test_run_names_are_unique() -> None:
    names = [name for name, _, _ in main_runs() + K_RUNS]
    assert len(names) == len(set(names))


def test_runs_pick_main_runs_and_k_ablation_adds_all_nine_k_runs() -> None:
    def names(**overrides: object) -> list[str]:
        base = dict(output=Path("o"), runs=None, k_ablation=False)
        return [run[0] for run in select_runs(args(**{**base, **overrides}))]

    assert names() == [name for name, _, _ in main_runs()]
    assert names(runs=["rag", "nonperso"]) == ["nonperso", "rag"]  # in the fixed order
    k_names = [name for name, _, _ in K_RUNS]
    assert names(runs=["nonperso"], k_ablation=True) == ["nonperso", *k_names]
    assert names(runs=["dep_k3"]) == ["dep_k3"]
    limits = {
        run[0]: run[4]
        for run in select_runs(
            args(output=Path("o"), runs=["dep", "dep_k3"], k_ablation=False, limit=None, k_limit=10)
        )
    }
    assert limits == {"dep": None, "dep_k3": 10}


def test_an_unknown_run_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(
        SystemExit, match=r"unknown run\(s\) \['dep_k9', 'rga'\]; known: nonperso, rag"
    ):
        select_runs(args(output=Path("o"), runs=["rag", "rga", "dep_k9"], k_ablation=False))


def test_k_ablation_gets_its_own_table_and_never_enters_the_main_one(tmp_path: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    shutil.copytree(FIXTURES / "main", out / "nonperso")  # finished runs: reproduce skips them
    shutil.copytree(FIXTURES / "k_ablation", out / "k_ablation" / "dep_k0")
    run_reproduce(
        args(output=out, results=results, runs=["nonperso", "dep_k0"], k_ablation=False, k_limit=20)
    )
    main = (results / "leaderboard.md").read_text()
    k_table = (results / "k_ablation.md").read_text()
    assert "DEP (k=" not in main and "DEP (k=" in k_table
    assert (results / "figures" / "k_ablation_meteor.png").is_file()
    assert "--limit 20" in (results / "REPRODUCE.md").read_text()  # the K runs' own limit
