"""Held-out NLL: how likely each method's prompt makes the real review.

    dep-eval heldout-nll --data-dir ../shared/data/amazon_beauty \\
        --model nonperso --model dep --model "dep:checkpoint=runs/x/best"

Generation metrics on a hundred reviews from a 135M model are noisy; the negative
log-likelihood of the reference review under each method's final prompt is not, and it is
what training minimises. It is how checkpoints are chosen here (docs/training.md): a
personalization method earns its keep if the user's true review becomes *more likely* with
its prompt than with the non-personalized one. The first ``--model`` is the reference of
the paired comparison (per-row differences, their standard error, rows lower).

Teacher-forced, one row at a time (no padding), targets clipped to ``--max-target-tokens``
plus EOS exactly as ``dep-eval train`` does, on the HF engine. One-call methods only
(``build_prompt``). Writes ``RESULTS/NAME.json`` and ``RESULTS/NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

from dep_eval.io import atomic_write

logger = logging.getLogger(__name__)

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = """\
examples:
  # the shipped DEP against Non-Perso on the first 100 val reviews (results/heldout_nll.md)
  dep-eval heldout-nll --data-dir ../shared/data/amazon_beauty --rows 100 \\
      --model nonperso --model dep
  # a trained checkpoint and an ablation, into a file of their own
  dep-eval heldout-nll --data-dir DIR --model nonperso \\
      --model "dep:checkpoint=runs/x/best" --model "dep:use_his=false" --name heldout_nll_x"""


def parse_model_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name:key=value,key=value`` -> (name, model arguments)."""
    name, _, args = spec.partition(":")
    kwargs = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(
                f"--model {spec!r}: {item!r} is not key=value; "
                "write e.g. --model 'dep:with_text=false,k=1'"
            )
        kwargs[key] = value
    if kwargs.get("backend", "hf") != "hf":
        raise ValueError(
            f"--model {spec!r}: the held-out NLL needs the HF engine's teacher-forced loss; "
            "drop backend= (backend=hf is used)"
        )
    return name, kwargs


def make_lm(spec: str, device: str = "cpu") -> Any:
    """This package's lm-eval model for a ``--model`` spec, on the HF engine."""
    import lm_eval.models
    from lm_eval.api import registry

    from dep_eval import _lm_eval_hook

    _lm_eval_hook.register_models(lm_eval.models)  # whether or not the start-up hook ran
    name, kwargs = parse_model_spec(spec)
    return registry.get_model(name)(**{"device": device, **kwargs, "backend": "hf"})


def target_nll(
    lm: Any, samples: list[Any], pool: Any, max_target_tokens: int
) -> list[tuple[float, int]]:
    """(summed NLL in nats, token count) of each sample's target under the method's prompt."""
    import torch
    from tqdm.auto import tqdm

    llm = lm.llm
    tokenizer = llm.tokenizer
    out = []
    for sample in tqdm(samples, desc=lm.method.name, leave=False):
        with torch.no_grad():
            prompt = lm.method.build_prompt(sample, pool)
            target = tokenizer(sample.target.text, add_special_tokens=False)["input_ids"]
            target = target[:max_target_tokens] + [tokenizer.eos_token_id]
            mean = llm.target_loss([prompt], [target])
        out.append((float(mean) * len(target), len(target)))
    return out


def summarize(
    rows: dict[str, list[tuple[float, int]]], seconds: dict[str, float], reference: str
) -> list[dict[str, Any]]:
    """Per model: NLL per token over all tokens, and per-row differences from ``reference``."""
    ref_row = [v / n for v, n in rows[reference]]
    summary = []
    for spec, values in rows.items():
        tokens = sum(n for _, n in values)
        nll = sum(v for v, _ in values) / tokens
        per_row = [v / n for v, n in values]
        diffs = [a - b for a, b in zip(per_row, ref_row, strict=True)]
        mean_diff = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean_diff) ** 2 for d in diffs) / max(1, len(diffs) - 1))
        summary.append(
            {
                "model": spec,
                "rows": len(values),
                "tokens": tokens,
                "nll_per_token": round(nll, 4),
                "perplexity": round(math.exp(nll), 2),
                "mean_row_diff_vs_reference": round(mean_diff, 4),
                "stderr_row_diff": round(sd / math.sqrt(len(diffs)), 4),
                "rows_lower_than_reference": sum(d < 0 for d in diffs),
                "seconds_per_row": round(seconds[spec] / len(values), 2),
                "row_nll_per_token": [round(v, 4) for v in per_row],  # for later pairing
            }
        )
    return summary


def markdown(args: argparse.Namespace, command: str, summary: list[dict[str, Any]]) -> str:
    lines = [
        f"# Held-out NLL of the reference reviews: {args.name}",
        "",
        f"Command: `{command}`",
        "",
        f"{args.category} {args.split} split, first {args.rows} rows, targets clipped to "
        f"{args.max_target_tokens} tokens + EOS. Lower is better. Paired differences are "
        f"per-row mean NLL per token minus the reference's (`{args.model[0]}`), with their "
        "standard error.",
        "",
        "| model | NLL/token | perplexity | diff vs reference | stderr | rows lower | s/row |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| `{s['model']}` | {s['nll_per_token']:.4f} | {s['perplexity']:.2f} | "
            f"{s['mean_row_diff_vs_reference']:+.4f} | {s['stderr_row_diff']:.4f} | "
            f"{s['rows_lower_than_reference']}/{s['rows']} | {s['seconds_per_row']} |"
        )
    return "\n".join(lines) + "\n"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_heldout_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "heldout-nll",
        help="held-out NLL of the real reviews under each method's prompt",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="<dir>/<Category>/{...}.jsonl")
    parser.add_argument("--category", default="All_Beauty")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--rows", type=positive_int, default=100, help="first N rows of the split")
    parser.add_argument("--max-target-tokens", type=positive_int, default=128)
    parser.add_argument(
        "--model", action="append", required=True, help="name[:key=value,...]; repeatable"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--name", default="heldout_nll", help="stem of the two output files")
    parser.set_defaults(handler=run_heldout)
    return parser


def run_heldout(args: argparse.Namespace) -> None:
    """``dep-eval heldout-nll``: score every ``--model``, write the JSON and the table."""
    for spec in args.model:  # before any model loads
        try:
            parse_model_spec(spec)
        except ValueError as error:
            raise SystemExit(f"dep-eval heldout-nll: {error}") from error
    from dep_eval.data.loaders import load_split, resolve_source

    source = resolve_source({"data_dir": args.data_dir})
    samples = load_split(source, args.category, args.split)[: args.rows]
    if not samples:
        raise SystemExit(f"{args.data_dir}: the {args.category} {args.split} split has no rows")
    rows: dict[str, list[tuple[float, int]]] = {}
    seconds: dict[str, float] = {}
    for spec in args.model:
        lm = make_lm(spec, args.device)
        pool = lm.pool_for(samples[0])
        started = time.perf_counter()
        rows[spec] = target_nll(lm, samples, pool, args.max_target_tokens)
        seconds[spec] = time.perf_counter() - started
        logger.info("%s: %.1f s for %d rows", spec, seconds[spec], len(samples))
        del lm
    summary = summarize(rows, seconds, args.model[0])
    command = shlex.join(["dep-eval", *getattr(args, "argv", ["heldout-nll"])])
    args.results.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "split": args.split, "summary": summary}
    atomic_write(args.results / f"{args.name}.json", json.dumps(record, indent=2) + "\n")
    table = markdown(args, command, summary)
    atomic_write(args.results / f"{args.name}.md", table)
    print(table, end="")
