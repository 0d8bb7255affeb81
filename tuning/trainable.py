"""The Tune trainable: a thin subclass of the builder's algorithm that takes the FLAT knob dict.

Tune sees only our knob names (params.json, trial names, HParams, ablation.csv); the builder
turns them into the algorithm config inside the trial and when Tune asks for resources.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

from esper_rllib.ppo.metric_names import RESULT_KEY, VERDICT

ConfigBuilder = Callable[[Mapping[str, Any]], AlgorithmConfig]

PROGRESS_METRICS = ("explained_variance", "value_loss", "clip_ratio", VERDICT)
# Where each trial records the devices Ray gave it (the placement test and cluster users read it).
PLACEMENT_KEY = "placement"


def _is_tune_key(key: str) -> bool:
    # Tune adds its own entries (trial info, log file names) as "__name__" keys.
    return key.startswith("__")


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config without Tune's own entries."""
    return {k: v for k, v in config.items() if not _is_tune_key(k)}


def make_trainable(build_config: ConfigBuilder, knobs: Mapping[str, Any],
                   to_knobs: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
                   ) -> type[Algorithm]:
    """A subclass of the algorithm that ``build_config`` builds, constructed from flat knobs.

    ``knobs`` is any valid knob dict (the sweep's base): building it tells which algorithm to
    extend. ``to_knobs`` turns a trial's params into the builder's knobs (the sweep plan's
    ``cell_knobs``: labels dropped, derived knobs set).
    """
    base_cls = build_config(knobs).algo_class

    def algo_config(config: Mapping[str, Any]) -> AlgorithmConfig:
        return build_config(to_knobs(trial_params(config)))

    class EsperTrial(base_cls):
        # Columns of Tune's progress table: the numbers the collapse shows up in.
        _progress_metrics = (*(f"{RESULT_KEY}/{m}" for m in PROGRESS_METRICS), "timesteps_total")

        @classmethod
        def default_resource_request(cls, config: Any) -> Any:
            if isinstance(config, Mapping) and "class" not in config:
                config = algo_config(config)
            return super().default_resource_request(config)

        def __init__(self, config: Any = None, **kwargs: Any) -> None:
            # A flat knob dict from Tune (a checkpoint restores from the algorithm's own state,
            # which carries "class"): build it into the algorithm's config dict, keeping
            # Tune's entries so the trial keeps its name and log files.
            if isinstance(config, Mapping) and "class" not in config:
                tune_entries = {k: v for k, v in config.items() if _is_tune_key(k)}
                config = {**algo_config(config).to_dict(), **tune_entries}
            super().__init__(config=config, **kwargs)

        def step(self) -> dict:
            result = super().step()
            result[PLACEMENT_KEY] = {
                "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                # Wall-clock span of the trial so far: shows which trials ran at once.
                "started_at": self._start_time,
                "reported_at": time.time(),
            }
            return result

    # Trial folders and actors are named for the algorithm (EsperPPO_<cell>_<n>).
    EsperTrial.__name__ = EsperTrial.__qualname__ = base_cls.__name__
    return EsperTrial


def placement(build_config: ConfigBuilder, knobs: Mapping[str, Any]) -> Any:
    """The placement group the algorithm asks for with these knobs (default_resource_request)."""
    config = build_config(knobs)
    return config.algo_class.default_resource_request(config)
