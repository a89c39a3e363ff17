"""``dep-eval``: the project's command line.

dep-eval lm_eval --model dep --tasks amazon_review_personalized ...
    lm-eval's own CLI with dep-eval's models and tasks registered explicitly: works
    whether or not the start-up hook is active (see dep_eval/_lm_eval_hook.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from typing import Any

from dep_eval.data.build import add_build_parser
from dep_eval.leaderboard import add_leaderboard_parser
from dep_eval.plots import add_plot_parser
from dep_eval.report.compare_texts import add_compare_parser
from dep_eval.reproduce import add_reproduce_parser
from dep_eval.train.heldout import add_heldout_parser

COMMANDS = {
    "lm_eval": "run lm-eval's CLI with dep-eval's models and tasks registered",
}

TRAIN_EPILOG = """examples:
  # the shipped checkpoint's recipe (embedded SmolLM2 + all-MiniLM-L6-v2, CPU, ~20 min)
  dep-eval train --data-dir ../shared/data/amazon_beauty --category All_Beauty \\
      --output runs/beauty --epochs 1 --lr 0.001 --grad-accum 4 --all-rows \\
      --max-target-tokens 128 --val-rows 32 --val-max-new-tokens 128 --no-text
  # the paper's defaults (every option at its default) on GPUs: hub data, Qwen2.5-7B, bge-m3
  accelerate launch -m dep_eval.cli train --pretrained Qwen/Qwen2.5-7B-Instruct \\
      --encoder BAAI/bge-m3 --output runs/paper
  # DEP with a LoRA of the LLM trained jointly (rank 8 on q_proj, v_proj)
  dep-eval train --data-dir ../shared/data/amazon_beauty --category All_Beauty \\
      --output runs/dep-lora --lora-r 8 ...the shipped recipe's options...
  # OPPU's shared task LoRA (then: --model oppu --model_args base_adapter=runs/oppu-base);
  # unless given, --epochs 3, --lr 1e-4, --weight-decay 0.01, --warmup-ratio 0.1,
  # --max-target-tokens 128 and --all-rows are OPPU's task LoRA defaults here
  dep-eval train --method oppu-base --data-dir ../shared/data/amazon_beauty \\
      --category All_Beauty --output runs/oppu-base --max-rows 128
