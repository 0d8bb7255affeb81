"""Measure the synthetic task's properties (envs/synthetic.py): generation time, epoch time
with einsum vs stock Conv2d 1x1 convolutions, and the validation accuracy of the impaired host,
the impaired host + conv_light at r0c1, and the baseline host.

Prints one summary line. Plain joint training (no lifecycle, seed always fully blended), as the task
was designed against: SGD lr 0.01 momentum 0.9 wd 5e-4 for the host, lr 0.01 momentum 0.9
for the seed, batch 128 with the last partial batch dropped, 1 thread.

    .venv/bin/python benchmarks/bench_synthetic.py [--n-train 5000] [--epochs 30] [--seeds 1]

The defaults are that design setup. With 2,048 train images the impaired host gets
~40% fewer SGD steps per epoch and is still near its plateau at epoch 30 (~12-16%).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.blueprints import build_blueprint
from envs.contract import BLUEPRINT_NAMES
from envs.hosts import build_host
from envs.synthetic import make_synthetic

N_VAL, BATCH = 1000, 128


class SeededHost(nn.Module):
    """A host with seeds fully blended in after some blocks: {slot index: module}."""

    def __init__(self, host: nn.Module, seeds: dict[int, nn.Module]) -> None:
        super().__init__()
        self.host = host
        self.seeds = nn.ModuleDict({str(i): m for i, m in seeds.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.host.blocks):
            x = block(x)
            if str(i) in self.seeds:
                x = self.seeds[str(i)](x)
        return self.host.classifier(x)


@dataclass
class Run:
    accuracy: list[float]  # validation accuracy after each epoch
    epoch_seconds: float  # mean wall time of one epoch (train + validate)


def make_data(n_train: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    x_tr, y_tr, x_va, y_va = make_synthetic(n_train, N_VAL, seed)
    x_tr_f = torch.from_numpy(x_tr).float().div_(255)
    mean, std = x_tr_f.mean(dim=(0, 2, 3), keepdim=True), x_tr_f.std(dim=(0, 2, 3), keepdim=True)
    x_va_f = torch.from_numpy(x_va).float().div_(255)
    return ((x_tr_f - mean) / std, torch.from_numpy(y_tr), (x_va_f - mean) / std,
            torch.from_numpy(y_va))


def train(host_kind: str, seed_blueprint: int | None, slot: int, epochs: int, seed: int,
          data: tuple[torch.Tensor, ...], pointwise_einsum: bool = True) -> Run:
    torch.manual_seed(seed)
    host = build_host(host_kind, pointwise_einsum=pointwise_einsum)
    seeds = {}
    if seed_blueprint is not None:
        seeds[slot] = build_blueprint(seed_blueprint, host.slot_channels[slot])
    model = SeededHost(host, seeds)
    optimizers = [torch.optim.SGD(host.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)]
    if seeds:
        optimizers.append(torch.optim.SGD(model.seeds.parameters(), lr=0.01, momentum=0.9))
    x_tr, y_tr, x_va, y_va = data
    generator = torch.Generator().manual_seed(seed)
    accuracy, start = [], time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=generator)
        for b in range(len(x_tr) // BATCH):
            idx = order[b * BATCH:(b + 1) * BATCH]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            for opt in optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in optimizers:
                opt.step()
        model.eval()
        with torch.no_grad():
            accuracy.append((model(x_va).argmax(1) == y_va).float().mean().item())
    return Run(accuracy, (time.perf_counter() - start) / epochs)


MODELS = {  # label -> (host kind, seed blueprint index or None, slot)
    "host": ("impaired", None, 1),
    "host+conv_light@r0c1": ("impaired", BLUEPRINT_NAMES.index("conv_light"), 1),
    "baseline": ("baseline", None, 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per model")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    make_synthetic(5000, 1000, 0)
    gen_seconds = time.perf_counter() - start
    data = make_data(args.n_train)

    results = {
        label: [train(kind, bp, slot, args.epochs, s, data) for s in range(args.seeds)]
        for label, (kind, bp, slot) in MODELS.items()
    }
    stock = train("impaired", None, 1, 3, 0, data, pointwise_einsum=False).epoch_seconds
    einsum = np.mean([r.epoch_seconds for r in results["host"]])
    accs = "  ".join(
        f"{label} {100 * np.mean([r.accuracy[-1] for r in runs]):.1f}%"
        for label, runs in results.items()
    )
    print(f"synthetic: gen 5000+1000 {gen_seconds:.2f}s | impaired epoch ({args.n_train} train) "
          f"einsum {1000 * einsum:.0f}ms vs Conv2d {1000 * stock:.0f}ms ({stock / einsum:.1f}x) | "
          f"val acc @ epoch {args.epochs} x{args.seeds} seeds: {accs}")
    print(f"ratio={stock / einsum:.2f}")


if __name__ == "__main__":
    main()
