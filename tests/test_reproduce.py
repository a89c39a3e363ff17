"""``dep-eval reproduce`` builds lm_eval command lines that lm_eval accepts."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from dep_eval.reproduce import K_RUNS, lm_eval_command, main_runs, run_reproduce, select_runs

FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard"
LLM_DIR = "HuggingFaceTB__SmolLM2-135M-Instruct"
PREFIX = "amazon_review_personalized"
CUSTOM = f"{PREFIX}_custom"


def toy_data(root: Path, *categories: str) -> Path:
    """A data folder with the files reproduce checks for before it runs (their rows are
    read by lm_eval only, which the tests below never start)."""
    for category in categories or ("All_Beauty",):
        (root / category).mkdir(parents=True)
        for name in ("train", "val", "test", "meta"):
            (root / category / f"{name}.jsonl").write_text("")
    return root


def finished_run(
    template: Path,
    out: Path,
    options: argparse.Namespace,
    model: str,
    model_args: str = "",
    seed: int = 1234,
) -> Path:
    """``template`` (a fixture results file, and its samples) as the run of reproduce's
    command for (model, model_args, seed) would have left it in ``out``: the custom task on
    ``options``' data folder, category and split, with its generation settings."""
    from dep_eval.report.results import parse_typed_args

    command = lm_eval_command(options, model, model_args, out, seed=seed)
    data = json.loads(template.read_text())
    task = next(t for t in data["configs"] if t.startswith(PREFIX))
    for key in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        if isinstance(data.get(key), dict) and task in data[key]:
            data[key] = {CUSTOM: data[key][task]}
    data["configs"][CUSTOM].pop("dataset_kwargs", None)
    data["configs"][CUSTOM]["task"] = CUSTOM
    data["configs"][CUSTOM]["metadata"] = json.loads(command[command.index("--metadata") + 1])
    margs = command[command.index("--model_args") + 1] if "--model_args" in command else ""
    gen_kwargs = parse_typed_args(command[command.index("--gen_kwargs") + 1])
    data["config"].update(model=model, model_args=margs, gen_kwargs=gen_kwargs)
    target = out / LLM_DIR / template.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data))
    stamp = template.stem.removeprefix("results_")
    samples = template.with_name(f"samples_{task}_{stamp}.jsonl")
    if samples.is_file():
        shutil.copy(samples, target.with_name(f"samples_{CUSTOM}_{stamp}.jsonl"))
    return target


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
        runs=None,
        k_ablation=False,
        seeds=1,
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


@pytest.mark.slow
def test_k_ablation_gets_its_own_table_and_never_enters_the_main_one(tmp_path: Path) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    options = args(data_dir=str(toy_data(tmp_path / "data")), output=out, results=results)
    main, k_ablation = FIXTURES / "main" / LLM_DIR, FIXTURES / "k_ablation" / LLM_DIR
    # finished runs: reproduce skips them
    finished_run(
        main / "results_2026-01-10T10-00-00.000000.json", out / "nonperso", options, "nonperso"
    )
    k0 = k_ablation / "results_2026-03-01T10-00-00.000000.json"
    finished_run(k0, out / "k_ablation" / "dep_k0", options, "dep", "k=0")
    options.runs, options.k_ablation, options.k_limit = ["nonperso", "dep_k0"], False, 20
    run_reproduce(options)
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
    options = args(data_dir=str(toy_data(tmp_path / "data")), output=out, results=results)
    paired = FIXTURES / "paired" / LLM_DIR
    for name, model, stamp, seed in (
        ("nonperso", "nonperso", "2026-05-01T10-00-00", 1234),
        ("dep", "dep", "2026-05-01T12-00-00", 1234),
        ("dep_seed1235", "dep", "2026-05-01T13-00-00", 1235),
        ("dep_seed1236", "dep", "2026-05-01T14-00-00", 1236),
    ):  # finished runs: reproduce skips them
        template = paired / f"results_{stamp}.000000.json"
        finished_run(template, out / name, options, model, seed=seed)

    def no_llm(command: list[str], **_: object) -> None:
        raise AssertionError(f"every run exists, yet reproduce ran {command}")

    monkeypatch.setattr("dep_eval.reproduce.subprocess.run", no_llm)
    # --runs dep: the earlier nonperso folder still joins the tables, as the reference
    options.runs, options.k_ablation, options.seeds = ["dep"], False, 3
    run_reproduce(options)
    table = (results / "leaderboard.md").read_text()
    dep = next(line for line in table.splitlines() if line.startswith("| DEP"))
    nonperso = next(line for line in table.splitlines() if line.startswith("| Non-Perso"))
    assert " sd " in dep and "▲" in dep and "(reference)" in nonperso
    assert "(lc)" in (results / "leaderboard_length_controlled.md").read_text()
    assert "seed=1236" in (results / "REPRODUCE.md").read_text()


