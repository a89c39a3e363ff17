"""``dep-eval reproduce``: every method and ablation on one data folder, then the tables.

Each run is a plain ``lm_eval`` subprocess (same task, same generation settings and seed,
``--log_samples``) writing under ``OUTPUT/<run name>/``; a run whose results file already
exists is skipped, so an interrupted reproduction resumes. Then the leaderboard (Markdown,
CSV, LaTeX) and the figures are rebuilt into ``RESULTS/``, with ``RESULTS/REPRODUCE.md``
recording the command, the date and every lm_eval command line.

``--seeds N`` repeats every main run with N sampling seeds: 1234 (the default of this
project's models, so the plain run folder ``OUTPUT/<run name>/`` is the first seed's),
1235, ... passed as ``--gen_kwargs seed=S`` (``GenerationSettings.from_lm_eval`` reads it)
into ``OUTPUT/<run name>_seed<S>/``. The leaderboard merges a row's seeds into their mean
and spread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from dep_eval.io import atomic_write

logger = logging.getLogger(__name__)

# Runs are (run name, --model, --model_args). Every built-in method of the registry runs
# with its defaults, then the methods' variants, then their ablations, and --k-ablation adds
# the method's sweep (DEP's K); each is declared where the method registers
# (``registry.register_method``). DEP and PPlug rows use the checkpoints shipped for the
# embedded LLM unless --dep-checkpoint / --pplug-checkpoint name others. A variant's
# ``{NAME}`` is the folder OUTPUT/NAME that the method's train target NAME (OPPU's task
# LoRA, oppu-base) is trained into by `dep-eval train --method NAME` before the first run
# that needs it.


def main_runs() -> list[tuple[str, str, str]]:
    """Every built-in method of the registry with its defaults, then their variants, then
    their ablations."""
    from dep_eval import registry

    specs = [spec for spec in registry.methods().values() if spec.builtin]
    variants = [(v.name, s.name, v.model_args) for s in specs for v in s.variants if not v.ablation]
    ablations = [(v.name, s.name, v.model_args) for s in specs for v in s.variants if v.ablation]
    return [(spec.name, spec.name, "") for spec in specs] + variants + ablations


def k_runs() -> list[tuple[str, str, str]]:
    """The runs of ``--k-ablation``: the sweep a built-in method declares (DEP's K = 0..8)."""
    from dep_eval import registry

    return [
        (run, spec.name, model_args)
        for spec in registry.methods().values()
        if spec.builtin and spec.sweep is not None
        for run, model_args in spec.sweep.runs(spec.name)
    ]


def __getattr__(name: str) -> object:
    if name == "K_RUNS":  # the list as it was a constant: built from the registry on use
        return k_runs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_SEED = 1234  # GenerationSettings.seed: what a run without --gen_kwargs seed uses


def sampling_seeds(count: int) -> list[int]:
    """The seeds of ``--seeds count``: the default first, so one seed is the plain run."""
    if count < 1:
        raise SystemExit(f"dep-eval reproduce: --seeds must be 1 or more, got {count}")
    return [DEFAULT_SEED + i for i in range(count)]


def seed_run_name(name: str, seed: int) -> str:
    return name if seed == DEFAULT_SEED else f"{name}_seed{seed}"


DESCRIPTION = """\
Run every method and DEP ablation through lm_eval on one data folder and category, then
rebuild the leaderboard (Markdown, CSV, LaTeX) and the figures. Resumable: finished runs
are skipped. results/ on main is this command's output for the shared All_Beauty test split."""

EPILOG = """\
examples:
  dep-eval reproduce --data-dir ../shared/data/amazon_beauty --category All_Beauty
  dep-eval reproduce --data-dir DIR --category All_Beauty --runs nonperso rag dep --limit 10
  dep-eval reproduce --data-dir DIR --category All_Beauty --k-ablation   # adds K = 0..8
  dep-eval reproduce --data-dir DIR --category All_Beauty --seeds 3      # seeds 1234..1236"""


def add_reproduce_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reproduce",
        help="run every method and ablation, then rebuild leaderboard and figures",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", required=True, help="<dir>/<Category>/{train,val,test,meta}.jsonl"
    )
    parser.add_argument("--category", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--output", type=Path, default=Path("out/reproduce"), help="lm_eval output root"
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="tables and figures")
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="NAME",
        help="only these runs (default: all): "
        + ", ".join(n for n, _, _ in main_runs())
        + "; --k-ablation still adds dep_k0..dep_k8",
    )
    parser.add_argument(
        "--k-ablation",
        action="store_true",
        help="also DEP with K = 0..8 (in OUTPUT/k_ablation; its own table and figure)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="sampling seeds per main run: 1234, 1235, ... (default: 1); the leaderboard "
        "reports their mean and spread; K-ablation runs keep one seed",
    )
    parser.add_argument("--limit", type=int, help="documents per run (default: all)")
    parser.add_argument(
        "--k-limit", type=int, help="documents per K-ablation run (default: --limit)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    parser.add_argument("--dep-checkpoint", help="DEP checkpoint (default: the shipped one)")
    parser.add_argument("--pplug-checkpoint", help="PPlug checkpoint (default: the shipped one)")
    parser.add_argument(
        "--model-args", default="", help="extra --model_args for every run, e.g. device=cuda"
    )
    parser.set_defaults(handler=run_reproduce)
    return parser


def lm_eval_command(
    args: argparse.Namespace,
    model: str,
    model_args: str,
    out: Path,
    limit: int | None = None,
    seed: int | None = None,
) -> list[str]:
    metadata = {
        "data_dir": str(Path(args.data_dir).resolve()),
        "category": args.category,
        "split": args.split,
    }
    extra = [a for a in (model_args, args.model_args) if a]
    if model == "dep" and args.dep_checkpoint:
        extra.append(f"checkpoint={Path(args.dep_checkpoint).resolve()}")
    if model == "pplug" and args.pplug_checkpoint:
        extra.append(f"checkpoint={Path(args.pplug_checkpoint).resolve()}")
    command = [
        sys.executable,
        "-m",
        "dep_eval.cli",
        "lm_eval",
        "--model",
        model,
        "--tasks",
        "amazon_review_personalized_custom",
        "--metadata",
        json.dumps(metadata),
        "--batch_size",
        str(args.batch_size),
        "--gen_kwargs",
        f"max_gen_toks={args.max_gen_toks}"
        + ("" if seed in (None, DEFAULT_SEED) else f",seed={seed}"),
        "--output_path",
        str(out),
        "--log_samples",
    ]
    if extra:
        command[6:6] = ["--model_args", ",".join(extra)]  # right after --model NAME
    if limit or args.limit:
        command += ["--limit", str(limit or args.limit)]
    return command


def train_target_command(args: argparse.Namespace, name: str) -> list[str]:
    """``dep-eval train --method NAME`` (a method's train target) on the run's data, into
    OUTPUT/NAME."""
    return [
        sys.executable,
        "-m",
        "dep_eval.cli",
        "train",
        "--method",
        name,
        "--data-dir",
        str(Path(args.data_dir).resolve()),
        "--category",
        args.category,
        "--output",
        str(args.output / name),
    ]


def _fill_targets(model_args: str, output: Path) -> str:
    """``{NAME}`` of each train target in ``model_args`` as its folder OUTPUT/NAME."""
    from dep_eval import registry

    for name in registry.train_targets():
        model_args = model_args.replace("{" + name + "}", str(output / name))
    return model_args


Run = tuple[str, str, str, Path, int | None, int]  # name, model, args, folder, limit, seed


def select_runs(args: argparse.Namespace) -> list[Run]:
    """(name, model, model_args, output folder, limit, seed) of each run to do, in order.

    ``--runs`` picks main runs (or single K runs, dep_k0..dep_k8); ``--k-ablation`` adds all
    nine K runs. K runs have their own folder, so that they get their own table and never sit
    in the main one with another --limit. ``--seeds N`` repeats each main run with the next
    N - 1 seeds, each in its own folder (``seed_run_name``), right after its first seed.
    """
    k_root = args.output / "k_ablation"
    main = [
        (
            name,
            model,
            _fill_targets(margs, args.output),
            args.output / name,
            args.limit,
            DEFAULT_SEED,
        )
        for name, model, margs in main_runs()
    ]
    k_limit = args.k_limit or args.limit
    sweep = [(n, m, a, k_root / n, k_limit, DEFAULT_SEED) for n, m, a in k_runs()]
    if args.runs:
        unknown = set(args.runs) - {run[0] for run in main + sweep}
        if unknown:
            known = ", ".join(run[0] for run in main + sweep)
            raise SystemExit(
                f"dep-eval reproduce: unknown run(s) {sorted(unknown)}; known: {known}"
            )
    runs = [run for run in main + sweep if run[0] in args.runs] if args.runs else list(main)
    if args.k_ablation:
        runs += [run for run in sweep if run not in runs]
    seeds = sampling_seeds(getattr(args, "seeds", 1))
    main_names = {run[0] for run in main}
    out: list[Run] = []
    for name, model, margs, folder, limit, _ in runs:
        for seed in seeds if name in main_names else [DEFAULT_SEED]:
            run_name = seed_run_name(name, seed)
            out.append((run_name, model, margs, folder.with_name(run_name), limit, seed))
    return out


# ------------------------------------------------------------------ finished runs


def check_data(args: argparse.Namespace) -> None:
    """Refuse a data folder, category or split that is not there, before anything runs or
    any finished run is taken."""
    from dep_eval.data.loaders import DataError, _check_split, _local_file, parse_source

    try:
        _check_split(args.split)
        _local_file(parse_source(f"local:{args.data_dir}"), args.category, args.split)
    except DataError as error:
        raise SystemExit(f"dep-eval reproduce: --data-dir {args.data_dir}: {error}") from error


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1] if flag in command else ""


