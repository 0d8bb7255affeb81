"""Inputs that the env would only reject inside a Ray worker, checked in the driver before Ray
starts: one ConfigError naming the knob and what is allowed, instead of an actor's traceback.

Sizes are checked everywhere; what depends on the machine (the CIFAR-10 folder, a CUDA device
for the env) only when the trials run on this one: on a cluster the workers' data and GPUs are
what counts, and the workers themselves report them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import envs
from envs.config import parse_env_kwargs
from envs.datasets import check_sizes, find_cifar10_dir
from envs.tasks import get_task
from esper_rllib.run.config import ConfigError, env_config


def runs_here(address: str | None = None) -> bool:
    """Whether trials run on this machine: no cluster address given, none in RAY_ADDRESS."""
    return address is None and not os.environ.get("RAY_ADDRESS")


def check_env_inputs(knobs: Mapping[str, Any], local: bool = True) -> None:
    """ConfigError for env settings the env would reject when it is built (``local``: also
    those that depend on this machine)."""
    if knobs["env"] != envs.ENV_ID:
        return  # the probe envs take no settings
    task = get_task(knobs["task"])
    try:
        check_sizes(task, n_train=knobs["n_train"], n_val=knobs["n_val"],
                    data_seed=knobs["data_seed"])
    except ValueError as err:
        raise ConfigError(f"task {task.name}: {err}") from None
    if not local:
        return
    try:
        parse_env_kwargs(env_config(knobs))
    except ValueError as err:  # the env's device: cuda on a machine without CUDA
        field = "gpus_per_env_runner" if knobs["gpus_per_env_runner"] > 0 else "env_device"
        raise ConfigError(f"{field}={knobs[field]!r}: {err}") from None
    if task.dataset == "cifar10":
        try:
            find_cifar10_dir(knobs["data_dir"])
        except FileNotFoundError as err:
            raise ConfigError(f"data_dir={knobs['data_dir']} (task {task.name}): {err}") from None


def make_env(knobs: dict[str, Any]) -> Any:
    """The env the knobs describe; the env's own validation errors become one CLI line."""
    import gymnasium as gym

    check_env_inputs(knobs)
    try:
        return gym.make(f"envs:{knobs['env']}", **env_config(knobs))
    except ValueError as err:  # e.g. a missing data_dir
        raise ConfigError(f"env: {err}") from None
