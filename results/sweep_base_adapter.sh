#!/usr/bin/env bash
# DEP on OPPU's task LoRA (issue 16): the shipped DEP recipe, trained with the task LoRA of
# `dep-eval train --method oppu-base` folded into the frozen LLM (--base-adapter), against
# the shipped DEP and the plain / task-LoRA LLM without personalization. Selection on the val
# split only: held-out NLL of 100 val reviews (benchmarks/heldout_nll.py) and the trainer's
# 32-row val METEOR. Run from the repository root after results/reproduce.sh has trained
# OUT/oppu-base (its oppu_task_lora run). About 40 min on a 2-core CPU (2026-12-03).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/sweep}
OUT=${OUT:-out/reproduce}
DATA=../shared/data/amazon_beauty
TASK_LORA="$OUT/oppu-base"
# the shipped recipe (results/shipped_checkpoint.md) + the task LoRA
.venv/bin/dep-eval train --data-dir "$DATA" --category All_Beauty --output "$RUNS/base_adapter" \
    --epochs 4 --lr 0.001 --grad-accum 4 --max-rows 64 --max-target-tokens 128 --val-rows 32 \
    --val-max-new-tokens 128 --no-text --base-adapter "$TASK_LORA" --resume
.venv/bin/python benchmarks/summarize_training.py "$RUNS/base_adapter" --name sweep_base_adapter
.venv/bin/python benchmarks/heldout_nll.py --data-dir "$DATA" --rows 100 --model nonperso \
    --model "nonperso:peft=$TASK_LORA" --model dep \
    --model "dep:checkpoint=$RUNS/base_adapter/best" --name sweep_base_adapter
