"""``FactoredLSTM``'s model_config: defaults (the reference sizes), presets and validation.

Kept apart from the module so the config builder can validate a run's settings before Ray starts.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esper_rllib.failure_runs import BROKEN_RUN, FIX
from esper_rllib.knob import MODEL, ConfigError, Knob, resolve_table

CRITICS = ("q_op", "v")
Q_BASELINES = ("sampled_op", "expected")
# Value targets: raw, or normalised by PopArt (esper_rllib.model.value_norm).
VALUE_TARGET_NORMS = ("none", "popart")
# shared: the policy's LSTM; separate: an LSTM and encoder of the critic's; mlp: a feed-forward
# critic of the current observation alone (its features already carry a short history).
CRITIC_TRUNKS = ("shared", "separate", "mlp")
# The observation's float features as the env gives them, or robustly standardised
# (esper_rllib.model.feature_norm).
FEATURE_NORMS = ("none", "robust")
# The module needs a sequence length for a stateful module when no builder derived one: the
# reference trains whole 150-epoch episodes.
REFERENCE_MAX_SEQ_LEN = 160


def sequence_length(max_seq_len: int | None, episode_steps: int | None = None) -> int:
    """The LSTM's training sequence length, the one rule for ``max_seq_len=None``: as given; else
    one whole episode and its bootstrap step (``episode_steps + 1``, what the config builder
    knows); else, with no episode length known (a module built without the builder),
    ``REFERENCE_MAX_SEQ_LEN``."""
    if max_seq_len is not None:
        return max_seq_len
    return REFERENCE_MAX_SEQ_LEN if episode_steps is None else episode_steps + 1

# The network's knobs (model_config keys): the reference network with the "after" value head.
MODEL_KNOBS: dict[str, Knob] = {
    "lstm_hidden": Knob(512, int, MODEL, "LSTM hidden size", minimum=1),
    "feature_dim": Knob(512, int, MODEL, "feature net width", minimum=1),
    "embed_dim": Knob(4, int, MODEL, "blueprint embedding size", minimum=1),
    "head_hidden": Knob(256, int, MODEL, "hidden width of each policy head", minimum=1),
    "blueprint_head_hidden": Knob((512, 256), tuple, MODEL,
                                  "hidden widths of the blueprint head, e.g. 512,256",
                                  minimum=1),
    "value_head_depth": Knob(4, int, MODEL, "Linear layers in the value head", minimum=1),
    "value_head_layernorm": Knob(True, bool, MODEL, "LayerNorm after hidden value layers"),
    "value_head_gain": Knob(0.01, float, MODEL, "orthogonal gain of the value output layer",
                            above=0.0),
    "critic": Knob("q_op", str, MODEL, "Q(s, op) or state value V(s)", choices=CRITICS),
    "q_baseline": Knob("sampled_op", str, MODEL, "GAE baseline of the q_op critic",
                       choices=Q_BASELINES),
    # PopArt statistics in the module (esper_rllib.model.value_norm), or raw value outputs.
    "value_target_norm": Knob("none", str, MODEL, "value targets: raw, or PopArt (running "
                              "mean/std, the output layer rescaled to preserve predictions)",
                              choices=VALUE_TARGET_NORMS),
    # Separate: its own blueprint embedding, feature net, LSTM and LayerNorm, as SB3's
    # RecurrentPPO does by default.
    "critic_trunk": Knob("shared", str, MODEL, "the value head reads the policy's LSTM (shared), "
                         "a critic LSTM and encoder of its own (separate), or a feed-forward "
                         "encoder of the current observation alone (mlp: no memory of the "
                         "episode)",
                         choices=CRITIC_TRUNKS, online_only="critic-fit sets it from --trunk"),
    "feature_norm": Knob("none", str, MODEL, "the observation's float features as the env gives "
                         "them (none), or centred on their median and scaled by their MAD, "
                         "clipped to +-5, statistics fitted once from the first training batch "
                         "(robust); every trunk reads them", choices=FEATURE_NORMS),
    # Piecewise-linear encoding (Gorishniy et al. 2022, "On Embeddings for Numerical Features
    # in Tabular Deep Learning"): esper_rllib.model.feature_norm.
    "critic_feature_bins": Knob(0, int, MODEL, "the critic trunk reads each float feature as "
                                "it is (0), or as a piecewise-linear encoding over this many "
                                "quantile bins, edges fitted once from the first training batch "
                                "(a network's analogue of a tree's thresholds); needs "
                                "critic_trunk mlp or separate", minimum=0),
    # What made a plain network read as much as gradient-boosted trees on recorded episodes
    # (docs/results/critic-opt-quick-aligned): no LayerNorm between its layers, and dropout.
    "critic_layernorm": Knob(True, bool, MODEL, "LayerNorm in the critic's own trunk (after its "
                             "encoder and after its LSTM or hidden layer; the value head's is "
                             "value_head_layernorm); needs critic_trunk mlp or separate"),
    "critic_dropout": Knob(0.0, float, MODEL, "dropout after every hidden layer of the critic "
                           "(its own trunk and the value head) while it trains; off whenever "
                           "values are judged or sampled", minimum=0.0, maximum=0.9),
    "max_seq_len": Knob(None, int, MODEL, "LSTM training sequence length (none = max_epochs + "
                        "1: whole episodes plus the bootstrap step)", minimum=1, optional=True,
                        searchable=False),
}
# Knobs of the critic's own trunk: set off their defaults, they need one.
OWN_TRUNK_KNOBS = ("critic_feature_bins", "critic_layernorm")
DEFAULTS: dict[str, Any] = {name: knob.default for name, knob in MODEL_KNOBS.items()}

# The seed document's value heads: the broken run and the fix.
PRESETS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in run.items() if k in MODEL_KNOBS}
    for name, run in (("seed_before", BROKEN_RUN), ("seed_after", FIX))
}

# Keys RLlib merges into every model_config on its own (PPOConfig._model_config_auto_includes).
RLLIB_INJECTED_KEYS = frozenset({"vf_share_layers"})

def resolve_model_config(model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``model_config``, validated; RLlib's injected keys dropped.

    Raises ValueError naming the bad key and what is allowed.
    """
    given = {k: v for k, v in (model_config or {}).items() if k not in RLLIB_INJECTED_KEYS}
    cfg = resolve_table(MODEL_KNOBS, given, "model_config")
    cfg["max_seq_len"] = sequence_length(cfg["max_seq_len"])
    # Hidden widths halve from lstm_hidden / 2 per layer: each must stay at least 1.
    if cfg["lstm_hidden"] >> (cfg["value_head_depth"] - 1) < 1:
        raise ConfigError(f"model_config['value_head_depth']={cfg['value_head_depth']}: not "
                          f"allowed; allowed: at most {cfg['lstm_hidden'].bit_length()} for "
                          f"lstm_hidden {cfg['lstm_hidden']}")
    bins = cfg["critic_feature_bins"]
    if bins == 1:
        raise ConfigError("model_config['critic_feature_bins']=1: not allowed; allowed: 0 (off) "
                          "or >= 2")
    for name in OWN_TRUNK_KNOBS:
        if cfg[name] != MODEL_KNOBS[name].default and cfg["critic_trunk"] == "shared":
            raise ConfigError(f"model_config['{name}']={cfg[name]}: needs a critic trunk of its "
                              "own (critic_trunk mlp or separate), not the policy's (shared)")
    return cfg
