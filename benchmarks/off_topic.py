"""Where one run loses BERTScore to another: the documents with the largest paired drop.

    python benchmarks/off_topic.py out/reproduce/nonperso out/reproduce/dep --worst 6

Reads the samples files (``--log_samples``) of two lm-eval runs on the same documents and
prints, per run, the mean BERTScore, how many generations hit the token cap, and then the
documents where the second run scores furthest below the first, with both texts and the
reference, so a reader can see what the lost points are made of.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import jsonlines

BERTSCORE = ("bertscore_f1", "bertscore_minilm_f1")


def by_document(folder: Path) -> dict[str, dict]:
    paths = sorted(folder.rglob("samples_*.jsonl"))
    if not paths:
        raise SystemExit(f"{folder}: no samples_*.jsonl (run lm_eval with --log_samples)")
    with jsonlines.open(paths[-1]) as reader:  # the newest run in the folder
        return {row["doc_hash"]: row for row in reader}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path, help="reference run (lm-eval output folder)")
    parser.add_argument("second", type=Path, help="run to inspect")
    parser.add_argument("--worst", type=int, default=6, help="documents to show")
    parser.add_argument("--chars", type=int, default=300, help="characters of each text")
    args = parser.parse_args()
    first, second = by_document(args.first), by_document(args.second)
    shared = sorted(set(first) & set(second))
    metric = next(m for m in BERTSCORE if m in first[shared[0]])
    for name, run in ((args.first, first), (args.second, second)):
        rows = [run[h] for h in shared]
        cap = rows[0]["arguments"]["gen_args_0"]["arg_1"].get("max_gen_toks")
        capped = sum(cap is not None and r.get("generated_tokens", 0) >= cap for r in rows)
        words = statistics.mean(len(r["resps"][0][0].split()) for r in rows)
        print(
            f"{name}: {metric} {statistics.mean(r[metric] for r in rows):.4f}, "
            f"{capped}/{len(rows)} at the token cap, {words:.1f} words"
        )
    drop = sorted(shared, key=lambda h: second[h][metric] - first[h][metric])
    clip = args.chars
    for h in drop[: args.worst]:
        print(f"\n=== reference: {first[h]['target'][:clip]!r}")
        for name, run in ((args.first, first), (args.second, second)):
            print(f"--- {name.name} {run[h][metric]:.3f}: {run[h]['resps'][0][0][:clip]!r}")


if __name__ == "__main__":
    main()
