"""Per-user training cost of an ``lm_eval --model oppu`` run, into results/.

    python benchmarks/oppu_training_cost.py out/oppu-smollm2 --name oppu_training_cost \
        --command "lm_eval --model oppu ..."

Reads the run's samples file (``--log_samples``) for its users and results file for its
costs, and each user's cached LoRA folder (``<cache>/oppu/<user>-<key>/oppu.json``, written
when the LoRA was trained: rows, optimizer steps, losses, seconds). Writes
results/<name>.{json,md}: seconds per user (mean, median, min, max), rows and steps per
user, the run's setup_seconds and seconds_per_sample, the machine's load average now.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the lm_eval output folder of an oppu run")
    parser.add_argument("--name", default="oppu_training_cost")
    parser.add_argument("--cache", type=Path, default=None, help="default: dep-eval's cache")
    parser.add_argument("--command", default="", help="the lm_eval command of the run")
    args = parser.parse_args()
    from dep_eval.cache import cache_dir

    cache = (args.cache or cache_dir()) / "oppu"
    samples = sorted(args.run.rglob("samples_*.jsonl"))
    results = sorted(args.run.rglob("results_*.json"))
    if not samples or not results:
        raise SystemExit(
            f"{args.run}: no samples_*.jsonl / results_*.json (run with --log_samples)"
        )
    users = []
    for line in samples[-1].read_text(encoding="utf-8").splitlines():
        users.append(json.loads(line)["doc"]["user_id"])
    per_user = []
    untrained = []  # users with no review to train on: generated with the plain LLM
    for user in dict.fromkeys(users):
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", user)[:64]
        folders = sorted(cache.glob(f"{slug}-*"))
        if not folders:
            untrained.append(user)
            continue
        if len(folders) > 1:
            raise SystemExit(
                f"user {user}: {len(folders)} cached LoRAs in {cache} (expected one); "
                "summarize a run made with a cache of its own (DEP_EVAL_CACHE_DIR)"
            )
        info = json.loads((folders[0] / "oppu.json").read_text(encoding="utf-8"))
        per_user.append({"user": user, **info})
    seconds = [row["train_seconds"] for row in per_user]
    run = json.loads(results[-1].read_text(encoding="utf-8"))
    metrics = next(iter(run["results"].values()))
    summary = {
        "command": args.command,
        "users": len(per_user),
        "users_without_a_lora": untrained,
        "train_seconds_per_user": {
            "mean": round(statistics.mean(seconds), 2),
            "median": round(statistics.median(seconds), 2),
            "min": round(min(seconds), 2),
            "max": round(max(seconds), 2),
            "total": round(sum(seconds), 2),
        },
        "rows_per_user": [row["examples"] for row in per_user],
        "steps_per_user": [row["steps"] for row in per_user],
        "setup_seconds": metrics.get("setup_seconds,none"),
        "seconds_per_sample": metrics.get("seconds_per_sample,none"),
        "model_args": run.get("config", {}).get("model_args"),
        "load_average_at_summary": [round(x, 2) for x in os.getloadavg()],
        "per_user": per_user,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    s = summary["train_seconds_per_user"]
    lines = [
        f"# OPPU per-user training cost ({args.name})",
        "",
        f"Command: `{args.command}`" if args.command else "",
        "",
        f"- users: {summary['users']}; model_args: `{summary['model_args']}`",
        f"- training seconds per user: mean {s['mean']}, median {s['median']}, "
        f"min {s['min']}, max {s['max']} (total {s['total']})",
        f"- users without a LoRA (no review to train on; plain LLM): "
        f"{len(untrained)} {untrained if untrained else ''}",
        f"- mean loss over users, first -> last optimizer step: "
        f"{statistics.mean(r['losses'][0] for r in per_user):.4f} -> "
        f"{statistics.mean(r['losses'][-1] for r in per_user):.4f}",
        f"- training rows per user: {summary['rows_per_user']}",
        f"- optimizer steps per user: {summary['steps_per_user']}",
        f"- run's setup_seconds: {summary['setup_seconds']}; seconds_per_sample (generation): "
        f"{summary['seconds_per_sample']}",
        f"- load average when summarized (not during training): "
        f"{summary['load_average_at_summary']} (2 cores)",
        "",
        "| user | rows | steps | seconds | first loss | last loss |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['user']} | {r['examples']} | {r['steps']} | {r['train_seconds']} | "
            f"{r['losses'][0]} | {r['losses'][-1]} |"
            for r in per_user
        ),
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
