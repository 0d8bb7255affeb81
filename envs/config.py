"""The env's keyword arguments: defaults and validation (one clear ValueError per bad value)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envs.rewards import DEFAULT_NORMALIZATION, RewardConfig, parse_reward
from envs.tasks import TASKS, TaskSpec, get_task

if TYPE_CHECKING:
    import torch

# "auto": the reward mode's own (rewards.DEFAULT_NORMALIZATION).
REWARD_NORMALIZATIONS = ("auto", "running_std", "none")
DEVICES = ("cpu", "cuda", "cuda:N", "auto")
# How the host's epoch is computed: "fused" is envs.fused's kernels (1x1 hosts on the CPU),
# "torch" the PyTorch reference; "auto" is fused wherever it applies. Both compute the same
# function (tests/envs/test_fused.py).
HOST_KERNELS = ("auto", "fused", "torch")
# The env's own defaults, one per keyword argument, declared here only: what the env runs with
# when a kwarg is not given. The run configuration's env knobs take their defaults from this table;
# its profiles name the reward they run (``esper_rllib.run.profiles``: aligned), not this one.
DEFAULTS: dict[str, Any] = {
    "task": "synth_impaired", "max_epochs": 150, "max_seeds": 2, "reward": "shaped",
    "reward_normalization": "auto", "data_dir": None, "device": "cpu", "n_train": None,
    "n_val": None, "seed": None, "data_seed": 0, "inject_nan_at_epoch": None,
    "render_mode": None, "host_kernel": "auto",
}
KWARGS = tuple(DEFAULTS)


@dataclass(frozen=True)
class EnvConfig:
    task: TaskSpec
    max_epochs: int
    max_seeds: int
    reward: RewardConfig
    reward_normalization: str
    data_dir: str | None
    device: torch.device
    n_train: int | None
    n_val: int | None
    seed: int | None
    data_seed: int
    inject_nan_at_epoch: int | None
    fused: bool  # host_kernel resolved: the fused CPU kernels for this env's host epochs


# The integer kwargs' minimum; None as the default (``DEFAULTS``) means None is allowed. The run
# configuration's knobs for these read their bounds from here.
INT_MINIMUMS: dict[str, int] = {
    "max_epochs": 1, "max_seeds": 0, "n_train": 1, "n_val": 1, "seed": 0, "data_seed": 0,
    # Counted from 1: the first host epoch is epoch 1.
    "inject_nan_at_epoch": 1,
}


def _int(given: dict[str, Any], key: str) -> int | None:
    minimum, optional = INT_MINIMUMS[key], DEFAULTS[key] is None
    value = given[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{key} must be {allowed}, got {value!r}")
    return value


def resolve_device(value: object) -> torch.device:
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    # Imported here, the one place that needs it: the run's knob table reads this module's
    # bounds and choices, and `esper-rllib train --set foo=1` must answer without torch.
    import torch

    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda|cuda:\d+|auto", value):
        raise ValueError(f"device must be one of {DEVICES}, got {value!r}")
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(value)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={value!r} requested but CUDA is not available; "
                             "use device='cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={value!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s) present")
    return device


def parse_env_kwargs(kwargs: dict[str, Any]) -> EnvConfig:
    unknown = sorted(set(kwargs) - set(KWARGS))
    if unknown:
        raise ValueError(f"unknown env kwarg(s) {unknown}; allowed: {KWARGS}")
    kwargs = {**DEFAULTS, **kwargs}
    if kwargs["render_mode"] is not None:
        raise ValueError(f"render_mode must be None (no rendering), got {kwargs['render_mode']!r}")
    task_name = kwargs["task"]
    if task_name not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task_name!r}")
    norm = kwargs["reward_normalization"]
    if norm not in REWARD_NORMALIZATIONS:
        raise ValueError(f"reward_normalization must be one of {REWARD_NORMALIZATIONS}, "
                         f"got {norm!r}")
    reward = parse_reward(kwargs["reward"])
    if norm == "auto":
        norm = DEFAULT_NORMALIZATION[reward.mode]
    kernel = kwargs["host_kernel"]
    if kernel not in HOST_KERNELS:
        raise ValueError(f"host_kernel must be one of {HOST_KERNELS}, got {kernel!r}")
    data_dir = kwargs["data_dir"]
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise ValueError(f"data_dir must be a path (str) or None, got {data_dir!r}")
        data_dir = os.fspath(data_dir)
    task = get_task(task_name)
    device = resolve_device(kwargs["device"])
    if kernel == "fused" and (device.type != "cpu" or task.host != "impaired"):
        raise ValueError("host_kernel='fused' needs the 1x1 (impaired) host on the CPU, got "
                         f"task {task_name!r} on {device}; use 'auto' or 'torch'")
    return EnvConfig(
        task=task,
        max_epochs=_int(kwargs, "max_epochs"),
        max_seeds=_int(kwargs, "max_seeds"),
        reward=reward,
        reward_normalization=norm,
        data_dir=data_dir,
        device=device,
        n_train=_int(kwargs, "n_train"),
        n_val=_int(kwargs, "n_val"),
        seed=_int(kwargs, "seed"),
        data_seed=_int(kwargs, "data_seed"),
        inject_nan_at_epoch=_int(kwargs, "inject_nan_at_epoch"),
        fused=kernel != "torch" and device.type == "cpu" and task.host == "impaired",
    )
