"""The Tune trainable: a thin subclass of the builder's algorithm that takes the FLAT knob dict.

Tune sees only our knob names (params.json, trial names, HParams, ablation.csv); the builder
turns them into the algorithm config inside the trial and when Tune asks for resources.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from typing import Any

import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

ConfigBuilder = Callable[[Mapping[str, Any]], AlgorithmConfig]

# Where each trial records the devices Ray gave it (the placement test and cluster users read it).
PLACEMENT_KEY = "placement"


def _is_tune_key(key: str) -> bool:
    # Tune adds its own entries (trial info, log file names) as "__name__" keys.
    return key.startswith("__")


def knobs_of(config: Mapping[str, Any], labels: Collection[str] = ()) -> dict[str, Any]:
    """The builder's knobs in a trial config: without Tune's own keys and the sweep's labels."""
    return {k: v for k, v in config.items() if not _is_tune_key(k) and k not in labels}


def make_trainable(build_config: ConfigBuilder, knobs: Mapping[str, Any],
                   labels: Collection[str] = ()) -> type[Algorithm]:
    """A subclass of the algorithm that ``build_config`` builds, constructed from flat knobs.

    ``knobs`` is any valid knob dict (the sweep's base): building it tells which algorithm to
    extend. ``labels`` are sweep axes that are not knobs; they are dropped before building.
    """
    labels = frozenset(labels)
    base_cls = build_config(knobs).algo_class

    def algo_config(config: Mapping[str, Any]) -> AlgorithmConfig:
        return build_config(knobs_of(config, labels))

    class EsperTrial(base_cls):
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
            }
            return result

    EsperTrial.__name__ = EsperTrial.__qualname__ = f"Esper{base_cls.__name__}"
    return EsperTrial
