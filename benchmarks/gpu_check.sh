#!/usr/bin/env bash
# The GPU paths, run for real on a machine with a CUDA device (issue 11):
#   1. a 2-iteration `train` with the learner and the host CNN on cuda;
#   2. a 2-trial sweep with --gpus-per-trial 0.5 (two trials share one GPU);
#   3. one env step on cuda vs on the CPU at 5,000 and 50,000 training images.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (results under OUT_DIR, default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${1:-$(mktemp -d)}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

"$BIN/python" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device here (torch.cuda.is_available() is False)")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}")
PY

echo "== 1. train: 2 iterations, learner (gpus=1) and host (env_device=cuda) on the GPU"
time "$BIN/esper-rllib" train --profile quick --iterations 2 --gpus 1 --set env_device=cuda \
    --storage "$OUT" --name gpu-train

echo "== 2. sweep: 2 trials at --gpus-per-trial 0.5"
time "$BIN/esper-rllib" ablate --sweep seed --profile quick --seeds 2 --set iterations=2 \
    --grid value_head_gain=0.01 --grid value_head_depth=4 --grid value_coef=1.0 \
    --gpus-per-trial 0.5 --reference-episodes 0 --storage "$OUT" --name gpu-sweep

echo "== 3. env step, cuda vs CPU"
"$BIN/python" benchmarks/gpu_env_step.py --n-train 5000 --n-val 1000
"$BIN/python" benchmarks/gpu_env_step.py --n-train 50000 --n-val 10000 --repeats 3
echo "gpu_check: done, results under $OUT"