def _model_args(raw: Any) -> dict[str, str]:
    from dep_eval.report.results import RUNTIME_ARGS, parse_args

    return {k: v for k, v in sorted(parse_args(raw).items()) if k not in RUNTIME_ARGS}


def _generation(raw: Any) -> str:
    from dep_eval.report.results import canonical, parse_typed_args

    settings = parse_typed_args(raw)
    if settings.get("seed") == DEFAULT_SEED:  # the default, whether spelled out or not
        del settings["seed"]
    return canonical(settings)


def requested(command: list[str]) -> dict[str, Any]:
    """What a run's lm_eval command asks for, in the terms a results file records."""
    metadata = json.loads(_flag(command, "--metadata"))
    return {
        "model": _flag(command, "--model"),
        "model args": _model_args(_flag(command, "--model_args")),
        "data dir": str(Path(metadata["data_dir"])),
        "category": metadata["category"],
        "split": metadata["split"],
        "generation settings": _generation(_flag(command, "--gen_kwargs")),
    }


def recorded(path: Path) -> list[dict[str, Any]] | str:
    """What the run that wrote the results file ``path`` was asked for, per review task in
    it, or why that cannot be told (a failed run's empty or cut file, no review task)."""
    from dep_eval.report.results import category_of, results_file_problem

    problem = results_file_problem(path)
    if problem is not None:
        return problem
    data = json.loads(path.read_text(encoding="utf-8"))
    config = data["config"]
    out = []
    for task, task_config in sorted(data["configs"].items()):
        where = category_of(task, task_config)
        if where is None:
            continue
        metadata = task_config.get("metadata") or {}
        data_dir = metadata.get("data_dir")
        out.append(
            {
                "model": config.get("model"),
                "model args": _model_args(config.get("model_args")),
                "data dir": str(Path(data_dir)) if isinstance(data_dir, str) else data_dir,
                "category": where[0],
                # the custom task's split is the run's; a fixed task pins its own
                "split": (metadata.get("split") if task.endswith("_custom") else None) or where[1],
                "generation settings": _generation(config.get("gen_kwargs")),
            }
        )
    return out or "it holds no results of this project's review tasks"


