#!/usr/bin/env bash
# The slice table of the shared All_Beauty test split (issue 33): every test user (100),
# results/REPRODUCE.md's settings (--batch_size 8, max_gen_toks=128) on the vLLM backend in
# .venv-vllm (bash .ci/setup-vllm), as the leaderboard's rows of these methods were made; one
# lm_eval run per method into out/slices/<method> (skipped when its results exist), then
# `dep-eval leaderboard --slices` over them: results/slices_tables.md and
# results/figures/slices_gain_All_Beauty.{png,svg}.
#
#   bash results/slices.sh                      # nonperso, dep and pplug (the default)
#   METHODS="nonperso dep" bash results/slices.sh
#   LIMIT=16 bash results/slices.sh             # the first 16 test users only (lm_eval --limit)
#   BACKEND=hf BIN=.venv/bin bash results/slices.sh   # the HF engine (several times slower here)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/amazon_beauty}
OUT=${OUT:-out/slices}
METHODS=${METHODS:-"nonperso dep pplug"}
BACKEND=${BACKEND:-vllm}
BIN=${BIN:-.venv-vllm/bin}
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
        --model_args "backend=$BACKEND" --tasks amazon_review_personalized_custom --metadata "$metadata" \
        --batch_size 8 --gen_kwargs max_gen_toks=128 --output_path "$OUT/$method" --log_samples \
        "${limit[@]}"
done
nice -n 10 "$BIN/dep-eval" leaderboard "$OUT" --slices --output results/slices_tables.md \
    --slice-plot results/figures
