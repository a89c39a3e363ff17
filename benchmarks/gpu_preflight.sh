#!/usr/bin/env bash
# Before spending GPU time: gpu_session.sh and the engine's decode tests on THIS machine's CPU,
# under the package versions of the GPU machine's image (the device tool's KINDS.md, read
# 2026-11: torch 2.11.0, transformers 5.17.0, huggingface_hub 1.33.0, tokenizers 0.23.2,
# safetensors 0.8.0, numpy 2.5.2, sentence-transformers 6.0.1, accelerate 1.15.0; peft's
# version there is not recorded). The project's own pins do not apply on that machine, so a
# break that only those versions show would otherwise surface on the GPU, mid-session.
# The first such run found two: sampled texts of decode=fixed vs dynamic parting under
# transformers 5.17 (a test asked for more than float32 rounding gives), and 5.17 copying
# grouped KV heads at every decode step (engine/grouped_attention.py now avoids it).
#
#   bash benchmarks/gpu_preflight.sh          # ~2 GB of wheels into .venv-gpu-twin the first time
#
# Needs .bench-gpu (bench_gpu.py --prepare-only, see gpu_session.sh). CUDA is absent here, so
# test_cuda.py skips and bench_gpu runs its tiny CPU config with the graph's steps run eagerly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-gpu-twin
PYTHON_312=$(command -v python3.12 || command -v python3)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON_312" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch==2.11.0 transformers==5.17.0 huggingface_hub==1.33.0 \
        tokenizers==0.23.2 safetensors==0.8.0 numpy==2.5.2 sentence-transformers==6.0.1 \
        accelerate==1.15.0 peft pytest psutil attrs pyyaml tqdm
fi
"$VENV/bin/python" -c "import torch, transformers; print('twin: torch', torch.__version__, 'transformers', transformers.__version__)"
PYTHONPATH="$PWD:$PWD/.bench-gpu/site" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_fixed_decode.py tests/test_grouped_attention.py tests/test_cuda.py \
    -k "not model_args"  # that one imports lm-eval, which the image lacks
out=$(mktemp -d)
OUT="$out" PYTHON="$VENV/bin/python" BENCH_ARGS="--tiny --decode fixed --out $out/results" \
    bash benchmarks/gpu_session.sh >"$out/session.log" 2>&1
tail -1 "$out/session.log"
grep -q "test_cuda exit 0, bench_gpu exit 0" "$out/session.log" || {
    echo "gpu_session.sh failed under the image's versions: $out/session.log" >&2
    exit 1
}
echo "preflight passed; the dry run's files are in $out"