def _differences(path: Path, wanted: dict[str, Any]) -> list[str]:
    """How the finished run in ``path`` differs from the request, or why it is no run."""
    found = recorded(path)
    if isinstance(found, str):
        return [f"{found}; delete it (and the samples_*.jsonl beside it) to rerun this run"]
    return [
        f"{key} {task[key]!r}, but this reproduction asks {wanted[key]!r}"
        for task in found
        for key in wanted
        if task[key] != wanted[key]
    ]


def _joined_runs(args: argparse.Namespace, runs: list[Run]) -> list[Run]:
    """The runs whose folders this reproduction reuses or puts in its tables: the runs it
    was asked for, and every other run folder already under OUTPUT (every seed's)."""
    every_run = argparse.Namespace(**{**vars(args), "runs": None, "k_ablation": True, "seeds": 1})
    out = list(runs)
    for _, model, margs, folder, limit, _ in select_runs(every_run):
        seeds = {folder: DEFAULT_SEED}
        for found in folder.parent.glob(f"{folder.name}_seed*"):
            if found.name.rpartition("_seed")[2].isdigit():
                seeds[found] = int(found.name.rpartition("_seed")[2])
        for found, seed in seeds.items():
            if found.is_dir() and all(run[3] != found for run in out):
                out.append((found.name, model, margs, found, limit, seed))
    return out


