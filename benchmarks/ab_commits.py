"""The engine at two commits on one machine, runs interleaved: did a code change cost speed?

    python benchmarks/ab_commits.py --data-dir ../shared/data/amazon_beauty --base 1ff873c

Figures from two runs of ``bench_generation.py`` on different days cannot separate a code
change from a change of host (the same command ran at 0.63x the samples/s on a slower CPU).
Here each commit is checked out into a git worktree, and each run is one
``bench_generation.py --one`` configuration, started in a fresh process from that worktree, with
its own ``dep_eval`` first on the path and its own cache folder. Runs alternate between the
commits, ``--reps`` times, so drift on a noisy machine hits both alike.

Writes ``results/ab_commits.{json,md}``: per configuration, each commit's seconds (median
and range) and the head's samples/s as a multiple of the base's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("ab_commits")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def link_mapped_folders(tree: Path) -> None:
    """``baselines/`` and ``tasks/`` are installed as ``dep_eval.baselines`` and
    ``dep_eval.tasks`` (pyproject's package-dir); a worktree on the path is not installed, so
    its ``dep_eval`` gets links to them, else those imports would reach the installed tree's."""
    for name in ("baselines", "tasks"):
        if (tree / name).is_dir() and not (tree / "dep_eval" / name).exists():
            (tree / "dep_eval" / name).symlink_to(Path("..") / name)


def one_run(tree: Path, cache: Path, args: argparse.Namespace, config: str) -> dict:
    """One ``bench_generation.py --one`` configuration (``METHOD:BATCH``) from ``tree``."""
    method, batch = config.split(":")
    command = [
        sys.executable,
        str(tree / "benchmarks" / "bench_generation.py"),
        "--data-dir", str(Path(args.data_dir).resolve()),
        "--samples", str(args.samples),
        "--tokens", str(args.tokens),
        "--one", method, batch, "engine", "auto",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree), "DEP_EVAL_CACHE_DIR": str(cache)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(data: dict) -> str:
    base, head = data["base"], data["head"]
    lines = [
        "# The HF engine at two commits, interleaved on one machine",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Base {base} against head {head}: each run is `bench_generation.py --one METHOD BATCH "
        f"engine auto` ({data['samples']} test documents, {data['tokens']} new tokens each, EOS "
        f"off, float32) in a fresh process from that commit's worktree; the commits alternate, "
        f"{data['reps']} runs each ({os.cpu_count()} cores). Seconds: median [min, max].",
        "",
        "| method | batch | base seconds | head seconds | head / base samples/s |",
        "|---|---|---|---|---|",
    ]
    for config, runs in data["runs"].items():
        method, batch = config.split(":")
        seconds = {side: [r["seconds"] for r in runs[side]] for side in ("base", "head")}
        ratio = statistics.median(seconds["base"]) / statistics.median(seconds["head"])
        lines.append(
            f"| {method} | {batch} | {_spread(seconds['base'])} | {_spread(seconds['head'])} "
            f"| {ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="the shared data's amazon_beauty")
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--head", default="HEAD", help="the later commit (default: HEAD)")
    parser.add_argument("--configs", nargs="+", default=["rag:8", "dep:8"], help="METHOD:BATCH")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    commits = {side: git("rev-parse", "--short", ref) for side, ref in
               (("base", args.base), ("head", args.head))}  # fmt: skip
    data: dict = {
        "command": "python benchmarks/ab_commits.py " + " ".join(sys.argv[1:]),
        **commits,
        "samples": args.samples,
        "tokens": args.tokens,
        "reps": args.reps,
        "runs": {config: {"base": [], "head": []} for config in args.configs},
    }
    with tempfile.TemporaryDirectory(prefix="ab-commits-") as tmp:
        trees = {side: Path(tmp) / side for side in commits}
        for side, commit in commits.items():
            git("worktree", "add", "--detach", str(trees[side]), commit)
            link_mapped_folders(trees[side])
        try:
            for rep in range(args.reps):
                for config in args.configs:
                    # alternate which commit goes first, so neither always runs warm or cold
                    sides = ("base", "head") if rep % 2 == 0 else ("head", "base")
                    for side in sides:
                        result = one_run(trees[side], Path(tmp) / f"cache-{side}", args, config)
                        data["runs"][config][side].append(result)
                        seconds = result["seconds"]
                        logger.info("%s %s run %d: %.1f s", config, side, rep + 1, seconds)
        finally:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
    out = Path(args.out)
    (out / "ab_commits.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "ab_commits.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
