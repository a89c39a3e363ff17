#!/usr/bin/env bash
# Rebuilds results/ (leaderboard, figures, REPRODUCE.md) from the repository root, on the
# shared All_Beauty test split, 128 new tokens, batch 8.
# Generation runs on the vLLM backend (.venv-vllm: bash .ci/setup-vllm), several times faster
# here than the HF backend; OPPU and DEP + LoRA (dep_lora) run on the HF backend as their rows
# in results/ did (OPPU's per-user LoRAs now also run on vLLM, as LoRA requests).
# PAG and DPL issue 2 and 5.7 LLM calls per user: on all 100 users they took 34 and 77 min
# here (2026-12-03, sharing the cores with other jobs); QUICK=1 runs them on 10 users.
# Runs already in OUT are skipped, so an interrupted reproduction resumes. oppu_task_lora first trains OPPU's task LoRA into
# OUT/oppu-base (dep-eval train --method oppu-base, all train rows, ~20 min here).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/reproduce}
run() {  # VENV BACKEND REPRODUCE-ARGS...
    local venv=$1 backend=$2
    shift 2
    "$venv/bin/dep-eval" reproduce --data-dir ../shared/data/amazon_beauty --category All_Beauty \
        --output "$OUT" --results results --batch-size 8 --max-gen-toks 128 \
        --model-args "backend=$backend" "$@"
}
if [ "${QUICK:-0}" = 1 ]; then  # a look at PAG and DPL on 10 users, not results/' rows
    run .venv-vllm vllm --runs pag dpl --limit 10
else
    run .venv-vllm vllm --runs pag dpl
fi
run .venv hf --runs oppu oppu_retrieval oppu_task_lora dep_lora
run .venv-vllm vllm --runs nonperso rag pag dpl pplug dep dep_his_only dep_diff_only dep_with_text
