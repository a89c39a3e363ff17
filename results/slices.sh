#!/usr/bin/env bash
# The slice table of the shared All_Beauty test split (issue 33): every test user (100),
# the HF backend, results/REPRODUCE.md's settings (--batch_size 8, max_gen_toks=128), one
# lm_eval run per method into out/slices/<method> (skipped when its results exist), then
# `dep-eval leaderboard --slices` over them: results/slices_tables.md and
# results/figures/slices_gain_All_Beauty.{png,svg}.
#
#   bash results/slices.sh                      # nonperso and dep (the default)
#   METHODS="nonperso dep pplug" bash results/slices.sh
#   LIMIT=16 bash results/slices.sh             # the first 16 test users only (lm_eval --limit)
# OMP_NUM_THREADS=1 (as in results/slices.md's run) keeps torch from spinning two threads on
# a machine whose cores are shared with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/amazon_beauty}
OUT=${OUT:-out/slices}
METHODS=${METHODS:-"nonperso dep"}
BIN=${BIN:-.venv/bin}
LIMIT=${LIMIT:-}
limit=()
if [ -n "$LIMIT" ]; then limit=(--limit "$LIMIT"); OUT="$OUT-limit$LIMIT"; fi
metadata="{\"data_dir\": \"$DATA\", \"category\": \"All_Beauty\", \"split\": \"test\"}"
for method in $METHODS; do
    if compgen -G "$OUT/$method/*/results_*.json" > /dev/null; then
        echo "$method: results exist in $OUT/$method, skipped"
        continue
    fi
    /usr/bin/time -f "$method: %e s wall" nice -n 10 "$BIN/lm_eval" --model "$method" \
        --tasks amazon_review_personalized_custom --metadata "$metadata" \
        --batch_size 8 --gen_kwargs max_gen_toks=128 --output_path "$OUT/$method" --log_samples \
        "${limit[@]}"
done
nice -n 10 "$BIN/dep-eval" leaderboard "$OUT" --slices --output results/slices_tables.md \
    --slice-plot results/figures
