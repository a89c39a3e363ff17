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


def test_seeds_repeat_each_main_run_in_its_own_folder() -> None:
    runs = select_runs(
        args(output=Path("o"), runs=["nonperso", "dep_k2"], k_ablation=False, seeds=3)
    )
    assert [(run[0], run[3], run[5]) for run in runs] == [
        ("nonperso", Path("o/nonperso"), 1234),  # the first seed is the plain run
        ("nonperso_seed1235", Path("o/nonperso_seed1235"), 1235),
        ("nonperso_seed1236", Path("o/nonperso_seed1236"), 1236),
        ("dep_k2", Path("o/k_ablation/dep_k2"), 1234),  # K runs keep one seed
    ]
    commands = [lm_eval_command(args(), run[1], run[2], run[3], run[4], run[5]) for run in runs]
    gen_kwargs = [c[c.index("--gen_kwargs") + 1] for c in commands]
    assert gen_kwargs == [
        "max_gen_toks=128",  # the default seed is not spelled out: same command as before
        "max_gen_toks=128,seed=1235",
        "max_gen_toks=128,seed=1236",
        "max_gen_toks=128",
    ]
    with pytest.raises(SystemExit, match="--seeds must be 1 or more"):
        select_runs(args(output=Path("o"), runs=None, k_ablation=False, seeds=0))


def test_the_seed_reaches_the_generation_settings() -> None:
    from dep_eval.methods.lm_eval_model import generation_settings

    # what lm-eval hands a model for --gen_kwargs max_gen_toks=128,seed=1235 on our task
    settings = generation_settings({"until": [], "max_gen_toks": 128, "seed": 1235})
    assert settings.seed == 1235
    assert generation_settings({}).seed == 1234  # reproduce's first seed


def test_reproduce_tables_merge_seeds_and_mark_against_nonperso(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    paired = FIXTURES / "paired" / "HuggingFaceTB__SmolLM2-135M-Instruct"
    for name, stamps in (
        ("nonperso", ["2026-05-01T10-00-00"]),
        ("dep", ["2026-05-01T12-00-00"]),
        ("dep_seed1235", ["2026-05-01T13-00-00"]),
        ("dep_seed1236", ["2026-05-01T14-00-00"]),
    ):
        folder = out / name / paired.name
        folder.mkdir(parents=True)
        for stamp in stamps:  # finished runs: reproduce skips them
            for path in paired.glob(f"*{stamp}*"):
                shutil.copy(path, folder / path.name)

    def no_llm(command: list[str], **_: object) -> None:
        raise AssertionError(f"every run exists, yet reproduce ran {command}")

    monkeypatch.setattr("dep_eval.reproduce.subprocess.run", no_llm)
    # --runs dep: the earlier nonperso folder still joins the tables, as the reference
    run_reproduce(args(output=out, results=results, runs=["dep"], k_ablation=False, seeds=3))
    table = (results / "leaderboard.md").read_text()
    dep = next(line for line in table.splitlines() if line.startswith("| DEP"))
    nonperso = next(line for line in table.splitlines() if line.startswith("| Non-Perso"))
    assert " sd " in dep and "▲" in dep and "(reference)" in nonperso
    assert "(lc)" in (results / "leaderboard_length_controlled.md").read_text()
    assert "seed=1236" in (results / "REPRODUCE.md").read_text()


def test_the_oppu_task_lora_run_trains_its_base_adapter_first_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    out, results = tmp_path / "out", tmp_path / "results"
    shutil.copytree(FIXTURES / "main", out / "nonperso")
    calls: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> None:  # what is run is not the point
        calls.append(command)
        if "train" in command:
            folder = Path(command[command.index("--output") + 1])
            folder.mkdir(parents=True)
            (folder / "adapter_model.safetensors").write_bytes(b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    options = dict(output=out, results=results, runs=["oppu_task_lora"], k_ablation=False)
    run_reproduce(args(**options))
    train, evaluate = calls
    assert train[train.index("--method") + 1] == "oppu-base"
    assert train[train.index("--output") + 1] == str(out / "oppu-base")
    model_args = evaluate[evaluate.index("--model_args") + 1]
    assert model_args == f"base_adapter={out / 'oppu-base'}"
    calls.clear()
    run_reproduce(args(**{**options, "runs": ["oppu_task_lora", "nonperso"]}))
    assert [c for c in calls if "train" in c] == []  # trained already: not again
