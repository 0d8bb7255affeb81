"""The one table of knobs, the profiles and presets, and the one PPOConfig builder.

Every setting a user (``--set key=value``), a profile, a preset or a Tune sweep can change is a
``Knob`` in ``KNOBS``: its default, type, allowed values, help, and where it goes (an env kwarg, a
``model_config`` key, a ``learner_config_dict`` key, or a PPOConfig setting). ``resolve_knobs``
layers defaults <- profile <- preset <- overrides and validates the result; ``build_ppo_config``
turns it into the ``PPOConfig`` that ``esper-rllib train`` runs and Tune sweeps receive.

Tune search spaces (``tune.grid_search([...])``, i.e. ``{"grid_search": [...]}``) are accepted
as knob values wherever the builder only copies the value (each element is validated); knobs the
builder derives other settings from (batch sizes, sequence length, resources) must be concrete.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium

import envs
from envs.config import REWARD_NORMALIZATIONS
from envs.rewards import REWARD_MODES
from envs.tasks import TASKS
from esper_rllib.model.model_config import (
    CRITIC_TRUNKS,
    CRITICS,
    Q_BASELINES,
    resolve_model_config,
)
from esper_rllib.model.model_config import DEFAULTS as MODEL_DEFAULTS
from esper_rllib.model.model_config import PRESETS as MODEL_PRESETS
from esper_rllib.model.value_norm import VALUE_TARGET_NORMS

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig


class ConfigError(ValueError):
    """A bad knob, profile or preset: one line naming the key, what was wrong, what is allowed."""


# Where a knob goes.
ENV = "env kwarg"
MODEL = "model_config"
LEARNER = "learner_config_dict"
TRAINING = "PPOConfig.training"
ENV_RUNNERS = "PPOConfig.env_runners"
RESOURCES = "resources"
FAULT = "PPOConfig.fault_tolerance"
RUN = "run"

_NONE_WORDS = ("none", "null")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class Knob:
    default: Any
    type: type  # bool, int, float, str, or tuple (of positive ints, "a,b" on the command line)
    where: str
    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive lower bound (e.g. 0 for "strictly positive")
    optional: bool = False  # None allowed ("none" on the command line)
    key: str | None = None  # name at the destination when it differs from the knob's
    # False where the builder derives other settings from the value (no Tune search space).
    searchable: bool = True
    pattern: str | None = None  # a str knob's allowed form, as a regex (its own text in help)

    def allowed(self) -> str:
        if self.choices:
            text = " | ".join(map(str, self.choices))
        elif self.pattern:
            text = self.pattern
        elif self.type is bool:
            text = "true | false"
        elif self.type is tuple:
            text = "comma-separated ints >= 1"
        elif self.maximum is not None:
            text = f"{self.minimum:g} <= {self.type.__name__} <= {self.maximum:g}"
        elif self.minimum is not None:
            text = f"{self.type.__name__} >= {self.minimum:g}"
        elif self.above is not None:
            text = f"{self.type.__name__} > {self.above:g}"
        else:
            text = self.type.__name__
        return f"{text} | none" if self.optional else text

    def parse(self, name: str, text: str) -> Any:
        """Value of a command-line string, typed per the knob."""
        raw = text.strip()
        if self.optional and raw.lower() in _NONE_WORDS:
            return None
        try:
            if self.type is bool:
                value: Any = _BOOL_WORDS[raw.lower()]
            elif self.type is int:
                value = int(raw)
            elif self.type is float:
                value = float(raw)
            elif self.type is tuple:
                value = tuple(int(part) for part in raw.split(","))
            else:
                value = raw
        except (KeyError, ValueError):
            allowed = self.allowed()
            raise ConfigError(f"{name}={text!r}: not a valid value; allowed: {allowed}") from None
        return self.check(name, value)

    def check(self, name: str, value: Any) -> Any:
        """The value, validated (ints accepted for floats); ConfigError otherwise."""
        bad = ConfigError(f"{name}={value!r}: not allowed; allowed: {self.allowed()}")
        if value is None:
            if self.optional:
                return None
            raise bad
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is tuple and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise bad
        if self.type is float and math.isnan(value):
            raise bad
        if self.choices and value not in self.choices:
            raise bad
        numbers = value if self.type is tuple else (value,)
        if self.type is tuple and not (numbers and all(type(v) is int for v in numbers)):
            raise bad
        if self.minimum is not None and min(numbers) < self.minimum:
            raise bad
        if self.maximum is not None and max(numbers) > self.maximum:
            raise bad
        if self.above is not None and min(numbers) <= self.above:
            raise bad
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise bad
        return value


KNOBS: dict[str, Knob] = {
    # --- the environment (env kwargs, environment.md section 2) ---
    "env": Knob(envs.ENV_ID, str, RUN, "gymnasium id: the real env or a probe",
                choices=(envs.ENV_ID, *envs.PROBE_IDS), searchable=False),
    "task": Knob("synth_impaired", str, ENV, "task preset (host + data set)",
                 choices=tuple(TASKS)),
    "n_train": Knob(None, int, ENV, "training images (none = the task's)", minimum=1,
                    optional=True),
    "n_val": Knob(None, int, ENV, "validation images (none = the task's)", minimum=1,
                  optional=True),
    "max_epochs": Knob(150, int, ENV, "episode length in host epochs", minimum=1,
                       searchable=False),
    "max_seeds": Knob(2, int, ENV, "live + fossilized seeds at once (0 = unlimited)", minimum=0),
    "reward": Knob("aligned", str, ENV, "reward mode (shaped = the reference's, for "
                   "reproducing the seed document)", choices=REWARD_MODES),
    "reward_normalization": Knob("auto", str, ENV, "reward scaling (auto: running_std for "
                                 "the reference's modes, none for aligned)",
                                 choices=REWARD_NORMALIZATIONS),
    "data_dir": Knob(None, str, ENV, "CIFAR-10 directory (none = $ESPER_DATA_DIR)",
                     optional=True),
    "env_device": Knob("cpu", str, ENV, "device the host trains on (cuda whenever "
                       "gpus_per_env_runner > 0)", key="device", pattern=r"cpu|auto|cuda|cuda:\d+"),
    "data_seed": Knob(0, int, ENV, "which fixed data set of the task", minimum=0),
    "inject_nan_at_epoch": Knob(None, int, ENV, "force a governor rollback at this epoch "
                                "(fault tests)", minimum=0, optional=True),
    # --- the network (model_config, policy-and-ppo.md section 1; defaults: the module's) ---
    "lstm_hidden": Knob(MODEL_DEFAULTS["lstm_hidden"], int, MODEL, "LSTM hidden size",
                        minimum=1),
    "feature_dim": Knob(MODEL_DEFAULTS["feature_dim"], int, MODEL, "feature net width",
                        minimum=1),
    "embed_dim": Knob(MODEL_DEFAULTS["embed_dim"], int, MODEL, "blueprint embedding size",
                      minimum=1),
    "head_hidden": Knob(MODEL_DEFAULTS["head_hidden"], int, MODEL,
                        "hidden width of each policy head", minimum=1),
    "blueprint_head_hidden": Knob(MODEL_DEFAULTS["blueprint_head_hidden"], tuple, MODEL,
                                  "hidden widths of the blueprint head, e.g. 512,256",
                                  minimum=1),
    "value_head_depth": Knob(MODEL_DEFAULTS["value_head_depth"], int, MODEL,
                             "Linear layers in the value head", minimum=1),
    "value_head_layernorm": Knob(MODEL_DEFAULTS["value_head_layernorm"], bool, MODEL,
                                 "LayerNorm after hidden value layers"),
    "value_head_gain": Knob(MODEL_DEFAULTS["value_head_gain"], float, MODEL,
                            "orthogonal gain of the value output layer", above=0.0),
    "critic": Knob(MODEL_DEFAULTS["critic"], str, MODEL, "Q(s, op) or state value V(s)",
                   choices=CRITICS),
    "q_baseline": Knob(MODEL_DEFAULTS["q_baseline"], str, MODEL,
                       "GAE baseline of the q_op critic", choices=Q_BASELINES),
    "value_target_norm": Knob(MODEL_DEFAULTS["value_target_norm"], str, MODEL,
                              "value targets: raw, or PopArt (running mean/std, the output "
                              "layer rescaled to preserve predictions)",
                              choices=VALUE_TARGET_NORMS),
    "critic_trunk": Knob(MODEL_DEFAULTS["critic_trunk"], str, MODEL, "the value head reads the "
                         "policy's LSTM (shared) or a critic LSTM and encoder of its own "
                         "(separate)", choices=CRITIC_TRUNKS),
    "max_seq_len": Knob(None, int, MODEL, "LSTM training sequence length (none = max_epochs + "
                        "1: whole episodes plus the bootstrap step)", minimum=1, optional=True,
                        searchable=False),
    # --- the loss (learner_config_dict, policy-and-ppo.md section 3) ---
    "value_coef": Knob(0.5, float, LEARNER, "weight of the value loss", minimum=0.0),
    "entropy_coef": Knob(0.05, float, LEARNER, "weight of the entropy bonus", minimum=0.0),
    "ratio_mode": Knob("per_head", str, LEARNER, "PPO ratio per head or of the joint log-prob",
                       choices=("per_head", "joint")),
    "value_clip": Knob(None, float, LEARNER, "reference-style value clipping range (none = "
                       "off; normalised units with popart)", minimum=0.0, optional=True),
    "critic_lr_scale": Knob(1.0, float, LEARNER, "the value head's learning rate is lr x this",
                            above=0.0),
    "minibatches": Knob(1, int, LEARNER, "gradient steps per epoch, each on whole episodes",
                        minimum=1),
    "critic_steps": Knob(0, int, LEARNER, "value-only gradient steps per batch after the PPO "
                         "steps (Phasic Policy Gradient's value phase; a shared trunk stays "
                         "fixed in it)", minimum=0),
    "critic_replay": Knob(0, int, LEARNER, "earlier batches the value phase also trains on "
                          "(with their value targets as collected; nothing without "
                          "critic_steps)", minimum=0),
    "truncation_bootstrap": Knob(True, bool, LEARNER, "GAE bootstraps an episode cut at "
                                 "max_epochs with the critic's value of its last observation "
                                 "(the reference); false: the return ends at the horizon, as "
                                 "the env's does"),
    # --- PPO (PPOConfig.training) ---
    "lr": Knob(1e-4, float, TRAINING, "Adam learning rate", minimum=0.0),
    # RLlib clips only when grad_clip is truthy: 0 would silently turn clipping off.
    "max_grad_norm": Knob(1.0, float, TRAINING, "global gradient-norm clip", above=0.0,
                          key="grad_clip"),
    "clip_param": Knob(0.2, float, TRAINING, "PPO ratio clip", minimum=0.0),
    "gamma": Knob(0.995, float, TRAINING, "discount", minimum=0.0, maximum=1.0),
    "lambda_": Knob(0.98, float, TRAINING, "GAE lambda", minimum=0.0, maximum=1.0),
    "num_epochs": Knob(1, int, TRAINING, "passes over each batch; gradient steps per batch = "
                       "num_epochs x minibatches (1 x 1 = the reference)", minimum=1),
    "episodes_per_batch": Knob(4, int, TRAINING, "whole episodes per training batch",
                               minimum=1, searchable=False),
    # --- sampling and resources ---
    "num_env_runners": Knob(0, int, ENV_RUNNERS, "remote env runners (0 = sample in the "
                            "trainer process)", minimum=0, searchable=False),
    "num_envs_per_env_runner": Knob(1, int, ENV_RUNNERS, "envs stepped by each env runner",
                                    minimum=1, searchable=False),
    "gym_env_vectorize_mode": Knob("sync", str, ENV_RUNNERS, "how an env runner's envs are "
                                   "vectorised: sync (one after another) or "
                                   "vector_entry_point (the env's stacked vector env: their "
                                   "hosts train as one network; the real env only)",
                                   choices=("sync", "vector_entry_point"), searchable=False),
    # Resolved in resolve_knobs (it sets the two knobs above), so it never reaches RLlib itself.
    "stack_batch": Knob(False, bool, ENV_RUNNERS, "sample each env runner's share of the batch "
                        "(episodes_per_batch / max(num_env_runners, 1) episodes) as one "
                        "stacked vector env whose hosts train as one network; the real env "
                        "only (a probe steps one env)", searchable=False),
    "sample_timeout_s": Knob(600.0, float, ENV_RUNNERS, "seconds one sample() may take: env "
                             "steps are whole host epochs (none = wait forever)", minimum=1.0,
                             optional=True),
    "gpus": Knob(0.0, float, RESOURCES, "GPUs of the learner", minimum=0.0, searchable=False),
    "gpus_per_env_runner": Knob(0.0, float, RESOURCES, "GPUs of each env runner (the env "
                                "then trains its host on cuda)", minimum=0.0, searchable=False),
    "restart_failed_env_runners": Knob(True, bool, FAULT, "restart env runners that die"),
    "env_runner_restart_delay_s": Knob(5.0, float, FAULT, "wait before restarting a dead "
                                       "env runner", minimum=0.0,
                                       key="delay_between_env_runner_restarts_s"),
    # --- the run ---
    "seed": Knob(0, int, RUN, "seed of torch and numpy; env i of runner w starts from seed x "
                 "10000 + w x envs per runner + i", minimum=0),
    "iterations": Knob(10, int, RUN, "training iterations (batches)", minimum=1,
                       searchable=False),
    "checkpoint_every": Knob(5, int, RUN, "checkpoint every N iterations (0 = only at the "
                             "end)", minimum=0, searchable=False),
}

# Sizes per profile (experiments.md section 2); each must keep its time budget.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        # 40-epoch episodes: at 25 the oracle's gain over WAIT was within seed noise
        # (docs/results/signal-quick-aligned); 8 iterations keep `make run` near 10 minutes.
        "task": "synth_impaired", "n_train": 2048, "max_epochs": 40, "episodes_per_batch": 4,
        "iterations": 8, "lstm_hidden": 64, "feature_dim": 64, "head_hidden": 64,
        "blueprint_head_hidden": (64, 32), "sample_timeout_s": 600.0, "checkpoint_every": 5,
        "stack_batch": True,
    },
    "standard": {
        # About 4x quick in env steps (60 x 4 x 24 = 5,760 vs 40 x 4 x 8 = 1,280; the 512-wide
        # LSTM costs more per step), with 3x its batches.
        "task": "synth_impaired", "n_train": 2048, "max_epochs": 60, "episodes_per_batch": 4,
        "iterations": 24, "sample_timeout_s": 1800.0, "checkpoint_every": 8,
        "stack_batch": True,
    },
    "seed": {
        # The seed document's run: minutes per episode on a GPU. 4 env runners of 16 stacked
        # envs (one kernel per layer serves 16 hosts); one sample() call steps them through
        # whole episodes: allow 4 hours.
        "task": "cifar_impaired", "n_train": 50_000, "max_epochs": 150,
        "episodes_per_batch": 64, "iterations": 32, "num_env_runners": 4, "stack_batch": True,
        "gpus": 1.0, "sample_timeout_s": 14_400.0, "checkpoint_every": 4,
    },
}

# The seed document's value head before and after the fix (the module's presets) with the
# value_coef each run used (policy-and-ppo.md section 3).
PRESETS: dict[str, dict[str, Any]] = {
    name: {**MODEL_PRESETS[name], "value_coef": value_coef}
    for name, value_coef in (("seed_before", 0.5), ("seed_after", 1.0))
}


def _unknown(what: str, name: str, known: Sequence[str]) -> ConfigError:
    return ConfigError(f"unknown {what} {name!r}; known: {', '.join(known)}")


def _check_value(name: str, value: Any) -> Any:
    if name not in KNOBS:
        raise _unknown("key", name, list(KNOBS))
    knob = KNOBS[name]
    if _is_search_space(value):
        if not knob.searchable:
            raise ConfigError(f"{name}: a search space is not allowed here (other settings "
                              "are derived from it); give one value")
        return {"grid_search": [knob.check(name, v) for v in value["grid_search"]]}
    return knob.check(name, value)


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (``--set``) -> ``{key: typed value}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if name not in KNOBS:
            raise _unknown("key", name, list(KNOBS))
        out[name] = KNOBS[name].parse(name, text)
    return out


def resolve_knobs(profile: str = "quick", preset: str | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every knob's value: defaults <- profile <- preset <- overrides, validated."""
    if profile not in PROFILES:
        raise _unknown("profile", profile, list(PROFILES))
    if preset is not None and preset not in PRESETS:
        raise _unknown("preset", preset, list(PRESETS))
    knobs = {name: knob.default for name, knob in KNOBS.items()}
    layers = (PROFILES[profile], PRESETS.get(preset, {}), overrides or {})
    for layer in layers:
        for name, value in layer.items():
            knobs[name] = _check_value(name, value)
    _stack_batch(knobs, {name for layer in layers for name in layer})
    _check_together(knobs)
    return knobs


