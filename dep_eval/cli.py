"""``dep-eval``: the project's command line.

dep-eval lm_eval --model dep --tasks amazon_review_personalized ...
    lm-eval's own CLI with dep-eval's models and tasks registered explicitly: works
    whether or not the start-up hook is active (see dep_eval/_lm_eval_hook.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dep_eval.leaderboard import add_leaderboard_parser
from dep_eval.plots import add_plot_parser
from dep_eval.reproduce import add_reproduce_parser

COMMANDS = {
    "lm_eval": "run lm-eval's CLI with dep-eval's models and tasks registered",
}

TRAIN_EPILOG = """examples:
  # the paper's recipe (the defaults above) on the embedded SmolLM2 + all-MiniLM-L6-v2
  dep-eval train --data-dir ../shared/data/amazon_beauty --category All_Beauty --output runs/beauty
  # the shipped checkpoint's recipe (budget-sized for a CPU: 4 epochs over 64 users, lr 1e-3,
  # slots-only prompts, targets clipped to 128 tokens; about 30 minutes of training here)
  dep-eval train --data-dir ../shared/data/amazon_beauty --category All_Beauty \\
      --output runs/beauty --epochs 4 --lr 0.001 --grad-accum 4 --max-rows 64 \\
      --max-target-tokens 128 --val-rows 32 --val-max-new-tokens 128 --no-text
  # the paper's setting on GPUs (hub data, Qwen2.5-7B, bge-m3, bf16, data parallel)
  accelerate launch -m dep_eval.cli train --pretrained Qwen/Qwen2.5-7B-Instruct \\
      --encoder BAAI/bge-m3 --output runs/paper
"""


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from dep_eval.train.trainer import PAPER_CATEGORIES, TRAINABLE_METHODS, TrainConfig

    defaults = TrainConfig(output="")
    parser = sub.add_parser(
        "train",
        help="train DEP's SAE and aligners (or PPlug's projector) on a frozen LLM",
        description="Train DEP (LLM frozen; SAE + his/diff aligners learn, METHOD.md step 9) "
        "or PPlug (projector + instruction vector). One checkpoint per epoch in "
        "OUTPUT/epoch-N, the best by val METEOR copied to OUTPUT/best, every loss component "
        "per optimizer step in OUTPUT/log.jsonl. Defaults are the paper's.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="run folder (created)")
    parser.add_argument(
        "--method", default="dep", choices=sorted(TRAINABLE_METHODS), help="default: dep"
    )
    parser.add_argument(
        "--data-dir",
        help="local data folder <dir>/<Category>/{train,val,test,meta}.jsonl; "
        "default: $DEP_EVAL_DATA_DIR, else the hub's SnowCharmQ/DPL-main",
    )
    parser.add_argument(
        "--category",
        action="append",
        dest="categories",
        help=f"category to train on, repeatable (default: {', '.join(PAPER_CATEGORIES)})",
    )
    parser.add_argument(
        "--pretrained", help="LLM (hub id or folder); default: the embedded SmolLM2-135M-Instruct"
    )
    parser.add_argument(
        "--encoder", help="sentence-transformers encoder; default: the embedded all-MiniLM-L6-v2"
    )
    for name in (
        "k",
        "sae_dim",
        "epochs",
        "micro_batch_size",
        "grad_accum",
        "max_length",
        "seed",
        "val_rows",
        "val_max_new_tokens",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=getattr(defaults, name),
            help=f"default: {getattr(defaults, name)}",
        )
    for name in ("lr", "weight_decay", "warmup_ratio"):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=getattr(defaults, name),
            help=f"default: {getattr(defaults, name)}",
        )
    parser.add_argument(
        "--max-target-tokens",
        type=int,
        help="clip training targets to this many tokens (default: keep all)",
    )
    parser.add_argument(
        "--max-rows", type=int, help="train on a seeded subset of this many rows (default: all)"
    )
    parser.add_argument(
        "--all-rows", action="store_true", help="train on every row, not one per user"
    )
    parser.add_argument(
        "--no-text",
        dest="with_text",
        action="store_false",
        help="DEP: past reviews in the prompt carry only their slots, not their texts",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: what accelerate picks)")
    parser.add_argument(
        "--dtype", default="auto", help="default: bfloat16 on GPUs, float32 on CPUs"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue OUTPUT after its last complete epoch"
    )


def run_train(args: argparse.Namespace) -> None:
    from dep_eval.train.trainer import PAPER_CATEGORIES, TrainConfig, train

    values = {k: v for k, v in vars(args).items() if k != "command"}
    values["categories"] = tuple(values["categories"] or PAPER_CATEGORIES)
    best = train(TrainConfig(**values))
    logging.getLogger("dep_eval").info("best checkpoint: %s", best)


def run_lm_eval(argv: list[str]) -> None:
    import lm_eval.models
    import lm_eval.tasks.manager

    from dep_eval import _lm_eval_hook

    _lm_eval_hook.register_models(lm_eval.models)
    _lm_eval_hook.patch_task_manager(lm_eval.tasks.manager)  # idempotent
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="dep-eval",
        description="Personalized review generation for lm-evaluation-harness: DEP and baselines.",
        epilog="Run `dep-eval COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=name != "lm_eval")
    add_train_parser(sub)
    add_leaderboard_parser(sub)  # `leaderboard` and `plot` bring their own handler
    add_plot_parser(sub)
    add_reproduce_parser(sub)
    if argv and argv[0] == "lm_eval":
        run_lm_eval(argv[1:])
        return
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is not None:
        handler(args)
        return
    {"train": run_train}[args.command](args)


if __name__ == "__main__":
    main()
