"""One env step (a host epoch, validation, 3 counterfactuals) on CUDA vs on the CPU, side by side.

Needs a CUDA device: ``benchmarks/gpu_check.sh`` runs it (not a ``bench_*`` file, so ``make bench``
skips it). The last line, ``ratio=``, is the CPU step time over the CUDA step time (> 1: the GPU
is faster).

Usage: python benchmarks/gpu_env_step.py [--n-train 5000 --n-val 1000 --repeats 5]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from bench_env import env_with_three_blending_seeds, parse_sizes  # this script's folder

from envs.contract import Op
from envs.heuristic import make_action


def step_seconds(env, device: str) -> float:
    start = time.perf_counter()
    env.step(make_action(Op.WAIT))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_sizes(__doc__.splitlines()[0])
    if not torch.cuda.is_available():
        sys.exit("gpu_env_step: no CUDA device here (torch.cuda.is_available() is False)")
    torch.set_num_threads(1)  # the env runs one per env-runner core
    envs = {d: env_with_three_blending_seeds(args.n_train, args.n_val, d) for d in ("cpu", "cuda")}
    step_seconds(envs["cuda"], "cuda")  # CUDA context and kernels warm
    times: dict[str, list[float]] = {"cpu": [], "cuda": []}
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        for device, env in envs.items():
            times[device].append(step_seconds(env, device))
    cpu, cuda = (statistics.median(times[d]) for d in ("cpu", "cuda"))
    print(f"gpu_env_step ({args.n_train}/{args.n_val}, 3 live seeds, "
          f"{torch.cuda.get_device_name()}): env.step {cpu * 1e3:.0f} ms on CPU, "
          f"{cuda * 1e3:.0f} ms on CUDA")
    print(f"ratio={cpu / cuda:.2f}")


if __name__ == "__main__":
    main()
