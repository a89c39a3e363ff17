"""Generation cost per method: samples/s and peak memory, batch 1 vs batched; DEP's slots.

    python benchmarks/bench_generation.py --data-dir ../shared/data/amazon_beauty [--samples 16]

Two comparisons, each in one run on the same machine (report ratios; machines are noisy):

1. ``nonperso`` and ``rag`` (and ``dep``) on the first N test documents of the shared data,
   at batch size 1 and batched: samples per second, and peak resident memory of a fresh
   process per configuration (so one configuration's peak cannot hide another's).
2. DEP's soft slots: the same DEP prompts generated with their slot vectors, and with the
   slot markup removed (identical text otherwise), with EOS disabled so both generate
   exactly the same number of tokens. The goal is at most 15 % overhead.

Writes results/bench_generation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_lm(method: str, batch_size: int):  # noqa: ANN201
    from dep_eval.baselines.nonperso import NonPersoLM
    from dep_eval.baselines.rag import RagLM

    from dep_eval.dep.method import DEPLM

    cls = {"nonperso": NonPersoLM, "rag": RagLM, "dep": DEPLM}[method]
    kwargs = {"allow_untrained": True} if method == "dep" and not _shipped() else {}
    return cls(device="cpu", batch_size=batch_size, **kwargs)


def _shipped() -> bool:
    from dep_eval.dep.method import SHIPPED_CHECKPOINT

    return (SHIPPED_CHECKPOINT / "config.json").exists()


def one_configuration(method: str, batch_size: int, data_dir: str, n: int, tokens: int) -> dict:
    """Runs in its own process: time one method at one batch size."""
    import torch

    from dep_eval.data.loaders import load_split, local_source
    from dep_eval.engine import GenerationSettings

    torch.manual_seed(0)
    samples = load_split(local_source(data_dir), "All_Beauty", "test")[:n]
    lm = make_lm(method, batch_size)
    lm.llm.stop_ids = set()  # every document generates exactly `tokens` tokens
    lm.pool_for(samples[0])  # one-off set-up (pool, encodings) is not per-sample cost
    settings = GenerationSettings(max_new_tokens=tokens)
    started = time.perf_counter()
    lm.run(samples, settings, progress=False)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "batch_size": batch_size,
        "samples": n,
        "new_tokens": tokens,
        "seconds": round(seconds, 2),
        "samples_per_second": round(n / seconds, 3),
        "peak_rss_mb": round(peak_mb),
    }


def slot_overhead(data_dir: str, n: int, tokens: int, batch_size: int) -> dict:
    """DEP prompts with their slot vectors vs the same prompts without the slot markup."""
    from dep_eval.data.loaders import load_split, local_source
    from dep_eval.engine import GenerationSettings, Prompt, seed_for

    samples = load_split(local_source(data_dir), "All_Beauty", "test")[:n]
    lm = make_lm("dep", batch_size)
    lm.llm.stop_ids = set()
    pool = lm.pool_for(samples[0])
    settings = GenerationSettings(max_new_tokens=tokens)
    seeds = [seed_for(1234, s.key) for s in samples]
    slot_markup = re.compile(r"Hints: .*?\n|<\|(?:his|diff)_[a-z0-9]+\|>")

    def plain(prompt: Prompt) -> Prompt:
        messages = [{**m, "content": slot_markup.sub("", m["content"])} for m in prompt.messages]
        return Prompt(messages)

    timings = {}
    for label in ("without slots", "with slots", "without slots (again)", "with slots (again)"):
        started = time.perf_counter()
        prompts = [lm.method.build_prompt(sample, pool) for sample in samples]
        if label.startswith("without"):
            prompts = [plain(p) for p in prompts]
        lm.llm.generate(prompts, seeds, settings, batch_size)
        timings[label] = time.perf_counter() - started
    without = min(timings["without slots"], timings["without slots (again)"])
    with_ = min(timings["with slots"], timings["with slots (again)"])
    return {
        "samples": n,
        "new_tokens": tokens,
        "batch_size": batch_size,
        "seconds_without_slots": round(without, 2),
        "seconds_with_slots": round(with_, 2),
        "overhead": round(with_ / without - 1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["nonperso", "rag", "dep"])
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    command = "python benchmarks/bench_generation.py " + " ".join(sys.argv[1:])
    data_dir = str(Path(args.data_dir).resolve() / "")
    if args.one:
        result = one_configuration(
            args.one[0], int(args.one[1]), data_dir, args.samples, args.tokens
        )
        print(json.dumps(result))
        return
    rows = []
    for method in args.methods:
        for batch in (1, args.batch_size):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--data-dir",
                    data_dir,
                    "--samples",
                    str(args.samples),
                    "--tokens",
                    str(args.tokens),
                    "--one",
                    method,
                    str(batch),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    slots = slot_overhead(data_dir, args.samples, args.tokens, args.batch_size)
    print(slots, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_generation.json").write_text(
        json.dumps({"command": command, "throughput": rows, "dep_slot_overhead": slots}, indent=2)
    )
    speedups = {
        m: next(r for r in rows if r["method"] == m and r["batch_size"] != 1)["samples_per_second"]
        / next(r for r in rows if r["method"] == m and r["batch_size"] == 1)["samples_per_second"]
        for m in args.methods
    }
    lines = [
        "# Generation cost per method (CPU, embedded SmolLM2-135M-Instruct)",
        "",
        f"Command: `{command}`",
        "",
        f"First {args.samples} All_Beauty test documents, exactly {args.tokens} new tokens each "
        "(EOS disabled), fresh process per row for peak memory.",
        "",
        "| method | batch | samples/s | seconds | peak RSS (MB) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['method']} | {r['batch_size']} | {r['samples_per_second']:.3f} | "
            f"{r['seconds']} | {r['peak_rss_mb']} |"
            for r in rows
        ],
        "",
        "Batched vs batch 1 (samples/s ratio): "
        + ", ".join(f"{m} {s:.2f}x" for m, s in speedups.items()),
        "",
        "## DEP soft slots vs the same prompt text without them",
        "",
        f"Batch {slots['batch_size']}, {slots['samples']} documents, {slots['new_tokens']} tokens: "
        f"{slots['seconds_with_slots']} s with slots vs {slots['seconds_without_slots']} s without "
        f"(best of two each): overhead {slots['overhead']:+.1%} (goal: at most +15 %).",
        "",
    ]
    (RESULTS / "bench_generation.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
