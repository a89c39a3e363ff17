"""How likely each method's prompt makes the real review: held-out NLL of the targets.

    python benchmarks/heldout_nll.py --data-dir ../shared/data/amazon_beauty \\
        --model nonperso --model "dep:with_text=false" --model "dep:checkpoint=runs/x/best"

Generation metrics on a few hundred reviews from a 135M model are noisy; the negative
log-likelihood of the reference review under each method's final prompt is not, and it is
what training minimises. A personalization method earns its keep here if the true review of
a user becomes *more likely* with its prompt than with the non-personalized one. The first
``--model`` is the reference for the paired comparison (rows where another model is lower).

Teacher-forced, one row at a time (no padding), targets clipped to ``--max-target-tokens``
plus EOS exactly as ``dep-eval train`` does. One-call methods only (``build_prompt``).
Writes results/heldout_nll_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

RESULTS = Path(__file__).resolve().parents[1] / "results"


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
    return name, kwargs


def make_lm(spec: str):  # noqa: ANN201
    """An lm-eval model of this package from a ``--model`` spec, on the CPU."""
    import lm_eval.api.registry as registry

    name, kwargs = parse_model_spec(spec)
    return registry.get_model(name)(device="cpu", **kwargs)


def target_nll(lm, samples, pool, max_target_tokens: int) -> list[tuple[float, int]]:  # noqa: ANN001
    """(summed NLL in nats, token count) of each sample's target under the method's prompt."""
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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="shared data folder")
    parser.add_argument("--category", default="All_Beauty")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--rows", type=positive_int, default=100, help="first N rows of the split")
    parser.add_argument("--max-target-tokens", type=positive_int, default=128)
    parser.add_argument(
        "--model", action="append", required=True, help="name[:key=value,...]; repeatable"
    )
    parser.add_argument("--name", default="dep", help="suffix of the results files")
    args = parser.parse_args(argv)
    for spec in args.model:
        try:
            parse_model_spec(spec)
        except ValueError as error:
            parser.error(str(error))

    from dep_eval.data.loaders import load_split, resolve_source

    source = resolve_source({"data_dir": args.data_dir})
    samples = load_split(source, args.category, args.split)[: args.rows]
    if not samples:
        raise SystemExit(f"{args.data_dir}: the {args.category} {args.split} split has no rows")
    rows: dict[str, list[tuple[float, int]]] = {}
    seconds: dict[str, float] = {}
    for spec in args.model:
        lm = make_lm(spec)
        pool = lm.pool_for(samples[0])
        started = time.perf_counter()
        rows[spec] = target_nll(lm, samples, pool, args.max_target_tokens)
        seconds[spec] = time.perf_counter() - started
        del lm

    reference = args.model[0]
    summary = []
    for spec, values in rows.items():
        tokens = sum(n for _, n in values)
        nll = sum(v for v, _ in values) / tokens
        per_row = [v / n for v, n in values]
        ref_row = [v / n for v, n in rows[reference]]
        lower = sum(a < b for a, b in zip(per_row, ref_row, strict=True))
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
                "rows_lower_than_reference": lower,
                "seconds_per_row": round(seconds[spec] / len(values), 2),
                "row_nll_per_token": [round(v, 4) for v in per_row],  # for later pairing
            }
        )

    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/heldout_nll.py " + shlex.join(given)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"heldout_nll_{args.name}.json").write_text(
        json.dumps({"command": command, "split": args.split, "summary": summary}, indent=2) + "\n"
    )
    lines = [
        f"# Held-out NLL of the reference reviews: {args.name}",
        "",
        f"Command: `{command}`",
        "",
        f"{args.category} {args.split} split, first {args.rows} rows, targets clipped to "
        f"{args.max_target_tokens} tokens + EOS. Lower is better. Paired differences are "
        f"per-row mean NLL per token minus the reference's (`{reference}`), with their "
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
    (RESULTS / f"heldout_nll_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
