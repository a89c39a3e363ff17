#!/usr/bin/env bash
# OPPU (one LoRA per user) on both engines, the leaderboard's settings (100 All_Beauty test
# users, --batch_size 8, max_gen_toks=128), both in .venv-vllm (bash .ci/setup-vllm) so that
# the per-user LoRAs are trained once (HF side, into the OPPU cache) and served by each engine:
# PEFT mixed-adapter batches on hf, one LoRARequest per prompt on vllm (issue 30).
# Writes results/oppu_backends.md: both rows with their intervals, then how many documents
# got the same text on both engines (dep-eval compare-texts). Runs already in OUT are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/amazon_beauty}
OUT=${OUT:-out/oppu-backends}
BIN=${BIN:-.venv-vllm/bin}
metadata="{\"data_dir\": \"$DATA\", \"category\": \"All_Beauty\", \"split\": \"test\"}"
for backend in hf vllm; do
    if compgen -G "$OUT/$backend/*/results_*.json" > /dev/null; then
        echo "$backend: results exist in $OUT/$backend, skipped"
        continue
    fi
    /usr/bin/time -f "oppu backend=$backend: %e s wall" nice -n 10 "$BIN/lm_eval" --model oppu \
        --model_args "backend=$backend" --tasks amazon_review_personalized_custom \
        --metadata "$metadata" --batch_size 8 --gen_kwargs max_gen_toks=128 \
        --output_path "$OUT/$backend" --log_samples
done
table=$(mktemp --suffix=.md)
"$BIN/dep-eval" leaderboard "$OUT" --against "oppu,backend=hf" --output "$table"
texts=$("$BIN/dep-eval" compare-texts "$OUT/hf" "$OUT/vllm" || true)
{
    echo "# OPPU on the HF engine and on vLLM (LoRA requests)"
    echo
    echo "Command: \`bash results/oppu_backends.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'))."
    echo
    cat "$table"
    echo
    echo "## Same text on both engines?"
    echo
    echo "The task samples (temperature 0.8, top-p 0.95) from a per-document seed, but each engine"
    echo "draws from its own random generator, so equal texts are not expected; the rows above"
    echo "are the comparison. Greedy agreement is tested in tests/test_vllm_backend.py."
    echo
    echo '```'
    echo "$texts"
    echo '```'
} > results/oppu_backends.md.tmp
mv results/oppu_backends.md.tmp results/oppu_backends.md
rm -f "$table"
