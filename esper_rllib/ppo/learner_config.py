"""The loss's knobs (``learner_config_dict`` keys of ``FactoredPPOLearner``): one entry each,
from which the learner's defaults and validation derive."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esper_rllib.knob import LEARNER, Knob, resolve_table

_ONLINE = "a knob of the online PPO recipe"
# The PPO ratio per action head, or of the joint log-prob (esper_rllib.ppo.loss).
RATIO_MODES = ("per_head", "joint")
# What the critic regresses (esper_rllib.ppo.gae): GAE's lambda-return, or the return-to-go.
VALUE_TARGETS = ("gae", "return_to_go")
# What the value phase's early stop judges the held-back episodes against (esper_rllib.ppo.learner).
STOP_TARGETS = ("targets", "return_to_go")

LEARNER_KNOBS: dict[str, Knob] = {
    "value_coef": Knob(0.5, float, LEARNER, "weight of the value loss", minimum=0.0),
    "entropy_coef": Knob(0.05, float, LEARNER, "weight of the entropy bonus", minimum=0.0),
    "ratio_mode": Knob("per_head", str, LEARNER, "PPO ratio per head or of the joint log-prob",
                       choices=RATIO_MODES),
    "value_clip": Knob(None, float, LEARNER, "reference-style value clipping range (none = "
                       "off; normalised units with popart)", minimum=0.0, optional=True),
    "critic_lr_scale": Knob(1.0, float, LEARNER, "the critic's learning rate is lr x this (the "
                            "value head, and the critic trunk when it has its own)", above=0.0),
    "critic_weight_decay": Knob(0.0, float, LEARNER, "decoupled (AdamW) weight decay of the "
                                "critic's parameters only (the value head, and the critic "
                                "trunk when it has its own); the policy's never decay",
                                minimum=0.0),
    "critic_stop_fraction": Knob(0.0, float, LEARNER, "early stopping of the critic's training "
                                 "(the value phase; critic-fit): this fraction of its episodes "
                                 "held back, training stops when their value loss has not "
                                 "improved for critic_stop_patience steps and the best step's "
                                 "critic is kept (0 = off)", minimum=0.0, maximum=0.5),
    "critic_stop_patience": Knob(16, int, LEARNER, "steps without improvement on the held-back "
                                 "episodes before the critic's training stops", minimum=1),
    "critic_stop_target": Knob("targets", str, LEARNER, "what the value phase's early stop "
                               "judges the held-back episodes against: the critic's own "
                               "regression targets (targets) or the discounted return the env "
                               "paid (return_to_go: the phase stops where the critic leaves "
                               "the return, whatever its targets)", choices=STOP_TARGETS,
                               online_only="offline targets are the recorded return-to-go"),
    "minibatches": Knob(1, int, LEARNER, "gradient steps per epoch, each on whole episodes",
                        minimum=1),
    # The value phase: value-only gradient steps per batch after the PPO steps (0 = none), over
    # the current batch and the last critic_replay batches (replay does nothing without steps).
    "critic_steps": Knob(0, int, LEARNER, "value-only gradient steps per batch after the PPO "
                         "steps (Phasic Policy Gradient's value phase; a shared trunk stays "
                         "fixed in it)", minimum=0, online_only=_ONLINE),
    "critic_replay": Knob(0, int, LEARNER, "earlier batches the value phase also trains on "
                          "(with their value targets as collected; nothing without "
                          "critic_steps)", minimum=0, online_only=_ONLINE),
    # GAE at max_epochs: True bootstraps with the critic's value of the last observation (the
    # reference); False ends the return there, as the env does (no reward follows the horizon).
    "truncation_bootstrap": Knob(True, bool, LEARNER, "GAE bootstraps an episode cut at "
                                 "max_epochs with the critic's value of its last observation "
                                 "(the reference); false: the return ends at the horizon, as "
                                 "the env's does",
                                 online_only="offline targets are the recorded return-to-go"),
    # The critic's own values enter GAE's lambda-return at every later step (weight 1 - lambda
    # each) and at max_epochs (truncation_bootstrap): a critic can drift with its own targets.
    "value_target": Knob("gae", str, LEARNER, "what the critic regresses: GAE's "
                         "lambda-return (gae, the reference: the critic's own values at every "
                         "later step, and at max_epochs per truncation_bootstrap) or the "
                         "discounted return the env paid from each step to the episode's end "
                         "(return_to_go: no value of the critic in it); the advantages stay "
                         "GAE's either way", choices=VALUE_TARGETS,
                         online_only="offline targets are the recorded return-to-go"),
}
LEARNER_DEFAULTS: dict[str, Any] = {name: knob.default for name, knob in LEARNER_KNOBS.items()}


def resolve_learner_config(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``LEARNER_DEFAULTS`` overlaid with ``given``, validated (ConfigError naming the key)."""
    return resolve_table(LEARNER_KNOBS, given, "learner_config_dict")
