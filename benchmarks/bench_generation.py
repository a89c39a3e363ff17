"""Generation cost per method: samples/s and peak memory, batch 1 vs batched; the physics.

    python benchmarks/bench_generation.py --data-dir ../shared/data/amazon_beauty \
        --samples 8 --tokens 256 --batch-size 8

Comparisons, each in one run on the same machine (report ratios; machines are noisy):

1. ``nonperso``, ``rag`` and ``dep`` on the first N test documents of the shared data, at
   batch size 1 and batched, EOS disabled (every document gets exactly ``--tokens`` new
   tokens): samples per second, and peak resident memory of a fresh process per
   configuration (so one configuration's peak cannot hide another's).
2. The same prompts, batch size and sampling through transformers' own ``model.generate()``
   (the path lm-eval's ``hf`` model takes; DEP's soft prompts as ``inputs_embeds``), and
   through the engine with ``decode=fixed`` (``engine-fixed``: the fixed-shape steps that a
   GPU replays as a CUDA graph, run eagerly) against its CPU default ``decode=dynamic``.
3. The physics of this machine: fp32 matmul GFLOPS and memory bandwidth; the engine's
   prefill tokens/s and decode step time at batch 1 and batched, at the same context length
   (the RAG prompts' median); and the batched speed-up these imply for a decode that reads
   the weights plus every row's KV cache once per step.
4. DEP's soft slots: the same DEP prompts generated with their slot vectors, and with the
   slot markup removed (identical text otherwise), EOS disabled. Goal: at most 15 % overhead.

Writes results/bench_generation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_lm(method: str, batch_size: int, dtype: str = "auto"):
    try:
        from dep_eval.lm_eval_models import DEPLM, NonPersoLM, RagLM
    except ImportError:  # the registry before it stopped building lm-eval classes (issue 29)
        from dep_eval.baselines.nonperso import NonPersoLM
        from dep_eval.baselines.rag import RagLM

        from dep_eval.dep.method import DEPLM

    cls = {"nonperso": NonPersoLM, "rag": RagLM, "dep": DEPLM}[method]
    # cache=false: every configuration generates every text (no reuse of an earlier run's);
    # DEP uses its shipped checkpoint and the prompt it defines
    return cls(device="cpu", batch_size=batch_size, dtype=dtype, cache="false")


def _samples(data_dir: str, n: int) -> list:
    from dep_eval.data.loaders import load_split, local_source

    return load_split(local_source(data_dir), "All_Beauty", "test")[:n]


def _peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def one_configuration(
    method: str, batch_size: int, data_dir: str, n: int, tokens: int, runner: str, dtype: str
) -> dict:
    """Runs in its own process: time one method at one batch size with one runner."""
    import torch

    from dep_eval.engine import GenerationSettings, seed_for

    torch.manual_seed(0)
    load = os.getloadavg()[0]  # other jobs on the machine: a figure to read the timing by
    samples = _samples(data_dir, n)
    lm = make_lm(method, batch_size, dtype)
    lm.llm.stop_ids = set()  # every document generates exactly `tokens` tokens
    pool = lm.pool_for(samples[0])  # one-off set-up (pool, encodings) is not per-sample cost
    settings = GenerationSettings(max_new_tokens=tokens)
    started = time.perf_counter()
    if runner in ("engine", "engine-fixed"):
        lm.llm.decode = "fixed" if runner == "engine-fixed" else lm.llm.decode
        lm.run(samples, settings, progress=False)
    else:
        prompts = [lm.method.build_prompt(sample, pool) for sample in samples]
        seeds = [seed_for(settings.seed, sample.key) for sample in samples]
        hf_generate(lm.llm, prompts, seeds, settings, batch_size)
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "runner": runner,
        "dtype": dtype,
        "batch_size": batch_size,
        "samples": n,
        "new_tokens": tokens,
        "seconds": round(seconds, 2),
        "samples_per_second": round(n / seconds, 4),
        "peak_rss_mb": _peak_mb(),
        "load_1m": round(load, 1),
    }


def hf_generate(llm, prompts: list, seeds: list[int], settings, batch_size: int) -> list[str]:
    """transformers' ``model.generate()`` on the engine's own inputs (left-padded, longest
    first, soft vectors filled in), EOS disabled, the same temperature and top-p."""
    import torch

    token_ids = [llm.tokenize(prompt) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    texts = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids, mask, _ = llm.left_pad([token_ids[i] for i in batch])
        torch.manual_seed(seeds[batch[0]])  # generate() samples from the global generator
        with torch.no_grad():
            embeds = llm.tokens.embed(input_ids, [prompts[i].soft_vectors for i in batch])
            out = llm.model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                do_sample=settings.do_sample,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=None,
                pad_token_id=llm.tokens.pad_id,
            )
        assert out.shape[1] == settings.max_new_tokens, out.shape  # EOS really disabled
        texts += llm.tokenizer.batch_decode(out, skip_special_tokens=True)
    return texts


def forward(llm, ids: list[list[int]], cache, mask=None, positions=None):
    """One engine forward (no LM head) of ``ids``, left-padded unless ``mask`` is given."""
    import torch

    with torch.no_grad():
        if mask is None:
            input_ids, mask, positions = llm.left_pad(ids)
            embeds = llm.tokens.embedding(input_ids)
        else:
            embeds = llm.tokens.embedding(torch.tensor(ids))
        llm.hidden_states(embeds, positions, mask, cache)
    return mask, positions


def decode_step_seconds(llm, prompt: list[int], batch: int, steps: int) -> float:
    """Median time of a decode step of ``prompt`` repeated ``batch`` times, after its prefill."""
    import torch

    from dep_eval.engine.kv_cache import PreallocatedCache

    cache = PreallocatedCache(llm.model.config.num_hidden_layers, len(prompt) + steps + 1)
    mask, positions = forward(llm, [prompt] * batch, cache)
    token = [[prompt[-1]] for _ in range(batch)]
    times = []
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        started = time.perf_counter()
        forward(llm, token, cache, mask, positions)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def physics(data_dir: str, n: int, batch_size: int, steps: int) -> dict:
    """This machine's matmul GFLOPS and bandwidth; the engine's prefill and decode at batch 1
    and ``batch_size`` on the RAG prompts; the ideal batched speed-up they imply."""
    import torch

    from dep_eval.engine.kv_cache import PreallocatedCache

    def best(fn, repeat: int = 5) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    size = 1536
    a, b = torch.randn(size, size), torch.randn(size, size)
    gflops = 2 * size**3 / best(lambda: a @ b) / 1e9
    big = torch.empty(64 * 2**20)  # 256 MB of float32, far beyond any cache
    target = torch.empty_like(big)
    bandwidth = 2 * big.numel() * 4 / best(lambda: target.copy_(big)) / 1e9  # read + write

    lm = make_lm("rag", batch_size)
    llm = lm.llm
    samples = _samples(data_dir, n)
    pool = lm.pool_for(samples[0])
    rows = [llm.tokenize(lm.method.build_prompt(sample, pool)) for sample in samples]
    config = llm.model.config

    def prefill_tokens_per_second(batch: int, padded: bool) -> float:
        """``padded``: one left-padded forward per group; else the engine's prefill (each row
        alone, assembled into the group's cache)."""
        groups = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        started = time.perf_counter()
        for group in groups:
            if padded:
                cache = PreallocatedCache(config.num_hidden_layers, max(map(len, group)))
                forward(llm, group, cache)
            else:
                input_ids, _, _ = llm.left_pad(group)
                with torch.no_grad():
                    llm.prefill_rows(llm.tokens.embedding(input_ids), list(map(len, group)), 0)
        return sum(map(len, rows)) / (time.perf_counter() - started)

    context = int(statistics.median(map(len, rows)))
    prompt = rows[0][:context] if len(rows[0]) >= context else rows[0]

    prefill = {
        "1": prefill_tokens_per_second(1, padded=False),
        str(batch_size): prefill_tokens_per_second(batch_size, padded=False),
        f"{batch_size} padded": prefill_tokens_per_second(batch_size, padded=True),
    }
    decode = {batch: decode_step_seconds(llm, prompt, batch, steps) for batch in (1, batch_size)}
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    params = sum(p.numel() for p in llm.model.parameters())
    kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_row_bytes = config.num_hidden_layers * 2 * kv_heads * head_dim * context * 4

    def ideal_step(batch: int) -> float:  # memory-bound unless the matmuls take longer
        return max(
            (weight_bytes + batch * kv_row_bytes) / (bandwidth * 1e9),
            2 * params * batch / (gflops * 1e9),
        )

    mean_prompt = statistics.mean(map(len, rows))
    prefill_per_sample = 2 * params * mean_prompt / (gflops * 1e9)  # compute-bound
    ideal_1 = prefill_per_sample + 256 * ideal_step(1)
    ideal_b = prefill_per_sample + 256 * ideal_step(batch_size) / batch_size
    return {
        "matmul_gflops": round(gflops, 1),
        "memory_bandwidth_gb_s": round(bandwidth, 1),
        "weights_mb": round(weight_bytes / 1e6),
        "kv_cache_mb_per_row": round(kv_row_bytes / 1e6, 1),
        "context_tokens": context,
        "mean_prompt_tokens": round(mean_prompt),
        "prefill_tokens_per_second": {k: round(v, 1) for k, v in prefill.items()},
        "decode_step_ms": {str(k): round(v * 1000, 1) for k, v in decode.items()},
        "decode_step_ratio": round(decode[batch_size] / decode[1], 3),
        "ideal_decode_step_ms": {str(k): round(ideal_step(k) * 1000, 1) for k in (1, batch_size)},
        "ideal_speedup_256_tokens": round(ideal_1 / ideal_b, 2),
        "batch_size": batch_size,
    }


