"""Inputs that the env would only reject inside a Ray worker, checked in the driver before Ray
starts: one ConfigError naming the knob and what is allowed, instead of an actor's traceback.

Sizes are checked everywhere; what depends on the machine (the CIFAR-10 folder, a CUDA device
for the env) only when the trials run on this one: on a cluster the workers' data and GPUs are
what counts, and the workers themselves report them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import envs
from envs.config import parse_env_kwargs
from envs.datasets import check_sizes, find_cifar10_dir
from envs.tasks import get_task
from esper_rllib.run.config import ConfigError, env_config
from tuning.local_ray import local_resources, runs_here


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


def asked_resources(config: Any) -> dict[str, float]:
    """CPUs and GPUs of the placement group one run of ``config`` (a PPOConfig) asks Ray for:
    the trainer with its learner, and each env runner."""
    request = config.algo_class.default_resource_request(config)
    return {resource: float(sum(bundle.get(resource, 0.0) for bundle in request.bundles))
            for resource in ("CPU", "GPU")}


def check_resources(asked: Mapping[str, float], what: str,
                    fixes: Mapping[str, tuple[str, str]]) -> None:
    """ConfigError, one line, when the Ray that runs here (``local_resources``: before it
    starts too) has fewer CPUs or GPUs than ``what`` asks for (``asked``: {"CPU": n, "GPU":
    n}); Ray would otherwise wait for them forever, with a warning a minute. ``fixes``: per
    resource, (the setting that asked, what to change). Call it only where Ray runs here
    (``runs_here``): a cluster may scale up to what is asked."""
    have = local_resources()
    for resource in ("CPU", "GPU"):
        wanted, there = asked.get(resource, 0.0), have.get(resource, 0.0)
        if wanted > there + 1e-9:
            setting, fix = fixes[resource]
            # .4g: a run's CPU shares add up to N - 1e-4 or so (Ray's resolution), shown as N.
            raise ConfigError(f"{setting}: {what} asks for {wanted:.4g} {resource}s, the Ray "
                              f"cluster has {there:g}; {fix}")


def check_run_resources(knobs: Mapping[str, Any], config: Any, what: str = "the run") -> None:
    """``check_resources`` for one PPO run (a `train` run or one trial of a sweep)."""
    cpus = int(local_resources().get("CPU", 0.0))
    check_resources(asked_resources(config), what, {
        "CPU": (f"num_env_runners={knobs['num_env_runners']}",
                f"allowed: num_env_runners <= {cpus} (1 CPU each; with 0 the trainer samples "
                "on its own CPU): --set num_env_runners=N"),
        "GPU": (f"gpus={knobs['gpus']:g}, gpus_per_env_runner={knobs['gpus_per_env_runner']:g}",
                "allowed: gpus + num_env_runners x gpus_per_env_runner <= the cluster's GPUs: "
                "--set gpus=G (train --gpus G, ablate --gpus-per-trial G)"),
    })


def check_trial_resources(knobs: Mapping[str, Any], address: str | None = None) -> None:
    """``check_run_resources`` for one trial of a sweep (``knobs``: its cell's), where Ray runs
    here; before Ray starts."""
    if not runs_here(address):
        return
    from esper_rllib.run.config import build_ppo_config

    check_run_resources(knobs, build_ppo_config(knobs), what="each trial")


def check_cpus(cpus: float, address: str | None, setting: str, what: str, fix: str) -> None:
    """``check_resources`` for work that asks for CPUs only (``record``'s workers, the trials
    of ``critic-fit``), where Ray runs here."""
    if runs_here(address):
        check_resources({"CPU": cpus}, what, {"CPU": (setting, fix)})