def _stack_batch(knobs: dict[str, Any], given: set[str]) -> None:
    """``stack_batch``: one stacked vector env per env runner, holding its share of the batch."""
    if not knobs["stack_batch"] or knobs["env"] != envs.ENV_ID:
        return
    runners = max(knobs["num_env_runners"], 1)
    if knobs["episodes_per_batch"] % runners:
        return  # _check_together names the batch rule
    stacked = {"num_envs_per_env_runner": knobs["episodes_per_batch"] // runners,
               "gym_env_vectorize_mode": "vector_entry_point"}
    for name, value in stacked.items():
        # A resolved run's own knobs given back (a sweep's base, a checkpoint) agree.
        if name in given and knobs[name] != value:
            raise ConfigError(f"{name}={knobs[name]}: stack_batch=true sets it to {value} "
                              "(one stacked env of episodes_per_batch / max(num_env_runners, 1) "
                              "sub-envs per env runner); allowed: leave it unset, or set "
                              "stack_batch=false")
        knobs[name] = value


def _check_together(knobs: Mapping[str, Any]) -> None:
    envs_per_round = max(knobs["num_env_runners"], 1) * knobs["num_envs_per_env_runner"]
    if knobs["episodes_per_batch"] % envs_per_round:
        # Each sampling round returns one episode per env; a partial round would overshoot
        # the batch and turn the one gradient step into several minibatches.
        raise ConfigError(
            f"episodes_per_batch={knobs['episodes_per_batch']}: must be a multiple of "
            f"max(num_env_runners, 1) x num_envs_per_env_runner = {envs_per_round}")
    if knobs["gym_env_vectorize_mode"] == "vector_entry_point" and knobs["env"] != envs.ENV_ID:
        raise ConfigError(f"gym_env_vectorize_mode=vector_entry_point: env {knobs['env']} has "
                          f"no vector env (only {envs.ENV_ID} has); allowed: sync")
    if knobs["gpus_per_env_runner"] > 0 and knobs["num_env_runners"] == 0:
        # Without remote env runners the env steps in the trainer process, which has only
        # the learner's `gpus`.
        raise ConfigError(f"gpus_per_env_runner={knobs['gpus_per_env_runner']}: needs "
                          "num_env_runners >= 1 (with 0 the env runs in the trainer; set "
                          "env_device=cuda and gpus instead)")
    minibatches = knobs["minibatches"]
    for n in minibatches["grid_search"] if _is_search_space(minibatches) else (minibatches,):
        if n > knobs["episodes_per_batch"]:
            raise ConfigError(f"minibatches={n}: each minibatch holds whole episodes; allowed: "
                              f"1..episodes_per_batch = {knobs['episodes_per_batch']}")
    seq_len = knobs["max_seq_len"]
    if seq_len is not None and seq_len < episode_steps(knobs) + 1:
        raise ConfigError(
            f"max_seq_len={seq_len}: the learner trains whole episodes as one sequence; "
            f"allowed: none or >= max_epochs + 1 = {episode_steps(knobs) + 1}")
    model_config = _section(knobs, MODEL)
    if not any(_is_search_space(v) for v in model_config.values()):
        try:
            resolve_model_config({**model_config, "max_seq_len": seq_len or 1})
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _is_search_space(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"grid_search"}