@pytest.mark.slow
def test_the_oppu_task_lora_run_trains_its_base_adapter_first_and_only_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    out, results = tmp_path / "out", tmp_path / "results"
    data_dir = str(toy_data(tmp_path / "data"))
    nonperso = FIXTURES / "main" / LLM_DIR / "results_2026-01-10T10-00-00.000000.json"
    finished_run(nonperso, out / "nonperso", args(data_dir=data_dir), "nonperso")
    calls: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> None:  # what is run is not the point
        calls.append(command)
        if "train" in command:
            folder = Path(command[command.index("--output") + 1])
            folder.mkdir(parents=True)
            (folder / "adapter_model.safetensors").write_bytes(b"")
        else:  # the results file lm_eval would write
            model = command[command.index("--model") + 1]
            margs = command[command.index("--model_args") + 1]
            run_out = Path(command[command.index("--output_path") + 1])
            finished_run(nonperso, run_out, args(data_dir=data_dir), model, margs)

    monkeypatch.setattr(subprocess, "run", fake_run)
    options = dict(
        data_dir=data_dir, output=out, results=results, runs=["oppu_task_lora"], k_ablation=False
    )
    run_reproduce(args(**options))
    train, evaluate = calls
    assert train[train.index("--method") + 1] == "oppu-base"
    assert train[train.index("--output") + 1] == str(out / "oppu-base")
    model_args = evaluate[evaluate.index("--model_args") + 1]
    assert model_args == f"base_adapter={out / 'oppu-base'}"
    calls.clear()
    run_reproduce(args(**{**options, "runs": ["oppu_task_lora", "nonperso"]}))
    assert [c for c in calls if "train" in c] == []  # trained already: not again


# ------------------------------------------- what reproduce reuses (issue 32, rows 1-3)

NONPERSO = FIXTURES / "main" / LLM_DIR / "results_2026-01-10T10-00-00.000000.json"


def _no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_llm(command: list[str], **_: object) -> None:
        raise AssertionError(f"reproduce should have refused before running {command}")

    monkeypatch.setattr("dep_eval.reproduce.subprocess.run", no_llm)


@pytest.mark.bad_input("reproduce-missing-data-dir")
def test_reproduce_refuses_a_missing_data_dir_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    earlier = args(data_dir=str(toy_data(tmp_path / "data")), output=out, results=results)
    finished_run(NONPERSO, out / "nonperso", earlier, "nonperso")  # an earlier reproduction
    _no_runs(monkeypatch)
    missing = tmp_path / "nonexistent"
    with pytest.raises(SystemExit, match=f"--data-dir {missing}: data directory {missing} does"):
        run_reproduce(args(data_dir=str(missing), output=out, results=results, runs=None))
    with pytest.raises(SystemExit, match="category 'Books' not found in .*categories there: All_"):
        run_reproduce(args(**{**vars(earlier), "category": "Books", "runs": None}))
    assert not results.exists()


@pytest.mark.bad_input("reproduce-other-request")
@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"category": "Books"}, "category 'All_Beauty', but this reproduction asks 'Books'"),
        ({"split": "val"}, "split 'test', but this reproduction asks 'val'"),
        (
            {"max_gen_toks": 999},
            "generation settings '{\"max_gen_toks\": 128}', but this reproduction asks "
            "'{\"max_gen_toks\": 999}'",
        ),
        ({"model_args": "dtype=float16"}, "model args {}, but this reproduction asks {'dtype"),
        ({"data_dir": "other"}, "data dir '{data}', but this reproduction asks '{other}'"),
    ],
)
def test_reproduce_reuses_only_runs_made_as_it_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, difference: str
) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    data = toy_data(tmp_path / "data", "All_Beauty", "Books")
    other = toy_data(tmp_path / "other")
    earlier = args(data_dir=str(data), output=out, results=results, runs=["nonperso"])
    path = finished_run(NONPERSO, out / "nonperso", earlier, "nonperso")
    if "data_dir" in change:
        change = {"data_dir": str(other)}
    difference = difference.replace("{data}", str(data)).replace("{other}", str(other))
    _no_runs(monkeypatch)
    with pytest.raises(SystemExit) as caught:
        run_reproduce(args(**{**vars(earlier), **change}))
    message = str(caught.value)
    assert f"finished runs under {out} cannot be reused by this reproduction" in message
    assert f"{path}: {difference}" in message, message
    assert not results.exists()  # no table, no REPRODUCE.md claiming the new arguments

    run_reproduce(earlier)  # the same request: reused, nothing run
    assert "--model nonperso" in (results / "REPRODUCE.md").read_text()


