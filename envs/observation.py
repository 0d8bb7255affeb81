"""The observation: 23 base features + 30 per slot, blueprint indices, concatenated masks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs.contract import (
    BLEND_STYLES,
    EMPTY_BLUEPRINT,
    N_BASE_FEATURES,
    N_OPS,
    N_SLOT_FEATURES,
    N_STAGE_FEATURES,
    Stage,
)
from envs.lifecycle import Lifecycle, SlotState

HISTORY = 5
LOSS_SCALE = math.log(16.0)
FRESHNESS_DECAY = 0.995
MAX_TEMPO = 12.0


@dataclass
class EpisodeView:
    """The episode-level inputs of the base features."""

    epoch: int
    max_epochs: int
    val_loss: float
    val_acc: float
    loss_history: Sequence[float]  # previous val losses, oldest first (current excluded)
    acc_history: Sequence[float]
    last_action_valid: bool
    last_op: int | None  # None before the first step


def _loss_feature(loss: float) -> float:
    return math.log1p(loss) / LOSS_SCALE


def _padded(values: Sequence[float]) -> list[float]:
    tail = list(values)[-HISTORY:]
    return [0.0] * (HISTORY - len(tail)) + tail


def _clip1(x: float) -> float:
    return max(-1.0, min(1.0, x))


def base_features(ep: EpisodeView, lifecycle: Lifecycle) -> list[float]:
    n = lifecycle.n_slots
    stages = [s.stage for s in lifecycle.slots]
    op_onehot = [0.0] * N_OPS
    if ep.last_op is not None:
        op_onehot[ep.last_op] = 1.0
    return [
        ep.epoch / ep.max_epochs,
        _loss_feature(ep.val_loss),
        ep.val_acc / 100.0,
        *_padded([_loss_feature(v) for v in ep.loss_history]),
        *_padded([v / 100.0 for v in ep.acc_history]),
        stages.count(Stage.TRAINING) / n,
        stages.count(Stage.BLENDING) / n,
        (stages.count(Stage.HOLDING) + stages.count(Stage.FOSSILIZED)) / n,
        float(ep.last_action_valid),
        *op_onehot,
    ]


def slot_features(s: SlotState, max_epochs: int) -> list[float]:
    """30 features of one slot; all zero for an empty (DORMANT) slot."""
    if s.stage == Stage.DORMANT:
        return [0.0] * N_SLOT_FEATURES
    stage = [0.0] * N_STAGE_FEATURES
    stage[int(s.stage)] = 1.0
    a = s.alpha
    c = s.contribution if s.contribution is not None else 0.0
    freshness = FRESHNESS_DECAY ** s.epochs_since_measured if s.contribution is not None else 0.0
    return [
        float(s.has_seed),
        *stage,
        a.alpha,
        _clip1(c / 10.0),
        _clip1(s.contribution_velocity / 10.0),
        s.tempo / MAX_TEMPO,
        a.target,
        int(a.mode) / 2.0,
        a.steps_total / max_epochs,
        a.steps_done / max_epochs,
        a.steps_remaining / max_epochs,
        s.alpha_velocity,
        BLEND_STYLES.index(s.style) / 2.0 if s.has_seed else 0.0,
        _clip1(s.interaction / 10.0),
        min(s.grad_norm, 10.0) / 10.0,
        s.grad_health,
        float(s.vanishing),
        float(s.exploding),
        s.prev_grad_health,
        s.epochs_in_stage / max_epochs,
        freshness,
    ]


def features(ep: EpisodeView, lifecycle: Lifecycle) -> np.ndarray:
    out = base_features(ep, lifecycle)
    assert len(out) == N_BASE_FEATURES
    for s in lifecycle.slots:
        out.extend(slot_features(s, ep.max_epochs))
    return np.asarray(out, dtype=np.float32)


def blueprints(lifecycle: Lifecycle) -> np.ndarray:
    return np.array(
        [s.blueprint if s.has_seed and s.blueprint is not None else EMPTY_BLUEPRINT
         for s in lifecycle.slots],
        dtype=np.int64,
    )


def observation(ep: EpisodeView, lifecycle: Lifecycle) -> dict[str, np.ndarray]:
    return {
        "features": features(ep, lifecycle),
        "blueprints": blueprints(lifecycle),
        "action_mask": lifecycle.action_mask(),
    }