def episode_steps(knobs: Mapping[str, Any]) -> int:
    """Env steps of one episode: max_epochs for the real env, the probe's fixed length else."""
    if knobs["env"] == envs.ENV_ID:
        return knobs["max_epochs"]
    probe = gymnasium.envs.registration.load_env_creator(gymnasium.spec(knobs["env"]).entry_point)
    return probe.n_steps


def env_config(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Env kwargs of the real env (probes take none: their spaces and lengths are fixed)."""
    if knobs["env"] != envs.ENV_ID:
        return {}
    kwargs = _section(knobs, ENV)
    if knobs["gpus_per_env_runner"] > 0:
        kwargs["device"] = "cuda"
    return kwargs


def _section(knobs: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {KNOBS[n].key or n: v for n, v in knobs.items() if KNOBS[n].where == where}


def build_ppo_config(knobs: Mapping[str, Any]) -> PPOConfig:
    """The PPOConfig of one run (``knobs`` as returned by ``resolve_knobs``)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from esper_rllib.model.module import FactoredLSTM
    from esper_rllib.ppo.callbacks import EsperCallbacks
    from esper_rllib.ppo.env_runner import SeedOnceEnvRunner
    from esper_rllib.ppo.learner import FactoredPPOLearner

    steps = episode_steps(knobs)
    batch = knobs["episodes_per_batch"] * steps
    model_config = _section(knobs, MODEL)
    if model_config["max_seq_len"] is None:
        model_config["max_seq_len"] = steps + 1
    learner_config = _section(knobs, LEARNER)
    return (
        PPOConfig()
        # The "envs:" prefix makes gymnasium import `envs` (which registers the ids) in every
        # remote env runner too.
        .environment(f"envs:{knobs['env']}", env_config=env_config(knobs))
        .env_runners(
            env_runner_cls=SeedOnceEnvRunner,
            num_env_runners=knobs["num_env_runners"],
            num_envs_per_env_runner=knobs["num_envs_per_env_runner"],
            gym_env_vectorize_mode=knobs["gym_env_vectorize_mode"],
            num_cpus_per_env_runner=1,
            num_gpus_per_env_runner=knobs["gpus_per_env_runner"],
            sample_timeout_s=knobs["sample_timeout_s"],
            # Whole episodes only: one batch = episodes_per_batch complete episodes.
            batch_mode="complete_episodes",
            rollout_fragment_length="auto",
        )
        # Ray gives each 1-CPU actor OMP_NUM_THREADS=1, so learner and env runners each use
        # one torch thread.
        .resources(num_cpus_for_main_process=1)
        .learners(
            learner_class=FactoredPPOLearner,
            num_learners=0,
            num_gpus_per_learner=knobs["gpus"],
            learner_config_dict=learner_config,
        )
        .training(
            lr=knobs["lr"],
            grad_clip=knobs["max_grad_norm"],
            grad_clip_by="global_norm",
            clip_param=knobs["clip_param"],
            gamma=knobs["gamma"],
            lambda_=knobs["lambda_"],
            num_epochs=knobs["num_epochs"],
            train_batch_size_per_learner=batch,
            # No RLlib minibatches: a size in env steps would split the LSTM sequences (the
            # learner batch also holds one bootstrap step per episode). The learner splits each
            # of the num_epochs passes into `minibatches` groups of whole episodes.
            minibatch_size=None,
            shuffle_batch_per_epoch=False,
            # Our learner does its own value clipping; RLlib's clamps the squared error.
            vf_clip_param=float("inf"),
            use_kl_loss=False,
        )
        # Only the class in the spec: its model_config would override Tune grids in
        # rl_module(model_config=...) (RLlib's merge rule).
        .rl_module(rl_module_spec=RLModuleSpec(module_class=FactoredLSTM),
                   model_config=model_config)
        .callbacks(EsperCallbacks)
        .fault_tolerance(
            restart_failed_env_runners=knobs["restart_failed_env_runners"],
            delay_between_env_runner_restarts_s=knobs["env_runner_restart_delay_s"],
        )
        .debugging(seed=knobs["seed"])
    )

