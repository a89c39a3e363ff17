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

COMMANDS = {
    "lm_eval": "run lm-eval's CLI with dep-eval's models and tasks registered",
}


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
    add_leaderboard_parser(sub)  # `leaderboard` and `plot` bring their own handler
    add_plot_parser(sub)
    if argv and argv[0] == "lm_eval":
        run_lm_eval(argv[1:])
        return
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "handler", None)
    if handler is not None:
        handler(args)
        return


if __name__ == "__main__":
    main()