"""


def add_dataclass_arguments(group: Any, config_class: type, **argparse_options: Any) -> list[str]:
    """One ``--option`` per field of ``config_class``, typed and documented from the field.

    Bools become ``--x/--no-x``; ``tuple[str, ...]`` a repeatable option; a field's metadata
    may rename the flag (``"flag"``) or leave it out (``"cli": False``). Returns the names of
    the fields added, so the caller can build ``config_class`` back from the namespace.
    """
    hints = typing.get_type_hints(config_class)
    added = []
    for spec in dataclasses.fields(config_class):
        if not spec.metadata.get("cli", True):
            continue
        flag = "--" + spec.metadata.get("flag", spec.name).replace("_", "-")
        kind = hints[spec.name]
        options = typing.get_args(kind)
        if type(None) in options:  # X | None
            kind = next(option for option in options if option is not type(None))
        has_default = spec.default is not dataclasses.MISSING
        default = spec.default if has_default else None
        help_text = spec.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": spec.name, **argparse_options}
        if kind is bool:
            kwargs |= {"action": argparse.BooleanOptionalAction}
        elif typing.get_origin(kind) is tuple:
            kwargs |= {"action": "append", "metavar": flag[2:].upper()}
            default = None  # append would add to the default rather than replace it
        else:
            kwargs |= {"type": kind, "metavar": spec.name.upper()}
        if not has_default:
            kwargs["required"] = True
        elif "default" not in argparse_options:
            kwargs["default"] = default
        if kind is bool and has_default:
            help_text += f" (default: {flag if spec.default else flag.replace('--', '--no-', 1)})"
        elif has_default and spec.default is not None and "default:" not in help_text:
            shown = ", ".join(spec.default) if isinstance(spec.default, tuple) else spec.default
            help_text += f" (default: {shown})"
        group.add_argument(flag, help=help_text or None, **kwargs)
        added.append(spec.name)
    return added


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from dep_eval import registry
    from dep_eval.train.trainer import TrainConfig

    trainable = {name: spec for name, spec in registry.methods().items() if spec.trainable}
    parser = sub.add_parser(
        "train",
        help="train DEP's SAE and aligners (or PPlug's projector) on a frozen LLM",
        description="Train a method's small module on a frozen LLM: DEP (SAE + his/diff "
        "aligners, docs/method.md step 9) or PPlug (projector + instruction vector), optionally "
        "with a LoRA of the LLM (--lora-r); or OPPU's shared task LoRA (--method oppu-base). One "
        "checkpoint per epoch in OUTPUT/epoch-N, the best by val METEOR copied to OUTPUT/best, "
        "every loss component per optimizer step in OUTPUT/log.jsonl. Every default is the "
        "paper's; the shipped checkpoint used the budget recipe of the first example below.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generic = add_dataclass_arguments(parser, TrainConfig)
    parser.set_defaults(handler=run_train, generic_fields=generic)
    # a method's extra targets (OPPU's task LoRA, oppu-base) are trained by the method's code
    targets = registry.train_targets()
    parser._option_string_actions["--method"].choices = [*sorted(trainable), *targets]
    seen = set(generic)
    for name, spec in trainable.items():
        fields = [f for f in dataclasses.fields(spec.method_class.TrainArgs) if f.name not in seen]
        if not fields:
            continue
        group = parser.add_argument_group(f"{spec.label} options (--method {name})")
        seen.update(
            add_dataclass_arguments(group, spec.method_class.TrainArgs, default=argparse.SUPPRESS)
        )


def run_train(args: argparse.Namespace) -> None:
    from dep_eval import registry
    from dep_eval.train.trainer import PAPER_CATEGORIES, TrainConfig, train, trainable_method

    values = vars(args)
    generic = {name: values[name] for name in args.generic_fields}
    generic["categories"] = tuple(generic["categories"] or PAPER_CATEGORIES)
    target = registry.train_targets().get(generic["method"])
    if target is not None:
        run_train_target(args, generic, target)
        return
    own = {f.name for f in dataclasses.fields(trainable_method(generic["method"]).TrainArgs)}
    method_options = {
        name: value
        for name, value in values.items()
        if name not in generic and name not in {"command", "handler", "generic_fields", "argv"}
    }
    foreign = sorted(set(method_options) - own)
    if foreign:
        flags = {
            spec.name: "--" + spec.metadata.get("flag", spec.name).replace("_", "-")
            for method in registry.methods().values()
            if method.trainable
            for spec in dataclasses.fields(method.method_class.TrainArgs)
        }
        raise SystemExit(
            f"dep-eval train: --method {generic['method']} has no option(s) "
            + ", ".join(flags[name] for name in foreign)
        )
    best = train(TrainConfig(**generic, method_options=method_options))
    logging.getLogger("dep_eval").info("best checkpoint: %s", best)


def _given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the command line named the option of ``dest`` (not its default)."""
    from dep_eval.train.trainer import TrainConfig

    spec = next(f for f in dataclasses.fields(TrainConfig) if f.name == dest)
    flag = "--" + spec.metadata.get("flag", dest).replace("_", "-")
    flags = (flag, flag.replace("--", "--no-", 1))
    return any(arg in flags or arg.startswith(flag + "=") for arg in args.argv)


def run_train_target(args: argparse.Namespace, generic: dict[str, Any], target: Any) -> None:
    """``dep-eval train --method TARGET``: a method's ``registry.TrainTarget``."""
    values = vars(args)
    named = sorted(
        name
        for name in values
        if name not in generic and name not in {"command", "handler", "generic_fields", "argv"}
    )
    unused = [dest for dest in target.unused if _given(args, dest)]
    if named or unused:
        flags = ["--" + name.replace("_", "-") for name in [*named, *unused]]
        raise SystemExit(
            f"dep-eval train --method {target.name} has no use for {', '.join(flags)}: it "
            f"trains {target.trains}"
        )
    given = frozenset(dest for dest in generic if _given(args, dest))
    folder = target.train(generic, given)
    logging.getLogger("dep_eval").info("%s: %s", target.name, folder)


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
    add_build_parser(sub)
    add_heldout_parser(sub)
    add_compare_parser(sub)
    if argv and argv[0] == "lm_eval":
        run_lm_eval(argv[1:])
        return
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is not None:
        handler(args)
        return
    raise AssertionError(f"command {args.command} has no handler")


if __name__ == "__main__":
    main()
