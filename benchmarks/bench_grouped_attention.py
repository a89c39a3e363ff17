"""The HF engine's decode step with transformers' sdpa vs ``engine/grouped_attention.py``.

    .venv-vllm/bin/python benchmarks/bench_grouped_attention.py

Below transformers 5.23 (the vLLM extra pins < 5.20; the GPU image has 5.17), sdpa copies
every KV head once per query head of its group at each decode step of a padded batch; the
engine then installs ``grouped_attention``, which attends over the cache as it is. This times
one decode step (the CPU's route, ``decode=dynamic``) both ways on one engine, runs
alternating (``--reps``), and checks that the logits agree. Run it under the transformers to
be judged: from 5.23 on, transformers packs the heads itself and both arms are the same code.

The rows are random token ids of set lengths: a step's time depends on the batch and on how
many positions each row attends to, not on which tokens they are. Row b is ``16 * b`` tokens
shorter than the context, so every batch above 1 is padded (a batch of one is not, and then
sdpa's own grouped kernel copies nothing either).

Writes ``OUT/bench_grouped_attention.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dep_eval.engine import grouped_attention  # noqa: E402
from dep_eval.engine.hf import HFEngine  # noqa: E402
from dep_eval.io import atomic_write  # noqa: E402

logger = logging.getLogger("bench_grouped_attention")
ARMS = ("sdpa", grouped_attention.NAME)


def step_times(
    engine: HFEngine, lengths: list[int], steps: int, attention: str
) -> tuple[list[float], torch.Tensor]:
    """Seconds of each decode step after ``lengths``' rows are prefilled (the first two steps
    are warm-up and not counted), and the last step's logits (B, vocab)."""
    engine.model.config._attn_implementation = attention
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(100, 30000, (n,), generator=generator).tolist() for n in lengths]
    seconds = []
    with torch.no_grad():
        decoder, hidden, positions = engine.start_decoding(
            ids, [None] * len(ids), steps + 2, "dynamic"
        )
        picks = engine.last_logits(hidden).argmax(-1)  # (B,)
        for step in range(steps + 2):
            started = time.perf_counter()
            logits = decoder.step(picks, positions + 1 + step)
            if step >= 2:
                seconds.append(time.perf_counter() - started)
            picks = logits.argmax(-1)
    return seconds, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a local folder (default: embedded)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 1400])
    parser.add_argument("--steps", type=int, default=12, help="timed decode steps per run")
    parser.add_argument("--reps", type=int, default=3, help="runs per arm, alternating")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    import transformers

    engine = HFEngine(pretrained=args.model, device="cpu", dtype="float32")
    grouped_attention.install(engine.model)  # registers the name; each run sets its arm
    config = engine.model.config
    rows = []
    for context in args.contexts:
        for batch in args.batches:
            lengths = [context - 16 * b for b in range(batch)]
            per_arm: dict[str, list[float]] = {arm: [] for arm in ARMS}
            logits: dict[str, torch.Tensor] = {}
            for rep in range(args.reps):
                for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:
                    seconds, logits[arm] = step_times(engine, lengths, args.steps, arm)
                    per_arm[arm].append(statistics.median(seconds) * 1000)
            ms = {arm: statistics.median(values) for arm, values in per_arm.items()}
            row = {
                "context": context,
                "batch": batch,
                "sdpa_ms": round(ms["sdpa"], 2),
                "grouped_ms": round(ms[grouped_attention.NAME], 2),
                "sdpa_runs_ms": [round(x, 2) for x in per_arm["sdpa"]],
                "grouped_runs_ms": [round(x, 2) for x in per_arm[grouped_attention.NAME]],
                "speedup": round(ms["sdpa"] / ms[grouped_attention.NAME], 2),
                "max_logit_difference": float(
                    (logits["sdpa"] - logits[grouped_attention.NAME]).abs().max()
                ),
            }
            rows.append(row)
            logger.info("%s", row)

    python = Path(sys.executable)  # which environment's transformers is the point
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    command = f"{python} benchmarks/bench_grouped_attention.py " + " ".join(sys.argv[1:])
    data = {
        "command": command.strip(),
        "settings": vars(args),
        "model": engine.name,
        "heads": [config.num_attention_heads, config.num_key_value_heads],
        "layers": config.num_hidden_layers,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "bench_grouped_attention.json", json.dumps(data, indent=1) + "\n")
    atomic_write(out / "bench_grouped_attention.md", report(data))
    logger.info("wrote %s", out / "bench_grouped_attention.md")


def report(data: dict) -> str:
    heads, kv_heads = data["heads"]
    lines = [
        "# A decode step: transformers' sdpa vs the engine's grouped attention",
        "",
        f"Command: `{data['command']}`",
        "",
        f"{data['model']} ({data['layers']} layers, {heads} query heads sharing {kv_heads} KV "
        f"heads), float32 on the CPU ({data['threads']} threads), torch {data['torch']}, "
        f"transformers {data['transformers']}. One decode step of the engine's CPU route "
        "(`decode=dynamic`) after a prefill of random token ids; row b is 16 b tokens shorter "
        "than the context, so batches above 1 are padded. Median ms per step over "
        f"{data['settings']['steps']} steps, then the median of "
        f"{data['settings']['reps']} runs per arm, the arms alternating (all runs listed).",
        "",
        "| context | batch | sdpa (ms) | grouped (ms) | sdpa / grouped | runs, sdpa | runs, "
        "grouped | max logit difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| {row['context']} | {row['batch']} | {row['sdpa_ms']} | {row['grouped_ms']} | "
            f"{row['speedup']}x | {row['sdpa_runs_ms']} | {row['grouped_runs_ms']} | "
            f"{row['max_logit_difference']:.1e} |"
        )
    lines += [
        "",
        "From transformers 5.23 on, sdpa packs a step's grouped heads itself and the engine "
        "keeps it, so there both arms run the same computation.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
