"""Roofline of one host epoch: bytes and FLOPs it must move and compute against what this CPU
core can do, next to the measured epoch (issue 19).

Counted from the host's shapes (the impaired host by default, the env's batch size):
  FLOPs   forward: 1x1/kxk conv 2 C_in C_out k^2 per pixel, BatchNorm 7 per element (mean,
          variance, normalise, scale, shift), pool 3 comparisons and ReLU 1 per output, the
          classifier; backward counted as 2x forward (the usual rule).
  bytes   "input": the training images read once per epoch (the floor of a fully fused step,
          where every activation stays in cache: shared by all K stacked hosts);
          "layer by layer": every op's output written once and read once by the next op in
          the forward pass, backward counted as 2x the forward's activation traffic, the input
          gathered (read + write) and read by block 0's forward and weight gradient (an
          estimate of what an op-by-op framework moves).
The machine: one thread's copy bandwidth (a 256 MB ``copy_``, read + write) and its matmul rate
(1024^3 float32 ``mm``). The floor of an epoch is max(bytes / bandwidth, FLOPs / matmul rate).

The last line, ``ratio=``, is the measured per-host epoch time at K = 8 stacked over the
layer-by-layer floor (1.0 would be at that floor).

Usage: python benchmarks/bench_roofline.py [--n-train 2048 --host impaired]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from envs.hosts import IN_CHANNELS, N_CLASSES, build_host
from envs.seeded_model import SeededModel
from envs.tasks import get_task
from envs.training import host_optimizer, train_epochs

FLOAT = 4


def host_costs(host: str, size: int = 32) -> tuple[float, float, float]:
    """(forward FLOPs, forward activation bytes layer by layer, input bytes) per image."""
    net = build_host(host)
    k = net.blocks[0][0].kernel_size[0]
    flops = bytes_ = 0.0
    c_in, side = IN_CHANNELS, size
    for c in net.slot_channels:
        pixels = side * side
        flops += 2 * c_in * c * k * k * pixels + 7 * c * pixels + 4 * c * pixels / 4
        # conv out (w + r), BatchNorm out (w + r), pool out (w + r), ReLU out (w + r)
        bytes_ += (2 * c * pixels * 2 + 2 * c * pixels / 4 * 2) * FLOAT
        c_in, side = c, side // 2
    flops += c_in * side * side + 2 * c_in * N_CLASSES
    return flops, bytes_, IN_CHANNELS * size * size * FLOAT


def machine() -> tuple[float, float]:
    """(copy bandwidth bytes/s, matmul FLOP/s) of one thread, best of a few tries."""
    src, dst = torch.empty(64 * 2**20), torch.empty(64 * 2**20)
    src.fill_(1.0)
    dst.copy_(src)
    copy_s = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    mm_s = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    return 2 * src.numel() * FLOAT / copy_s, 2 * 1024**3 / mm_s


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def epoch_seconds(host: str, k: int, n_train: int, repeats: int = 3) -> float:
    """Median seconds of one stacked epoch of k hosts (no seeds) on synthetic-sized data."""
    task = get_task("synth_impaired" if host == "impaired" else "synth_baseline")
    torch.manual_seed(0)
    models = [SeededModel(build_host(host)) for _ in range(k)]
    opts = [host_optimizer(m, task) for m in models]
    x, y = torch.randn(n_train, 3, 32, 32), torch.randint(0, N_CLASSES, (n_train,))
    gen = torch.Generator().manual_seed(0)

    def epoch() -> None:
        train_epochs(models, opts, [{}] * k, x, y, task=task, gen=gen)

    epoch()
    return statistics.median(_timed(epoch) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--host", default="impaired", choices=("impaired", "baseline"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    flops_img, bytes_img, input_img = host_costs(args.host)
    n = args.n_train
    flops, input_bytes = 3 * flops_img * n, input_img * n
    # Activations: forward + 2x backward; the input: gathered (read, write), read by block 0's
    # forward and by its weight gradient.
    layer_bytes = 3 * bytes_img * n + 4 * input_bytes
    bandwidth, peak = machine()
    floor_fused = max(input_bytes / bandwidth, flops / peak)
    floor_layer = max(layer_bytes / bandwidth, flops / peak)
    one = epoch_seconds(args.host, 1, n)
    eight = epoch_seconds(args.host, 8, n) / 8
    print(f"bench_roofline {args.host} host, {n} images/epoch: {flops / 1e6:.0f} MFLOP, "
          f"{layer_bytes / 1e6:.0f} MB layer by layer, {input_bytes / 1e6:.1f} MB input "
          f"(arithmetic intensity {flops / layer_bytes:.2f} FLOP/B)")
    print(f"bench_roofline this core: copy {bandwidth / 1e9:.1f} GB/s, matmul "
          f"{peak / 1e9:.1f} GFLOP/s -> floor {floor_layer * 1e3:.1f} ms layer by layer "
          f"({'memory' if layer_bytes / bandwidth > flops / peak else 'compute'}-bound), "
          f"{floor_fused * 1e3:.1f} ms fully fused (input shared by K: /K)")
    print(f"bench_roofline measured: {one * 1e3:.1f} ms per epoch at K=1 "
          f"({one / floor_layer:.1f}x the layer-by-layer floor), {eight * 1e3:.1f} ms per host "
          f"at K=8 ({eight / floor_layer:.1f}x)")
    print(f"ratio={eight / floor_layer:.2f}")


if __name__ == "__main__":
    main()
