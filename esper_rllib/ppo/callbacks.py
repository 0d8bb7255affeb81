"""``EsperCallbacks``: env-side metrics from every sampled step, and the per-iteration summary.

Env runners (``on_episode_step`` / ``on_episode_end``) log raw counters of the iteration's
sampled steps with per-iteration reduces ("sum", "min", "max": never means of means), under
``env_runners/esper/...``. The driver (``on_train_result``) turns them into fractions, copies
every metric of ``metric_names.ALL_METRICS`` flat into ``result["esper"]`` (NaN when a metric
does not apply, e.g. q_spread for the state-value critic), runs the collapse monitor, and sets
``result["timesteps_total"]`` to the env steps sampled so TensorBoard's x axis is env steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
)

from envs.contract import Op
from esper_rllib.ppo.collapse import CollapseMonitor
from esper_rllib.ppo.metric_names import (
    ALL_METRICS,
    ENV_STEPS,
    LEARNER_METRICS,
    RESULT_KEY,
)

# Env-runner counters that only serve to build the fractions of ENV_METRICS.
_STEPS = "steps"
_INVALID = "invalid_actions"
_REWARD_SUM = "reward_sum"
_REWARD_SIGN = {"zero": "reward_zero_count", "pos": "reward_pos_count",
                "neg": "reward_neg_count"}
# Where the collapse monitor's state rides in the algorithm's MetricsLogger, which RLlib
# checkpoints: a restored trial's monitor continues its history instead of starting over.
MONITOR_STATE_KEY = "esper_collapse_monitor_state"


class EsperCallbacks(RLlibCallback):
    def __init__(self) -> None:
        super().__init__()
        self.monitor = CollapseMonitor()

    # -- env runner side ----------------------------------------------------------------------
    def on_episode_step(self, *, episode: Any, metrics_logger: Any = None, **kwargs) -> None:
        info = episode.get_infos(-1)
        # Probe envs have no reward normalisation and report no raw_reward: their reward is raw.
        reward = float(info.get("raw_reward", episode.get_rewards(-1)))
        counts = {_STEPS: 1, _REWARD_SUM: reward,
                  _REWARD_SIGN["zero" if reward == 0 else "pos" if reward > 0 else "neg"]: 1}
        if "effective_op" in info:
            counts[f"op_count_{Op(info['effective_op']).name}"] = 1
        if "action_valid" in info:
            counts[_INVALID] = int(not info["action_valid"])
        if "rollback" in info:
            counts["rollbacks"] = int(info["rollback"])
        for name, value in counts.items():
            metrics_logger.log_value((RESULT_KEY, name), value, reduce="sum")
        metrics_logger.log_value((RESULT_KEY, "reward_min"), reward, reduce="min")
        metrics_logger.log_value((RESULT_KEY, "reward_max"), reward, reduce="max")

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs) -> None:
        # The final info describes the finished episode (it survives episode chunking).
        info = episode.get_infos(-1)
        for name, key in (("episode_val_acc", "val_acc"), ("episode_fossils", "n_fossils"),
                          ("episode_seed_params", "seed_params")):
            if key in info:
                metrics_logger.log_value((RESULT_KEY, name), float(info[key]), reduce="mean")

    # -- driver side --------------------------------------------------------------------------
    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None,
                        result: dict, **kwargs) -> None:
        stashed = result.pop(MONITOR_STATE_KEY, None)
        if stashed is not None and self.monitor.iteration == 0:
            self.monitor.set_state(json.loads(stashed))

        esper = {name: math.nan for name in ALL_METRICS}
        esper.update(_learner_metrics(result.get(LEARNER_RESULTS, {})))
        env_runners = result.get(ENV_RUNNER_RESULTS, {})
        esper.update(env_metrics(env_runners.get(RESULT_KEY, {})))
        record = self.monitor.update(esper)
        esper.update(record)
        env_steps = env_runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
        esper[ENV_STEPS] = env_steps
        result[RESULT_KEY] = esper
        result["timesteps_total"] = env_steps

        if metrics_logger is not None:
            metrics_logger.log_value(MONITOR_STATE_KEY, json.dumps(self.monitor.get_state()),
                                     reduce="item")


def _learner_metrics(learners: Mapping[str, Any]) -> dict[str, float]:
    """Our learner metrics (learners/<module id>/esper/...) of the single-agent module."""
    for module_results in learners.values():
        if isinstance(module_results, Mapping) and RESULT_KEY in module_results:
            ours = module_results[RESULT_KEY]
            # None: an iteration with nothing to learn from (e.g. every env runner was down).
            return {k: math.nan if v is None else float(v) for k, v in ours.items()
                    if k in LEARNER_METRICS}
    return {}


def env_metrics(counters: Mapping[str, Any]) -> dict[str, float]:
    """ENV_METRICS of one iteration from the env runners' reduced counters."""

    def count(name: str) -> float:
        # A counter that no env runner bumped this iteration reduces to NaN (or is absent):
        # it counted nothing.
        value = float(counters.get(name, 0))
        return 0.0 if math.isnan(value) else value

    steps = count(_STEPS)

    def frac(n: float) -> float:
        return n / steps if steps else math.nan

    out = {}
    for op in Op:
        out[f"op_count_{op.name}"] = count(f"op_count_{op.name}")
        out[f"op_frac_{op.name}"] = frac(out[f"op_count_{op.name}"])
    out["invalid_action_frac"] = frac(count(_INVALID))
    out["reward_mean"] = frac(count(_REWARD_SUM))
    for sign, key in _REWARD_SIGN.items():
        out[f"reward_{sign}_frac"] = frac(count(key))
    out["rollbacks"] = count("rollbacks")
    # Extremes and per-episode means have no value without data: NaN stays NaN.
    for name in ("reward_min", "reward_max", "episode_val_acc", "episode_fossils",
                 "episode_seed_params"):
        out[name] = float(counters.get(name, math.nan))
    return out
