"""Decode step time at batch 1 and 8 in float32 and bfloat16, and what bf16 changes in the text.

    python benchmarks/bench_decode_dtype.py --data-dir ../shared/data/amazon_beauty

Issue 15's decode goal (a batch-8 step at most 1.5x a batch-1 step) measured per dtype with
``--model_args dtype=...`` of the HF engine: one RAG prompt cut to the RAG prompts' median
length, repeated ``batch`` times, the median of ``--steps`` decode steps after its prefill
(bench_generation.py's physics measurement: the decoder without the LM head). Then greedy
texts of the first ``--samples`` RAG prompts in both dtypes (batch 8, ``--tokens`` new
tokens): how many documents are identical and where the others first differ, since bf16
rounds every weight and activation. Writes results/bench_decode_dtype.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys

from bench_generation import RESULTS, _samples, decode_step_seconds, make_lm

from dep_eval.engine import GenerationSettings, seed_for


def leading_agreement(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="greedy new tokens per text")
    parser.add_argument("--steps", type=int, default=32, help="decode steps timed per batch")
    args = parser.parse_args()
    samples = _samples(args.data_dir, args.samples)
    settings = GenerationSettings(max_new_tokens=args.tokens, do_sample=False)
    seeds = [seed_for(settings.seed, s.key) for s in samples]
    measured: dict = {"dtypes": {}}
    ids: dict[str, list[list[int]]] = {}
    for dtype in ("float32", "bfloat16"):
        lm = make_lm("rag", 8, dtype)
        pool = lm.pool_for(samples[0])
        prompts = [lm.method.build_prompt(sample, pool) for sample in samples]
        rows = [lm.llm.tokenize(p) for p in prompts]
        context = int(statistics.median(map(len, rows)))
        prompt = next(r for r in rows if len(r) >= context)[:context]
        steps = {b: decode_step_seconds(lm.llm, prompt, b, args.steps) * 1000 for b in (1, 8)}
        texts = [g.text for g in lm.llm.generate(prompts, seeds, settings, batch_size=8)]
        ids[dtype] = [lm.llm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        measured["context_tokens"] = context
        measured["dtypes"][dtype] = {
            "decode_step_ms": {str(b): round(v, 1) for b, v in steps.items()},
            "ratio_8_to_1": round(steps[8] / steps[1], 3),
        }
        del lm
    pairs = list(zip(ids["float32"], ids["bfloat16"], strict=True))
    measured["greedy"] = {
        "documents": len(pairs),
        "identical": sum(a == b for a, b in pairs),
        "first_difference_at_token": [leading_agreement(a, b) for a, b in pairs if a != b],
        "tokens_per_text": [len(a) for a, _ in pairs],
        "tokens": args.tokens,
    }
    command = "python benchmarks/bench_decode_dtype.py " + shlex.join(sys.argv[1:])
    (RESULTS / "bench_decode_dtype.json").write_text(json.dumps(measured, indent=2) + "\n")
    lines = [
        "# Decode step by dtype (HF engine, CPU, embedded SmolLM2-135M-Instruct)",
        "",
        f"Command: `{command}`",
        "",
        f"One RAG prompt of {measured['context_tokens']} tokens (the median of the first "
        f"{args.samples} All_Beauty test documents' RAG prompts), repeated per row; median of "
        f"{args.steps} decode steps after the prefill. Goal (issue 15): batch 8 <= 1.5x batch 1.",
        "",
        "| dtype | step at batch 1 (ms) | step at batch 8 (ms) | batch 8 / batch 1 |",
        "|---|---:|---:|---:|",
    ]
    for dtype, row in measured["dtypes"].items():
        step = row["decode_step_ms"]
        lines.append(f"| {dtype} | {step['1']} | {step['8']} | {row['ratio_8_to_1']:.2f}x |")
    greedy = measured["greedy"]
    lines += [
        "",
        f"Greedy texts, {greedy['tokens']} new tokens, batch 8, bfloat16 vs float32: "
        f"{greedy['identical']} of {greedy['documents']} documents identical (texts of "
        f"{greedy['tokens_per_text']} tokens in float32, shorter ones ended at EOS); the others "
        f"first differ at token {greedy['first_difference_at_token']}.",
        "",
    ]
    (RESULTS / "bench_decode_dtype.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
