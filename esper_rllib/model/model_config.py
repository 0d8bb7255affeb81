"""``FactoredLSTM``'s model_config: defaults (the reference sizes), presets and validation.

Kept apart from the module so the config builder can validate a run's settings before Ray starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esper_rllib.model.value_norm import VALUE_TARGET_NORMS

# The reference network (policy-and-ppo.md section 1) with the "after" value head.
DEFAULTS: dict[str, Any] = {
    "lstm_hidden": 512,
    "feature_dim": 512,
    "embed_dim": 4,
    "head_hidden": 256,
    "blueprint_head_hidden": (512, 256),
    "value_head_depth": 4,
    "value_head_layernorm": True,
    "value_head_gain": 0.01,
    "critic": "q_op",
    "q_baseline": "sampled_op",
    # PopArt statistics in the module (esper_rllib.model.value_norm), or raw value outputs.
    "value_target_norm": "none",
    # The value head's trunk: the policy's (shared, the reference) or a critic LSTM of its own
    # (separate: its own blueprint embedding, feature net, LSTM and LayerNorm, as SB3's
    # RecurrentPPO does by default).
    "critic_trunk": "shared",
    # RLlib needs it for a stateful module; the reference trains on whole 150-step episodes.
    "max_seq_len": 160,
}

# The seed document's value heads: the broken run and the fix.
PRESETS: dict[str, dict[str, Any]] = {
    "seed_before": {"value_head_depth": 2, "value_head_layernorm": False, "value_head_gain": 1.0},
    "seed_after": {"value_head_depth": 4, "value_head_layernorm": True, "value_head_gain": 0.01},
}

CRITICS = ("q_op", "v")
Q_BASELINES = ("sampled_op", "expected")
CRITIC_TRUNKS = ("shared", "separate")

# Keys RLlib merges into every model_config on its own (PPOConfig._model_config_auto_includes).
RLLIB_INJECTED_KEYS = frozenset({"vf_share_layers"})

_POSITIVE_INTS = ("lstm_hidden", "feature_dim", "embed_dim", "head_hidden", "value_head_depth",
                  "max_seq_len")


def resolve_model_config(model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``model_config``, validated; RLlib's injected keys dropped.

    Raises ValueError naming the bad key and what is allowed.
    """
    given = {k: v for k, v in (model_config or {}).items() if k not in RLLIB_INJECTED_KEYS}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"model_config: unknown key(s) {unknown}; known keys: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **given}
    for key in _POSITIVE_INTS:
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise ValueError(f"model_config[{key!r}]: must be a positive int, got {cfg[key]!r}")
    hidden = cfg["blueprint_head_hidden"]
    if isinstance(hidden, str | bytes) or not hasattr(hidden, "__iter__") or not all(
        _is_int(w) and w >= 1 for w in hidden
    ):
        raise ValueError(f"model_config['blueprint_head_hidden']: must be a sequence of positive "
                         f"ints, got {hidden!r}")
    cfg["blueprint_head_hidden"] = tuple(int(w) for w in hidden)
    if not isinstance(cfg["value_head_layernorm"], bool):
        raise ValueError(f"model_config['value_head_layernorm']: must be True or False, got "
                         f"{cfg['value_head_layernorm']!r}")
    gain = cfg["value_head_gain"]
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not gain > 0:
        raise ValueError(f"model_config['value_head_gain']: must be a positive number, got "
                         f"{gain!r}")
    cfg["value_head_gain"] = float(gain)
    # Hidden widths halve from lstm_hidden / 2 per layer: each must stay at least 1.
    if cfg["lstm_hidden"] >> (cfg["value_head_depth"] - 1) < 1:
        raise ValueError(f"model_config['value_head_depth']: at most "
                         f"{cfg['lstm_hidden'].bit_length()} for lstm_hidden "
                         f"{cfg['lstm_hidden']}, got {cfg['value_head_depth']}")
    for key, allowed in (("critic", CRITICS), ("q_baseline", Q_BASELINES),
                         ("value_target_norm", VALUE_TARGET_NORMS),
                         ("critic_trunk", CRITIC_TRUNKS)):
        if cfg[key] not in allowed:
            raise ValueError(f"model_config[{key!r}]: must be one of {allowed}, got {cfg[key]!r}")
    return cfg


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
