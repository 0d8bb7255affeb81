"""Names of the platform's own metrics: the one list that the learner, callbacks, collapse
monitor, CLI, Tune sweeps and the report agree on.

Every metric is computed by us (not relabelled from RLlib) and copied, flat, into
``result[RESULT_KEY][name]`` at the end of each training iteration, so TensorBoard shows it once,
as ``esper/<name>`` (tuning/tensorboard.py), and Tune's CSV as ``esper/<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from envs.contract import HEADS, Op

RESULT_KEY = "esper"
# x axis for TensorBoard: Tune uses result["timesteps_total"] as the step.
ENV_STEPS = "env_steps"

# PopArt's value-target statistics after the iteration's update (value_target_norm=popart only).
POPART_METRICS = ("popart_mean", "popart_std")

# The value phase after the PPO steps (learner critic_steps > 0 only): its gradient steps, the
# episodes (sequences) it trains on (the current batch plus the replayed ones), its value loss
# (mean over its steps, return scale) and pre-clip gradient norm, and the explained variance on
# the current batch after it (explained_variance_post is after the PPO steps, before it).
CRITIC_PHASE_METRICS = (
    "critic_phase_steps",
    "critic_phase_episodes",
    "critic_phase_value_loss",
    "critic_phase_grad_norm_pre_clip",
    "critic_phase_explained_variance_post",
)
# Learner metrics that exist only with their option on.
OPTIONAL_LEARNER_METRICS = (*POPART_METRICS, *CRITIC_PHASE_METRICS)

# Learner-side, one value per training iteration (ppo/telemetry.py; docs/design.md, Metrics).
LEARNER_METRICS = (
    "value_loss",
    "policy_loss",
    "total_loss",
    "explained_variance",
    "explained_variance_post",
    # 1.0 when Var(G) < 1e-8 made explained variance undefined (then NaN) this iteration.
    "explained_variance_undefined",
    # Against the discounted return-to-go the env paid, not the GAE targets (ppo/gae.py).
    "explained_variance_return",
    "return_mean",
    "return_std",
    "value_mean",
    "value_std",
    "q_spread",
    "q_spread_start",
    "entropy",
    *(f"entropy_{h}" for h in HEADS),
    "grad_norm_pre_clip",
    "clip_ratio",
    "gradient_steps",
    *(f"grad_norm_{h}" for h in HEADS),
    "grad_norm_value",
    "kl",
    # Each head's KL(old || new) over the steps where it is causally relevant: which part of
    # the factored policy the update moved.
    *(f"kl_{h}" for h in HEADS),
    "approx_kl_pre",
    "clip_fraction",
    *(f"clip_fraction_{h}" for h in HEADS),
    "ratio_mean",
    "ratio_max",
    "advantage_mean",
    "advantage_std",
    "pre_norm_advantage_mean",
    "pre_norm_advantage_std",
    "lstm_h_norm",
    "lstm_c_norm",
    *OPTIONAL_LEARNER_METRICS,
)

# Env-runner side, from sampled steps and finished episodes.
ENV_METRICS = (
    *(f"op_frac_{op.name}" for op in Op),
    *(f"op_count_{op.name}" for op in Op),
    "invalid_action_frac",
    "reward_mean",
    "reward_min",
    "reward_max",
    "reward_zero_frac",
    "reward_pos_frac",
    "reward_neg_frac",
    "episode_val_acc",
    "episode_fossils",
    "episode_seed_params",
    "rollbacks",
)

# Collapse monitor (ppo/collapse.py: flags and thresholds).
COLLAPSE_FLAGS = (
    "ev_negative",
    "q_spread_collapsed",
    "extreme_clipping",
    "kl_stalled",
    "high_initial_value_loss",
)
VERDICTS = ("failure", "weak", "strong")
# TensorBoard holds numbers only: the verdict is also written as its index in VERDICTS
# (-1 while undetermined).
VERDICT = "verdict"
VERDICT_CODE = "verdict_code"
MONITOR_METRICS = (*(f"flag_{f}" for f in COLLAPSE_FLAGS), VERDICT_CODE, "ev_trailing",
                   "ev_return_trailing")

ALL_METRICS = (*LEARNER_METRICS, *ENV_METRICS, *MONITOR_METRICS)

# Metrics other modules single out by name (the console, the TensorBoard dashboard).
EV = "explained_variance"
EV_POST = "explained_variance_post"
EV_RETURN = "explained_variance_return"
EV_TRAILING = "ev_trailing"
EV_RETURN_TRAILING = "ev_return_trailing"
VALUE_LOSS = "value_loss"
CLIP_RATIO = "clip_ratio"
KL = "kl"
APPROX_KL_PRE = "approx_kl_pre"
Q_SPREAD = "q_spread"
Q_SPREAD_START = "q_spread_start"
RETURN_MEAN, RETURN_STD = "return_mean", "return_std"
VALUE_MEAN, VALUE_STD = "value_mean", "value_std"
PRE_NORM_ADVANTAGE_STD = "pre_norm_advantage_std"
ENTROPY = "entropy"
HEAD_ENTROPIES = tuple(f"{ENTROPY}_{h}" for h in HEADS)
OP_FRACTIONS = tuple(f"op_frac_{op.name}" for op in Op)
EPISODE_VAL_ACC = "episode_val_acc"
EPISODE_FOSSILS = "episode_fossils"


def final_evs(last: Mapping[str, Any]) -> tuple[float, float]:
    """A run's final EV and final EV against the return-to-go, from its last iteration's
    metrics: the collapse monitor's trailing-window medians (what its verdict judges), or, while
    that window holds no EV yet (the warm-up iterations), that iteration's own EVs. The one
    definition the console, the report (``final_ev``, ``final_ev_return``) and the post-mortem
    print."""

    def num(name: str) -> float:
        value = last.get(name)
        return math.nan if value is None else float(value)

    def pick(trailing: str, own: str) -> float:
        value = num(trailing)
        return value if not math.isnan(value) else num(own)

    return pick(EV_TRAILING, EV), pick(EV_RETURN_TRAILING, EV_RETURN)
