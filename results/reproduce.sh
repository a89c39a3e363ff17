#!/usr/bin/env bash
# Rebuilds results/ (leaderboard, K ablation, figures, REPRODUCE.md) from the repository root.
# Every method runs on all 100 shared All_Beauty test users except the LLM-heavy PAG and DPL
# and the nine K-ablation runs, which take the first 10 (over 30 s per sample here on 2 CPU
# cores). Runs already in OUT are skipped, so an interrupted run resumes.
# Took about 2.5 hours on a 2-core CPU machine (2026-11-25).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/reproduce}
run() {
    .venv/bin/dep-eval reproduce --data-dir ../shared/data/amazon_beauty --category All_Beauty \
        --output "$OUT" --results results --batch-size 8 --max-gen-toks 128 "$@"
}
# PAG and DPL first, on 10 users; then every other run (and the K ablation on 10 users),
# which also writes the tables and figures from all of them.
run --runs pag dpl --limit 10
run --runs nonperso rag pag dpl pplug dep dep_his_only dep_diff_only dep_with_text \
    --k-ablation --k-limit 10
