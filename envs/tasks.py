"""Task presets: host, data set, subset sizes and optimiser settings."""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = ("synthetic", "cifar10")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    host: str
    dataset: str  # one of DATASETS
    n_train: int
    n_val: int
    batch_size: int
    host_lr: float = 0.01
    host_momentum: float = 0.9
    host_weight_decay: float = 5e-4
    seed_lr: float = 0.01
    seed_momentum: float = 0.9
    grad_clip: float = 1.0
    augment: bool = False  # CIFAR: random crop 32 pad 4 + horizontal flip


def _synthetic(name: str, host: str) -> TaskSpec:
    return TaskSpec(name, host, "synthetic", n_train=5000, n_val=1000, batch_size=128)


def _cifar(name: str, host: str) -> TaskSpec:
    # Batch 512 as in the reference system.
    return TaskSpec(name, host, "cifar10", n_train=50000, n_val=10000, batch_size=512,
                    augment=True)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _synthetic("synth_impaired", "impaired"),
        _synthetic("synth_baseline", "baseline"),
        _cifar("cifar_impaired", "impaired"),
        _cifar("cifar_baseline", "baseline"),
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {name!r}")
    return TASKS[name]
