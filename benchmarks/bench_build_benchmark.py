"""Benchmark: ``dep-eval build-benchmark`` on synthetic raw files of 0.1 M, 1 M and 5 M reviews.

The raw files are generated in the Amazon Reviews 2023 schema (every field of a review and
of a meta row; plain JSON lines as on the hub, .gz input is covered by the tests), seeded,
with skewed distributions so that the recipe has work to do and a good share survives: heavy
users (log-normal review counts around 40) hold half of the reviews, casual users (1-4
reviews) the rest; heavy users favour popular items (Zipf-like); text lengths are
log-normal (about a fifth under 200 characters); 2% of texts are one stock text (text
duplicates) and users repeat items (asin duplicates); some items lack a description or a
rating count. numpy draws the numbers and DuckDB writes the JSON lines, so generating 5 M
reviews takes minutes at most, not a Python loop over rows.

Each build runs as its own process (the real command line); its wall time and peak RSS
(``os.wait4``'s ru_maxrss, the process alone) are recorded.

    nice -n 10 python benchmarks/bench_build_benchmark.py [--sizes 100000 1000000 5000000]
        [--memory-limit 4GB] [--threads 2] [--work DIR]

Writes results/bench_build_benchmark.json and .md; the generated and built files are
removed afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CATEGORY = "Synthetic"
logger = logging.getLogger("bench_build_benchmark")

PHRASES = [
    "I bought this for my daughter and she loves it. ",
    "The quality is better than I expected for the price. ",
    "Shipping was fast and the packaging was fine. ",
    "It stopped working after two weeks, which is disappointing. ",
    "Works exactly as described, no complaints at all. ",
    "The colour is a bit different from the pictures. ",
    "Setup took five minutes and the instructions were clear. ",
    "I would buy it again and recommend it to friends. ",
    "Smaller than I thought, so check the dimensions first. ",
    "After a month of daily use it still looks new. ",
]


def generate(folder: Path, n_reviews: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``reviews.jsonl`` and ``meta.jsonl`` with ``n_reviews`` reviews."""
    import duckdb
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    # Users: heavy ones hold about half of the reviews, the rest are casual.
    heavy_target = int(n_reviews * 0.5)
    heavy = np.clip(np.rint(rng.lognormal(np.log(40), 0.6, heavy_target // 20)), 5, 800)
    heavy = heavy[np.cumsum(heavy) <= heavy_target].astype(np.int64)
    casual_target = n_reviews - int(heavy.sum())
    casual = rng.integers(1, 5, casual_target).astype(np.int64)
    casual = casual[np.cumsum(casual) <= casual_target]
    counts = np.concatenate([heavy, casual, [n_reviews - heavy.sum() - casual.sum()]])
    counts = counts[counts > 0]
    users = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(users)  # the raw file is in no particular user order
    # Items: heavy users mostly review popular items (Zipf-like), casual ones anything.
    n_items = max(n_reviews // 60, 50)
    weights = 1.0 / (np.arange(n_items) + 10.0)
    is_heavy = np.isin(users, np.arange(len(heavy)))
    items = rng.integers(0, n_items, n_reviews)
    items[is_heavy] = rng.choice(n_items, int(is_heavy.sum()), p=weights / weights.sum())
    reviews = pa.table(
        {
            "id": np.arange(n_reviews),
            "user": users,
            "item": items,
            "timestamp": rng.integers(1_200_000_000_000, 1_690_000_000_000, n_reviews),
            "length": np.clip(np.rint(rng.lognormal(np.log(330), 0.6, n_reviews)), 20, 5000),
            "phrase": rng.integers(0, len(PHRASES), n_reviews),
            "pasted": rng.random(n_reviews) < 0.02,  # one stock text, so text duplicates
            "rating": rng.choice(
                [1.0, 2.0, 3.0, 4.0, 5.0], n_reviews, p=[0.07, 0.05, 0.08, 0.15, 0.65]
            ),
            "no_title": rng.random(n_reviews) < 0.005,
            "votes": rng.poisson(0.8, n_reviews),
        }
    )
    meta = pa.table(
        {
            "item": np.arange(n_items),
            "desc_length": np.clip(np.rint(rng.lognormal(np.log(600), 0.9, n_items)), 0, 6000),
            "no_description": rng.random(n_items) < 0.12,
            "rating_number": rng.integers(1, 5000, n_items),
            "no_rating_number": rng.random(n_items) < 0.03,
        }
    )
    phrases = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in PHRASES) + "]"
    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
    con.register("reviews_np", reviews)
    con.register("meta_np", meta)
    reviews_path, meta_path = folder / "reviews.jsonl", folder / "meta.jsonl"
    con.execute(f"""
        COPY (
            SELECT rating,
                   CASE WHEN no_title THEN '' ELSE 'Review title ' || (id % 997) END AS title,
                   CASE WHEN pasted THEN repeat('Great product, five stars from me. ', 9)
                        ELSE substr('Review ' || id || ': '
                                    || repeat({phrases}[phrase + 1], 100), 1, length::INT)
                   END AS text,
                   []::VARCHAR[] AS images,
                   'B' || lpad((item * 3 + id % 3)::VARCHAR, 9, '0') AS asin,
                   'P' || lpad(item::VARCHAR, 9, '0') AS parent_asin,
                   'AG' || lpad(user::VARCHAR, 26, '0') AS user_id,
                   timestamp, votes AS helpful_vote, id % 10 <> 0 AS verified_purchase
            FROM reviews_np ORDER BY id
        ) TO '{reviews_path}' (FORMAT json)""").fetchall()
    con.execute(f"""
        COPY (
            SELECT 'Synthetic' AS main_category, 'Item ' || item AS title,
                   4.1 AS average_rating,
                   CASE WHEN no_rating_number THEN NULL ELSE rating_number END AS rating_number,
                   ['Sturdy', 'Light'] AS features,
                   CASE WHEN no_description THEN []::VARCHAR[]
                        ELSE ['Product Description',
                              substr(repeat('A useful thing for the home. ', 250), 1,
                                     desc_length::INT)] END AS description,
                   19.99 AS price, []::VARCHAR[] AS images, []::VARCHAR[] AS videos,
                   'Shop ' || (item % 50) AS store, ['Synthetic', 'Things'] AS categories,
                   {{'Brand': 'Acme'}} AS details,
                   'P' || lpad(item::VARCHAR, 9, '0') AS parent_asin,
                   NULL::VARCHAR AS bought_together
            FROM meta_np ORDER BY item
        ) TO '{meta_path}' (FORMAT json)""").fetchall()
    con.close()
    return reviews_path, meta_path


def run_build(
    reviews: Path, meta: Path, output: Path, memory_limit: str, threads: int
) -> dict[str, float]:
    """The real command line in its own process: wall time and that process's peak RSS."""
    command = [
        sys.executable, "-m", "dep_eval.cli", "build-benchmark",
        "--reviews", str(reviews), "--meta", str(meta), "--category", CATEGORY,
        "--output", str(output), "--memory-limit", memory_limit, "--threads", str(threads),
    ]  # fmt: skip
    start = time.perf_counter()
    log = output.parent / "build.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed ({command}):\n{log.read_text()[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"build_s": seconds, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.work))
    rows = []
    try:
        for size in args.sizes:
            folder = work / str(size)
            folder.mkdir()
            start = time.perf_counter()
            reviews, meta = generate(folder, size)
            generated = time.perf_counter() - start
            measured = run_build(reviews, meta, folder / "data", args.memory_limit, args.threads)
            built = folder / "data" / CATEGORY
            manifest = json.loads((built / "manifest.json").read_text())
            steps = manifest["steps"]
            row = {
                "reviews": size,
                "reviews_mb": reviews.stat().st_size / 2**20,
                "meta_mb": meta.stat().st_size / 2**20,
                "generate_s": generated,
                **measured,
                "after_step2_rows": steps["step2_reviews"]["rows"],
                "step3_rounds": len(steps["step3_core"]["rounds"]),
                "step5_rounds": len(steps["step5_profile_core"]["rounds"]),
                "users": steps["step5_profile_core"]["users"],
                "final_reviews": steps["step5_profile_core"]["profile_rows"]
                + steps["step5_profile_core"]["users"] * manifest["recipe"]["inputs_per_user"],
                **steps["step6_splits"],
                "output_mb": sum(f["bytes"] for f in manifest["outputs"].values()) / 2**20,
            }
            rows.append(row)
            logger.info("%s", json.dumps(row))
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    write_results(args, rows)


def write_results(args: argparse.Namespace, rows: list[dict]) -> None:
    import duckdb

    command = "nice -n 10 python benchmarks/bench_build_benchmark.py"
    if args.sizes != [100_000, 1_000_000, 5_000_000]:
        command += " --sizes " + " ".join(map(str, args.sizes))
    if args.memory_limit != "4GB" or args.threads != 2:
        command += f" --memory-limit {args.memory_limit} --threads {args.threads}"
    info = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}",
        "load_average_at_end": os.getloadavg()[0],
        "memory_limit": args.memory_limit,
        "threads": args.threads,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_build_benchmark.json").write_text(json.dumps(info, indent=2) + "\n")
    base = rows[0]
    lines = [
        "# dep-eval build-benchmark: build time and peak memory against input size",
        "",
        f"Command: `{command}`  ",
        f"Machine: {info['machine']}; DuckDB memory limit {args.memory_limit}, "
        f"{args.threads} threads; load average at the end {info['load_average_at_end']:.1f} "
        "(the machine is shared).  ",
        "Input: synthetic raw Amazon Reviews 2023 files (plain JSON lines, every field of "
        "the real schema; see the script's docstring). Build: the real command line in its "
        "own process, DPL's default recipe; peak RSS is that process's alone.",
        "",
        "| reviews | input (MB) | build (s) | CPU (s) | CPU s per M reviews | peak RSS (MB) "
        "| after step 2 | users kept | reviews kept | train/val/test rows | output (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['reviews']:,} | {row['reviews_mb'] + row['meta_mb']:.0f} "
            f"| {row['build_s']:.1f} | {row['cpu_s']:.1f} "
            f"| {row['cpu_s'] / row['reviews'] * 1e6:.1f} "
            f"| {row['peak_rss_mb']:.0f} | {row['after_step2_rows']:,} | {row['users']:,} "
            f"| {row['final_reviews']:,} ({row['final_reviews'] / row['reviews']:.0%}) "
            f"| {row['train_rows']:,}/{row['val_rows']:,}/{row['test_rows']:,} "
            f"| {row['output_mb']:.0f} |"
        )
    last = rows[-1]
    lines += [
        "",
        f"From {base['reviews']:,} to {last['reviews']:,} reviews "
        f"({last['reviews'] / base['reviews']:.0f}x) the build time grows "
        f"{last['build_s'] / base['build_s']:.1f}x (CPU time "
        f"{last['cpu_s'] / base['cpu_s']:.1f}x) and the peak RSS "
        f"{last['peak_rss_mb'] / base['peak_rss_mb']:.1f}x. Rounds to the fixed points "
        "(step 3 / step 5): "
        + ", ".join(f"{r['step3_rounds']}/{r['step5_rounds']}" for r in rows)
        + ".",
        "",
    ]
    (args.out / "bench_build_benchmark.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
