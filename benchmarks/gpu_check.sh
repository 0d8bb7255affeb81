#!/usr/bin/env bash
# The GPU paths, run for real on a machine with a CUDA device (issue 11):
#   1. a 2-iteration `train` with the learner and the host CNN on cuda;
#   2. a 2-trial sweep with --gpus-per-trial 0.5 (two trials share one GPU);
#   3. one env step on cuda vs on the CPU at 5,000 and 50,000 training images;
#   4. K = 64 CIFAR-sized host epochs on the GPU, stacked (one network) vs separate (issue 19);
#   5. one `seed`-profile iteration with stacked vector envs (16 per env runner) on the GPU
#      (needs CIFAR-10: $ESPER_DATA_DIR; skipped without it). SEED_EPOCHS (default 150, the
#      profile's) shortens its episodes.
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

echo "== 4. K=64 CIFAR-sized host epochs: stacked vs separate"
"$BIN/python" benchmarks/gpu_stacked_epochs.py --k 64 --n-train 50000 --separate 8

echo "== 5. one seed-profile iteration: 4 env runners x 16 stacked envs, hosts on the GPU"
if [ -n "${ESPER_DATA_DIR:-}" ]; then
    # The seed profile itself: 4 env runners, stack_batch=true (16 stacked envs each).
    time "$BIN/esper-rllib" train --profile seed --iterations 1 --gpus 0.2 \
        --set gpus_per_env_runner=0.2 \
        --set max_epochs="${SEED_EPOCHS:-150}" --storage "$OUT" --name gpu-seed-stacked
else
    echo "skipped: set ESPER_DATA_DIR to the CIFAR-10 python-pickle folder"
fi
echo "gpu_check: done, results under $OUT"