def check_finished_runs(args: argparse.Namespace, runs: list[Run]) -> None:
    """Refuse, before anything runs, to reuse a finished run (or put one in the tables) that
    was made on other data, another category or split, or with other generation settings or
    model args than this reproduction asks for, or whose results file is a failed run's."""
    problems = []
    for _, model, model_args, out, limit, seed in _joined_runs(args, runs):
        wanted = requested(lm_eval_command(args, model, model_args, out, limit, seed))
        for path in sorted(out.rglob("results_*.json")):
            problems += [f"{path}: {difference}" for difference in _differences(path, wanted)]
    if problems:
        raise SystemExit(
            "dep-eval reproduce: finished runs under "
            f"{args.output} cannot be reused by this reproduction:\n  "
            + "\n  ".join(problems)
            + "\nGive another --output, or delete those run folders to rerun them."
        )


def check_new_results(name: str, out: Path) -> None:
    """A run that exited 0 must have left a usable results file (lm_eval only logs that it
    could not write one, e.g. on a full disk)."""
    from dep_eval.report.results import results_file_problem

    found = sorted(out.rglob("results_*.json"))
    problem = results_file_problem(found[-1]) if found else None
    if not found or problem is not None:
        where = f"{found[-1]}: {problem}" if found else f"no results_*.json under {out}"
        raise SystemExit(
            f"dep-eval reproduce: run {name} exited 0 but wrote no usable results ({where}); "
            "free some disk space, delete that file and run reproduce again"
        )


def run_reproduce(args: argparse.Namespace) -> None:
    from dep_eval import registry
    from dep_eval.leaderboard import leaderboard_text
    from dep_eval.plots import plot_all

    k_root = args.output / "k_ablation"
    check_data(args)
    runs = select_runs(args)
    check_finished_runs(args, runs)
    done_commands = []
    for name, model, model_args, out, limit, seed in runs:
        existing = sorted(out.rglob("results_*.json"))
        if existing:
            # list the command that made them, with the --limit it really had
            limit = json.loads(existing[-1].read_text()).get("config", {}).get("limit")
            limit = int(limit) if limit else None
            run_args = argparse.Namespace(**{**vars(args), "limit": limit})
            done_commands.append(lm_eval_command(run_args, model, model_args, out, seed=seed))
            logger.info("%s: results exist in %s, skipped", name, out)
            continue
        for target in registry.train_targets().values():
            folder = args.output / target.name
            if f"={folder}" in model_args and not (folder / target.done_file).is_file():
                train = train_target_command(args, target.name)
                done_commands.append(train)
                logger.info("%s needs %s first: %s", name, target.name, shlex.join(train))
                subprocess.run(train, check=True)
        command = lm_eval_command(args, model, model_args, out, limit, seed)
        done_commands.append(command)
        logger.info("%s: %s", name, shlex.join(command))
        subprocess.run(command, check=True)
        check_new_results(name, out)
    args.results.mkdir(parents=True, exist_ok=True)
    # every seed's folder there is, also those of an earlier, larger --seeds
    main_paths = [
        folder
        for name, _, _ in main_runs()
        for folder in [args.output / name, *sorted(args.output.glob(f"{name}_seed*"))]
        if folder.is_dir()
    ]
    # significance marks against Non-Perso when it was run
    against = "nonperso" if (args.output / "nonperso").is_dir() else None
    for fmt, suffix in (("markdown", "md"), ("csv", "csv"), ("latex", "tex")):
        # the paper's Table 1 reference rows only where they share a category with this run
        paper_category = args.category in {"Books", "Movies_and_TV", "CDs_and_Vinyl"}
        with_paper = fmt == "markdown" and paper_category
        text = leaderboard_text(main_paths, fmt, with_paper=with_paper, against=against)
        atomic_write(args.results / f"leaderboard.{suffix}", text)
    text = leaderboard_text(main_paths, "markdown", against=against, length_controlled=True)
    atomic_write(args.results / "leaderboard_length_controlled.md", text)
    k_paths = [k_root / name for name, _, _ in k_runs() if (k_root / name).is_dir()]
    if k_paths:
        text = leaderboard_text(k_paths, "markdown", with_paper=False)
        atomic_write(args.results / "k_ablation.md", text)
    plot_all(main_paths, args.results / "figures", k_paths=k_paths)
    invocation = shlex.join(["dep-eval", *sys.argv[1:]]) if sys.argv[1:2] == ["reproduce"] else ""
    lines = [
        "# How results/ was made",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        "",
        f"Command: `{invocation}`" if invocation else "",
        "",
        "Each run (skipped when its results already existed):",
        "",
        *[f"    {shlex.join(c[2:])}" for c in done_commands],
        "",
    ]
    atomic_write(args.results / "REPRODUCE.md", "\n".join(lines))
    logger.info("leaderboard and figures written to %s", args.results)
