"""The action/observation contract shared by the env, the policy and the loss.

Defined once here (the lowest layer) and imported everywhere else: op list, head order and
sizes, causal relevance, lifecycle stages, blueprint and blend-style names, feature widths.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from gymnasium import spaces


class Op(IntEnum):
    WAIT = 0
    GERMINATE = 1
    SET_ALPHA_TARGET = 2
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5


N_OPS = len(Op)


class Stage(IntEnum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    HOLDING = 4
    FOSSILIZED = 5
    PRUNED = 6
    EMBARGOED = 7
    RESETTING = 8


# The observation's stage one-hot has one extra "unknown" column.
N_STAGE_FEATURES = len(Stage) + 1

BLUEPRINT_NAMES = (
    "noop", "conv_light", "attention", "norm", "depthwise", "bottleneck", "conv_small",
    "conv_heavy", "lora", "lora_large", "mlp_small", "mlp", "flex_attention",
)
N_BLUEPRINTS = len(BLUEPRINT_NAMES)
CNN_BLUEPRINTS = tuple(range(1, 8))
# Index used in the `blueprints` observation for an empty slot (the embedding table has 14 rows).
EMPTY_BLUEPRINT = N_BLUEPRINTS

BLEND_STYLES = ("LINEAR_ADD", "LINEAR_MULTIPLY", "SIGMOID_ADD", "GATED_GATE")
TEMPOS = (3, 5, 8)
ALPHA_TARGETS = (0.5, 0.7, 1.0)
ALPHA_SPEEDS = (0, 3, 5, 8)
ALPHA_CURVES = ("LINEAR", "COSINE", "SIG6", "SIG12", "SIG24")

HEADS = ("op", "slot", "blueprint", "style", "tempo", "alpha_target", "alpha_speed", "alpha_curve")
N_HEADS = len(HEADS)


def head_sizes(n_slots: int) -> tuple[int, ...]:
    """Number of values of each action head, in HEADS order."""
    return (N_OPS, n_slots, N_BLUEPRINTS, len(BLEND_STYLES), len(TEMPOS), len(ALPHA_TARGETS),
            len(ALPHA_SPEEDS), len(ALPHA_CURVES))


_RELEVANT_HEADS = {
    Op.WAIT: ("op",),
    Op.GERMINATE: ("op", "slot", "blueprint", "style", "tempo", "alpha_target"),
    Op.SET_ALPHA_TARGET: ("op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"),
    Op.PRUNE: ("op", "slot", "alpha_speed", "alpha_curve"),
    Op.FOSSILIZE: ("op", "slot"),
    Op.ADVANCE: ("op", "slot"),
}

# RELEVANCE[op, h] = 1.0 when head h matters for op (causal relevance).
RELEVANCE = np.array(
    [[float(h in _RELEVANT_HEADS[op]) for h in HEADS] for op in Op], dtype=np.float32
)

N_BASE_FEATURES = 23
N_SLOT_FEATURES = 30


def n_features(n_slots: int) -> int:
    return N_BASE_FEATURES + N_SLOT_FEATURES * n_slots


def action_space(n_slots: int) -> spaces.MultiDiscrete:
    return spaces.MultiDiscrete(np.array(head_sizes(n_slots), dtype=np.int64))


def observation_space(n_slots: int) -> spaces.Dict:
    return spaces.Dict({
        "features": spaces.Box(-np.inf, np.inf, (n_features(n_slots),), np.float32),
        "blueprints": spaces.MultiDiscrete(np.full(n_slots, N_BLUEPRINTS + 1, dtype=np.int64)),
        "action_mask": spaces.Box(0.0, 1.0, (sum(head_sizes(n_slots)),), np.float32),
    })