@pytest.mark.bad_input("reproduce-empty-results")
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "it is empty (0 bytes): the run that wrote it failed"),
        ('{"results": {', "it is not valid JSON"),
    ],
)
def test_reproduce_names_a_failed_runs_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, problem: str
) -> None:
    """A full disk leaves lm_eval's results file empty (or cut) and lm_eval exits 0."""
    out, results = tmp_path / "out", tmp_path / "results"
    options = args(
        data_dir=str(toy_data(tmp_path / "data")), output=out, results=results, runs=["nonperso"]
    )
    broken = out / "nonperso" / LLM_DIR / "results_2026-06-01T10-00-00.000000.json"
    broken.parent.mkdir(parents=True)
    broken.write_text(content)
    _no_runs(monkeypatch)
    with pytest.raises(SystemExit, match=re.escape(f"{broken}: {problem}") + ".*delete it"):
        run_reproduce(options)

    # the same from a run of this reproduction: stopped there, naming the file
    broken.unlink()

    def full_disk(command: list[str], check: bool) -> None:
        broken.write_text(content)  # what lm_eval leaves, exiting 0

    monkeypatch.setattr("dep_eval.reproduce.subprocess.run", full_disk)
    expected = f"run nonperso exited 0 but wrote no usable results ({broken}: {problem}"
    with pytest.raises(SystemExit, match=re.escape(expected)):
        run_reproduce(options)
    assert not results.exists()


@pytest.mark.slow
@pytest.mark.bad_input("reproduce-cli-refusals")
def test_dep_eval_reproduce_refuses_before_running_anything(tmp_path: Path) -> None:
    """The issue's command, through the installed ``dep-eval``: over an output folder of an
    earlier All_Beauty test reproduction, a missing data folder is refused first; with the
    data there, the differences; an empty results file is named."""
    import subprocess
    import sys

    out, results = tmp_path / "out", tmp_path / "results"
    data = toy_data(tmp_path / "data", "All_Beauty", "Books")
    earlier = args(data_dir=str(data), output=out, results=results)
    path = finished_run(NONPERSO, out / "nonperso", earlier, "nonperso")
    dep_eval = Path(sys.executable).parent / "dep-eval"

    def reproduce(data_dir: Path) -> subprocess.CompletedProcess[str]:
        command = [str(dep_eval), "reproduce", "--data-dir", str(data_dir), "--category"]
        command += ["Books", "--split", "val", "--max-gen-toks", "999", "--runs", "nonperso"]
        command += ["--output", str(out), "--results", str(results)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    done = reproduce(Path("/nonexistent"))
    assert done.returncode != 0
    assert "data directory /nonexistent does not exist" in done.stderr, done.stderr[-2000:]

    done = reproduce(data)
    assert done.returncode != 0
    for difference in (
        "category 'All_Beauty', but this reproduction asks 'Books'",
        "split 'test', but this reproduction asks 'val'",
        "generation settings '{\"max_gen_toks\": 128}', but this reproduction asks "
        "'{\"max_gen_toks\": 999}'",
    ):
        assert f"{path}: {difference}" in done.stderr, done.stderr[-2000:]

    path.write_text("")
    done = reproduce(data)
    assert f"{path}: it is empty (0 bytes)" in done.stderr, done.stderr[-2000:]
    assert not results.exists()


@pytest.mark.slow
def test_a_real_run_is_reused_by_the_same_reproduction_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beauty_dir: Path
) -> None:
    """What lm_eval really records (model args, gen_kwargs, metadata) reads back as the
    request that made it: one real nonperso run on one document, then the same reproduction
    reuses it and one with another --max-gen-toks is refused."""
    out, results = tmp_path / "out", tmp_path / "results"
    options = args(
        data_dir=str(beauty_dir),
        output=out,
        results=results,
        runs=["nonperso"],
        limit=1,
        batch_size=1,
        max_gen_toks=4,
    )
    run_reproduce(options)
    [made] = sorted(out.rglob("results_*.json"))
    _no_runs(monkeypatch)
    run_reproduce(options)  # reused: nothing run
    assert sorted(out.rglob("results_*.json")) == [made]
    with pytest.raises(SystemExit, match=re.escape(f"{made}: generation settings")):
        run_reproduce(args(**{**vars(options), "max_gen_toks": 8}))
