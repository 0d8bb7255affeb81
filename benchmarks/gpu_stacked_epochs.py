"""K = 64 CIFAR-sized host epochs on one device: stacked (``train_epochs`` of all K hosts as one
network) against separate (one host per epoch, as K single envs would), side by side.

The `cifar_impaired` task's settings (batch 512, random crop + flip on the device) on CIFAR-shaped
random images (timing does not depend on pixel values, so no data set is needed). Separate epochs
are timed on ``--separate`` hosts and scaled to K. Needs a CUDA device unless ``--device cpu``
(a dry run): ``benchmarks/gpu_check.sh`` runs it. The last line, ``ratio=``, is separate over
stacked time per host epoch (> 1: stacking pays).

Usage: python benchmarks/gpu_stacked_epochs.py [--k 64 --n-train 50000 --separate 8 --device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from envs.datasets import augment_batch
from envs.hosts import build_host
from envs.seeded_model import SeededModel
from envs.tasks import get_task
from envs.training import host_optimizer, train_epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--separate", type=int, default=8)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_stacked_epochs: no CUDA device here (torch.cuda.is_available() is False)")
    torch.set_num_threads(1)  # one env-runner core feeds the device
    task = get_task("cifar_impaired")
    torch.manual_seed(0)
    models = [SeededModel(build_host(task.host)).to(device) for _ in range(args.k)]
    opts = [host_optimizer(m, task) for m in models]
    x = torch.randn(args.n_train, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.n_train,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def seconds(group: list[int], n: int) -> float:
        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
        sync()
        start = time.perf_counter()
        train_epochs([models[i] for i in group], [opts[i] for i in group], [{}] * len(group),
                     x[:n], y[:n], task=task, gen=gen, augment=augment_batch)
        sync()
        return time.perf_counter() - start

    warm = 4 * task.batch_size  # kernels, allocator and cuDNN warm on a few batches
    seconds(list(range(args.k)), warm)
    seconds([0], warm)
    stacked = seconds(list(range(args.k)), args.n_train) / args.k
    n_sep = min(args.separate, args.k)
    separate = sum(seconds([i], args.n_train) for i in range(n_sep)) / n_sep
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"gpu_stacked_epochs K={args.k} ({args.n_train} images, batch {task.batch_size}, "
          f"augmented, {name}): per host epoch stacked {stacked * 1e3:.1f} ms, separate "
          f"{separate * 1e3:.1f} ms (mean of {n_sep}); K epochs: stacked "
          f"{stacked * args.k:.1f} s, separate {separate * args.k:.1f} s")
    print(f"ratio={separate / stacked:.2f}")


if __name__ == "__main__":
    main()
