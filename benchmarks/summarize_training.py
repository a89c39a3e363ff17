"""Summarize a DEP training run folder into results/: speed, losses, selection.

    python benchmarks/summarize_training.py runs/beauty --name shipped_checkpoint

Reads what ``dep-eval train`` wrote (train_config.json, log.jsonl, selection.json) and
writes results/<name>.{json,md}: the command that reproduces the run, training samples per
second per epoch, loss components at the start and end, val METEOR per epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
FLAGS = {
    "epochs": "--epochs",
    "lr": "--lr",
    "grad_accum": "--grad-accum",
    "max_rows": "--max-rows",
    "max_target_tokens": "--max-target-tokens",
    "val_rows": "--val-rows",
    "val_max_new_tokens": "--val-max-new-tokens",
    "k": "--k",
    "seed": "--seed",
    "micro_batch_size": "--micro-batch-size",
    "weight_decay": "--weight-decay",
    "warmup_ratio": "--warmup-ratio",
    "sae_dim": "--sae-dim",
    "max_length": "--max-length",
    "lora_r": "--lora-r",
    "pretrained": "--pretrained",
    "base_adapter": "--base-adapter",
}


def command_of(config: dict) -> str:
    from dep_eval.train.trainer import TrainConfig

    defaults = {**dataclasses.asdict(TrainConfig(output="")), "k": 8, "sae_dim": 512, "lora_r": 0}
    # runs before the registry kept DEP's options at the top level; newer ones nest them
    config = {**config, **config.get("method_options", {})}
    parts = ["dep-eval train"]
    if config.get("method", "dep") != "dep":
        parts.append(f"--method {config['method']}")
    parts.append(f"--data-dir {config['data_dir']}")
    parts += [f"--category {c}" for c in config["categories"]]
    parts.append(f"--output {config['output']}")
    for key, flag in FLAGS.items():
        if key in config and config[key] != defaults[key]:
            parts.append(f"{flag} {config[key]}")
    if not config.get("with_text", True) and config.get("method", "dep") == "dep":
        parts.append("--no-text")
    if config["all_rows"]:
        parts.append("--all-rows")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="training")
    args = parser.parse_args()
    config = json.loads((args.run / "train_config.json").read_text())
    log = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    selection = json.loads((args.run / "selection.json").read_text())
    epochs = sorted({r["epoch"] for r in log})
    per_epoch = []
    for epoch in epochs:
        rows = [r for r in log if r["epoch"] == epoch]
        seconds = rows[-1]["seconds"]
        n = sum(r["rows"] for r in rows)
        per_epoch.append(
            {
                "epoch": epoch,
                "rows": n,
                "seconds": seconds,
                "samples_per_second": round(n / seconds, 4),
                "mean_lm_loss": round(sum(r["lm"] for r in rows) / len(rows), 4),
                "val_meteor": selection["scores"].get(str(epoch), selection["scores"].get(epoch)),
                "peak_rss_mb": rows[-1].get("peak_rss_mb"),
            }
        )
    summary = {
        "command": command_of(config),
        "summary_command": f"python benchmarks/summarize_training.py {args.run} --name {args.name}",
        "best_epoch": selection["best_epoch"],
        "val_rows": selection["val_rows"],
        "train_seconds": round(sum(e["seconds"] for e in per_epoch), 1),
        "epochs": per_epoch,
        "first_step": log[0],
        "last_step": log[-1],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {config.get('method', 'dep').upper()} training run: {args.name}",
        "",
        f"Trained with: `{summary['command']}`",
        "",
        f"Summarized with: `{summary['summary_command']}`",
        "",
        f"Training time: {summary['train_seconds']} s (validation generation not included); "
        f"best epoch by val METEOR on {summary['val_rows']} val rows: {summary['best_epoch']}.",
        "",
        "| epoch | rows | seconds | samples/s | mean LM loss | val METEOR | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {e['epoch']} | {e['rows']} | {e['seconds']} | {e['samples_per_second']} | "
            f"{e['mean_lm_loss']} | {e['val_meteor']:.4f} | {e['peak_rss_mb'] or 'n/a'} |"
            for e in per_epoch
        ],
        "",
        "First and last optimizer step"
        + (
            " (loss = lm + 100 * (reconstruction + 1e-3 * kl)):"
            if "reconstruction" in log[0]
            else " (loss = lm):"
        ),
        "",
        "```",
        json.dumps(log[0]),
        json.dumps(log[-1]),
        "```",
        "",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
