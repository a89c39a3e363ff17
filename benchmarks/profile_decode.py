"""torch.profiler of decode steps only (after the prefill): DynamicCache vs the engine's
preallocated cache, batch 1 vs 8, one repeated prompt of CONTEXT tokens.

    python benchmarks/profile_decode.py 1000 6 dynamic,prealloc

Prints ms per step and the top operators by self CPU time (a diagnosis, not a benchmark:
the benchmark is bench_generation.py).
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache

from dep_eval.engine.hf import HFEngine
from dep_eval.engine.kv_cache import PreallocatedCache


def main() -> None:
    context, steps, kinds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    llm = HFEngine(device="cpu")
    words = "The cream is nice and smooth and I like the scent of it a lot. " * 200
    ids = llm.tokenizer(words, add_special_tokens=False)["input_ids"][:context]
    layers = llm.model.config.num_hidden_layers

    @torch.no_grad()
    def run(batch: int, kind: str) -> None:
        input_ids, mask, positions = llm.left_pad([ids] * batch)
        cache = DynamicCache() if kind == "dynamic" else PreallocatedCache(layers, context + steps)
        llm.model.base_model(
            inputs_embeds=llm.tokens.embedding(input_ids),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{llm._cache_arg: cache},
        )
        token = llm.tokens.embedding(input_ids[:, -1:])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(steps):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                positions = positions[:, -1:] + 1
                hidden = llm.model.base_model(
                    inputs_embeds=token,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{llm._cache_arg: cache},
                ).last_hidden_state
                llm.last_logits(hidden[:, -1])
            step = (time.perf_counter() - started) / steps
        print(f"== {kind} batch {batch}: {step * 1000:.1f} ms/step (profiled)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))

    for kind in kinds:
        for batch in (1, 8):
            run(batch, kind)


if __name__ == "__main__":
    main()
