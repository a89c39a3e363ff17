#!/usr/bin/env bash
# One GPU session for issue 31: the CUDA tests, then bench_gpu.py, each under its own timeout
# (at most 9 minutes in all). A bare GPU machine has torch and transformers but not
# the project's environment, so the prompts, the tokenizer and jsonlines travel in .bench-gpu.
#
# 1. Here, with the project's environment and the shared data (a few minutes on a CPU):
#      .venv/bin/python benchmarks/bench_gpu.py --data-dir ../shared/data/amazon_beauty --prepare-only
#    and, also here, this script's dry run under the GPU image's package versions:
#      bash benchmarks/gpu_preflight.sh
# 2. On the GPU machine (the session's device tool), from the repository root:
#      bash benchmarks/gpu_session.sh            carrying .bench-gpu, timeout_s=590
# 3. Back here: copy bench_gpu.md/.json from the returned files into results/ and commit them
#    with the test summary line of test_cuda.log.
#
# Reruns: bench_gpu.py keeps the measurements already in results/bench_gpu.json (same settings)
# and skips them, so a second call finishes what a first one's time guard skipped.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ ! -f .bench-gpu/prompts.json ]; then
    echo "no .bench-gpu/prompts.json: run step 1 (see the top of this script) first" >&2
    exit 2
fi
export PYTHONPATH="$PWD:$PWD/.bench-gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DEP_EVAL_TOKENIZER="$PWD/.bench-gpu/tokenizer"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# BENCH_ARGS: more bench_gpu.py arguments (e.g. "--tiny --out /tmp/x" for a dry run on a CPU)
BENCH_ARGS=${BENCH_ARGS:-}
case " $BENCH_ARGS " in
    *" --tiny "*) ;;
    *) if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
           echo "no CUDA device: this script is for the GPU machine (BENCH_ARGS=--tiny: dry run)" >&2
           exit 2
       fi ;;
esac

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv \
    2>&1 | tee "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    2>&1 | tee -a "$OUT/nvidia-smi.txt"

timeout -k 10 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py \
    2>&1 | tee "$OUT/test_cuda.log"
tests=${PIPESTATUS[0]}

# shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
timeout -k 15 420 "$PY" benchmarks/bench_gpu.py --prompts .bench-gpu --out results $BENCH_ARGS \
    2>&1 | tee "$OUT/bench_gpu.log"
bench=${PIPESTATUS[0]}

cp results/bench_gpu.md results/bench_gpu.json "$OUT/" 2>/dev/null
echo "test_cuda exit $tests, bench_gpu exit $bench (124: its timeout; the figures so far are kept)"
