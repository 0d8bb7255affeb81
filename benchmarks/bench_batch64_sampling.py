"""One `batch64` iteration's sampling, fused host kernels against the PyTorch reference, beside
the floors of this host on this machine (issue 34).

A `batch64` iteration samples 64 episodes on 2 env runners, each one stacked vector env of 32
hosts stepped through 40 host epochs (2,048 training and 1,000 validation images); the two
runners run side by side on two cores, so the iteration's sampling takes one runner's time.
This plays one runner's share: 32 hosts x 40 epochs under WAIT (the host alone: no seeds) and
random play (seeds grow: up to ~25 live), ``host_kernel=torch`` and ``fused`` on the same env
seeds and actions, their steps interleaved in one process on one thread, timed in CPU seconds
of this process (other processes do not enter it).

Floors per host-epoch (bench_roofline's counts: FLOPs of forward and backward over the training
images and the forward over the validation images; the input bytes are shared by the K stacked
hosts): "layer by layer" = max(every layer's output written and read once / copy bandwidth,
FLOPs / matmul rate); "fused" = max(input bytes / K / bandwidth, FLOPs / matmul rate), this
host's compute-bound floor. Seeds are not in the floors.

The last line, ``ratio=``, is the fused host alone (WAIT) per host-epoch over the fused floor
(issue 34's target: <= 3).

Usage: python benchmarks/bench_batch64_sampling.py [--hosts 32 --epochs 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_roofline import host_costs, machine  # this script's folder

from envs.contract import Op
from envs.heuristic import make_action
from envs.scripted import random_legal_action
from envs.vector_env import SeedMorphogenesisVectorEnv

KERNELS = ("torch", "fused")
ENV = {"task": "synth_impaired", "n_train": 2048, "max_epochs": 40}


def play(policy: str, hosts: int, epochs: int) -> dict[str, list[float]]:
    """CPU seconds of each vector step per kernel; both sides get the same actions."""
    envs = {k: SeedMorphogenesisVectorEnv(hosts, host_kernel=k, **ENV) for k in KERNELS}
    obs = {k: env.reset(seed=list(range(hosts)))[0] for k, env in envs.items()}
    rngs = {k: np.random.default_rng(0) for k in KERNELS}
    seconds: dict[str, list[float]] = {k: [] for k in KERNELS}
    for _ in range(epochs):
        for k, env in envs.items():
            if policy == "wait":
                acts = np.stack([make_action(Op.WAIT)] * hosts)
            else:
                acts = np.stack([random_legal_action(m, 3, rngs[k])
                                 for m in obs[k]["action_mask"]])
            start = time.process_time()
            obs[k], *_ = env.step(acts)
            seconds[k].append(time.process_time() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    flops_img, bytes_img, input_img = host_costs("impaired")
    n_train, n_val = ENV["n_train"], 1000
    flops = 3 * flops_img * n_train + flops_img * n_val
    layer_bytes = 3 * bytes_img * n_train + 4 * input_img * n_train + bytes_img * n_val
    input_bytes = input_img * (n_train + n_val)
    bandwidth, peak = machine()
    floor_layer = max(layer_bytes / bandwidth, flops / peak)
    floor_fused = max(input_bytes / args.hosts / bandwidth, flops / peak)
    print(f"bench_batch64_sampling floors per host-epoch: {flops / 1e6:.0f} MFLOP, "
          f"{layer_bytes / 1e6:.0f} MB layer by layer; copy {bandwidth / 1e9:.1f} GB/s, "
          f"matmul {peak / 1e9:.1f} GFLOP/s -> layer by layer {floor_layer * 1e3:.1f} ms, "
          f"fused {floor_fused * 1e3:.1f} ms")
    play("random", 2, 3)  # warm-up: numba's first calls load or compile the kernels
    per_host: dict[tuple[str, str], float] = {}
    for policy in ("wait", "random"):
        seconds = play(policy, args.hosts, args.epochs)
        for k in KERNELS:
            total = sum(seconds[k])
            per_host[policy, k] = total / (args.hosts * args.epochs)
            print(f"bench_batch64_sampling {policy:6s} {k:5s}: {per_host[policy, k] * 1e3:6.1f} "
                  f"ms per host-epoch ({per_host[policy, k] / floor_fused:5.1f}x the fused "
                  f"floor, {per_host[policy, k] / floor_layer:4.1f}x layer by layer); one "
                  f"runner's {args.hosts} hosts x {args.epochs} epochs {total:6.1f} s")
        print(f"bench_batch64_sampling {policy:6s} torch / fused: "
              f"{per_host[policy, 'torch'] / per_host[policy, 'fused']:.2f}x")
    print(f"ratio={per_host['wait', 'fused'] / floor_fused:.2f}")


if __name__ == "__main__":
    main()