def slot_overhead(data_dir: str, n: int, tokens: int, batch_size: int) -> dict:
    """DEP prompts with their slot vectors vs the same prompts without the slot markup."""
    from dep_eval.engine import GenerationSettings, Prompt, seed_for

    samples = _samples(data_dir, n)
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


def in_subprocess(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["nonperso", "rag", "dep"])
    parser.add_argument(
        "--generate-methods", nargs="*", default=["rag", "dep"], help="also via model.generate()"
    )
    parser.add_argument(
        "--fixed-methods", nargs="*", default=["rag", "dep"], help="also with decode=fixed"
    )
    parser.add_argument("--dtypes", nargs="+", default=["auto"], help="e.g. auto bfloat16")
    parser.add_argument("--slot-tokens", type=int, default=32, help="0: skip the slot check")
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--out", default=str(RESULTS), help="folder of bench_generation.*")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "BATCH", "RUNNER", "DTYPE"))
    parser.add_argument("--physics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    command = "python benchmarks/bench_generation.py " + " ".join(sys.argv[1:])
    data_dir = str(Path(args.data_dir).resolve() / "")
    common = ["--data-dir", data_dir, "--samples", str(args.samples), "--tokens", str(args.tokens)]
    if args.one:
        method, batch, runner, dtype = args.one
        result = one_configuration(
            method, int(batch), data_dir, args.samples, args.tokens, runner, dtype
        )
        print(json.dumps(result))
        return
    if args.physics:
        print(json.dumps(physics(data_dir, args.samples, args.batch_size, args.decode_steps)))
        return
    rows = []
    plan = [
        (method, batch, "engine", dtype)
        for dtype in args.dtypes
        for method in args.methods
        for batch in (1, args.batch_size)
    ] + [(method, args.batch_size, "generate", "auto") for method in args.generate_methods]
    plan += [(method, args.batch_size, "engine-fixed", "auto") for method in args.fixed_methods]
    for method, batch, runner, dtype in plan:
        rows.append(in_subprocess(*common, "--one", method, str(batch), runner, dtype))
        print(rows[-1], flush=True)
    measured = in_subprocess(
        *common,
        "--physics",
        "--batch-size",
        str(args.batch_size),
        "--decode-steps",
        str(args.decode_steps),
    )
    print(measured, flush=True)
    slots = (
        slot_overhead(data_dir, args.samples, args.slot_tokens, args.batch_size)
        if args.slot_tokens
        else None
    )
    print(slots, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_generation.json").write_text(
        json.dumps(
            {
                "command": command,
                "throughput": rows,
                "physics": measured,
                "dep_slot_overhead": slots,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "bench_generation.md").write_text(report(command, args, rows, measured, slots))


def _row(rows: list[dict], method: str, batch: int, runner: str = "engine", dtype: str = "auto"):
    return next(
        (
            r
            for r in rows
            if (r["method"], r["batch_size"], r["runner"], r["dtype"])
            == (method, batch, runner, dtype)
        ),
        None,
    )


def report(command: str, args: argparse.Namespace, rows: list[dict], measured: dict, slots) -> str:
    b = args.batch_size
    lines = [
        "# Generation cost per method (CPU, embedded SmolLM2-135M-Instruct)",
        "",
        f"Command: `{command}`",
        "",
        f"First {args.samples} All_Beauty test documents, exactly {args.tokens} new tokens each "
        "(EOS disabled), sampling at temperature 0.8, top-p 0.95; a fresh process per row, so "
        "peak RSS is that configuration's own. `engine` is dep-eval's HF engine, `generate` "
        "transformers' `model.generate()` on the same inputs. `load (1 min)`: the machine's "
        f"1-minute load average as the row started ({os.cpu_count()} cores; above that, other "
        "jobs took a share of them).",
        "",
        "| method | runner | dtype | batch | samples/s | seconds | peak RSS (MB) | load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['method']} | {r['runner']} | {r['dtype']} | {r['batch_size']} | "
            f"{r['samples_per_second']:.3f} | {r['seconds']} | {r['peak_rss_mb']} | "
            f"{r.get('load_1m', 'n/a')} |"
            for r in rows
        ],
        "",
        f"## Batch {b} vs batch 1 (samples/s; goal >= 1.8x)",
        "",
    ]
    for dtype in args.dtypes:
        for method in args.methods:
            one, many = _row(rows, method, 1, dtype=dtype), _row(rows, method, b, dtype=dtype)
            ratio = many["samples_per_second"] / one["samples_per_second"]
            lines.append(f"- {method} ({dtype}): {ratio:.2f}x")
    lines += ["", f"## Engine vs `model.generate()` at batch {b} (samples/s; goal >= 1.0x)", ""]
    for method in args.generate_methods:
        engine, hf = _row(rows, method, b), _row(rows, method, b, "generate")
        lines.append(f"- {method}: {engine['samples_per_second'] / hf['samples_per_second']:.2f}x")
    if args.fixed_methods:
        lines += ["", f"## `decode=fixed` vs the CPU default `decode=dynamic` at batch {b}", ""]
    for method in args.fixed_methods:
        engine, fixed = _row(rows, method, b), _row(rows, method, b, "engine-fixed")
        ratio = fixed["samples_per_second"] / engine["samples_per_second"]
        lines.append(f"- {method}: {ratio:.2f}x the samples/s")
    p = measured
    lines += [
        "",
        "## The physics of this machine",
        "",
        f"- fp32 matmul ({1536}x{1536}): {p['matmul_gflops']} GFLOPS; memory bandwidth (256 MB "
        f"copy, read + write): {p['memory_bandwidth_gb_s']} GB/s",
        f"- weights {p['weights_mb']} MB; KV cache {p['kv_cache_mb_per_row']} MB per row at "
        f"{p['context_tokens']} tokens of context (the RAG prompts' median)",
        f"- prefill (RAG prompts, mean {p['mean_prompt_tokens']} tokens): "
        f"{p['prefill_tokens_per_second']['1']} tokens/s at batch 1, "
        f"{p['prefill_tokens_per_second'][str(b)]} at batch {b} (the engine prefills each row "
        f"alone); one left-padded batch of {b} instead: "
        f"{p['prefill_tokens_per_second'][f'{b} padded']} tokens/s",
        f"- decode step at {p['context_tokens']} tokens of context: "
        f"{p['decode_step_ms']['1']} ms at batch 1, {p['decode_step_ms'][str(b)]} ms at batch {b}: "
        f"{p['decode_step_ratio']:.2f}x (goal <= 1.5x); ideal (weights + KV read once per step at "
        f"the measured bandwidth): {p['ideal_decode_step_ms']['1']} / "
        f"{p['ideal_decode_step_ms'][str(b)]} ms",
        f"- ideal batch-{b} speed-up in samples/s at 256 new tokens (compute-bound prefill, "
        f"memory-bound decode): {p['ideal_speedup_256_tokens']}x",
    ]
    if slots:
        lines += [
            "",
            "## DEP soft slots vs the same prompt text without them",
            "",
            f"Batch {slots['batch_size']}, {slots['samples']} documents, {slots['new_tokens']} "
            f"tokens: {slots['seconds_with_slots']} s with slots vs "
            f"{slots['seconds_without_slots']} s without (best of two each): "
            f"overhead {slots['overhead']:+.1%} (goal: at most +15 %).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
