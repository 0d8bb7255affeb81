"""The one table of knobs, resolved over the profiles and presets (``run.profiles``), and the
one PPOConfig builder.

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium

import envs
from envs.config import DEFAULTS as ENV_DEFAULTS
from envs.config import HOST_KERNELS, INT_MINIMUMS, REWARD_NORMALIZATIONS
from envs.rewards import REWARD_MODES
from envs.tasks import TASKS
from esper_rllib.knob import (
    ENV,
    ENV_RUNNERS,
    FAULT,
    LEARNER,
    MODEL,
    RESOURCES,
    RUN,
    TRAINING,
    ConfigError,
    Knob,
)
from esper_rllib.model.model_config import MODEL_KNOBS, resolve_model_config, sequence_length
from esper_rllib.ppo.learner_config import LEARNER_KNOBS
from esper_rllib.run.profiles import DEFAULT_PROFILE, PRESETS, PROFILES, RENAMED_PROFILES

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec


def _env(name: str, type_: type, help: str, **kwargs: Any) -> Knob:
    """An env kwarg's knob, its default the env's own (``envs.config.DEFAULTS``: one table; a
    profile names the value it runs where it differs)."""
    default = ENV_DEFAULTS[kwargs.get("key") or name]
    return Knob(default, type_, ENV, help, optional=default is None, **kwargs)


def _env_int(name: str, help: str, **kwargs: Any) -> Knob:
    """An integer env kwarg's knob, its default and bounds the env's own."""
    return _env(name, int, help, minimum=INT_MINIMUMS[name], **kwargs)


KNOBS: dict[str, Knob] = {
    # --- the environment (env kwargs, validated by envs/config.py) ---
    "env": Knob(envs.ENV_ID, str, RUN, "gymnasium id: the real env or a probe",
                choices=(envs.ENV_ID, *envs.PROBE_IDS), searchable=False),
    "task": _env("task", str, "task preset (host + data set)", choices=tuple(TASKS)),
    "n_train": _env_int("n_train", "training images (none = the task's)"),
    "n_val": _env_int("n_val", "validation images (none = the task's)"),
    "max_epochs": _env_int("max_epochs", "episode length in host epochs", searchable=False),
    "max_seeds": _env_int("max_seeds", "live + fossilized seeds at once (0 = unlimited)"),
    # Every profile names the reward it runs (aligned); the default is the env's own.
    "reward": _env("reward", str, "reward mode (every profile runs aligned; shaped, the env's "
                   "default, is the reference's, for reproducing the seed document)",
                   choices=REWARD_MODES),
    "reward_normalization": _env("reward_normalization", str, "reward scaling (auto: "
                                 "running_std for the reference's modes, none for aligned)",
                                 choices=REWARD_NORMALIZATIONS),
    "data_dir": _env("data_dir", str, "CIFAR-10 directory (none = $ESPER_DATA_DIR)"),
    "env_device": _env("env_device", str, "device the host trains on (cuda whenever "
                       "gpus_per_env_runner > 0)", key="device",
                       pattern=r"cpu|auto|cuda|cuda:\d+"),
    "host_kernel": _env("host_kernel", str, "how the host's epoch is computed: fused numba "
                        "kernels (the 1x1 host on a CPU), the PyTorch reference, or auto (fused "
                        "where it applies); the same function", choices=HOST_KERNELS),
    "data_seed": _env_int("data_seed", "which fixed data set of the task"),
    "inject_nan_at_epoch": _env_int("inject_nan_at_epoch", "force a governor rollback at this "
                                    "host epoch (fault tests)"),
    # --- the network (model_config) and the loss (learner_config_dict): their own tables ---
    **MODEL_KNOBS,
    **LEARNER_KNOBS,
    # --- PPO (PPOConfig.training) ---
    "lr": Knob(1e-4, float, TRAINING, "Adam learning rate", minimum=0.0),
    # RLlib clips only when grad_clip is truthy: 0 would silently turn clipping off.
    "max_grad_norm": Knob(1.0, float, TRAINING, "global gradient-norm clip", above=0.0,
                          key="grad_clip"),
    "clip_param": Knob(0.2, float, TRAINING, "PPO ratio clip", minimum=0.0),
    "gamma": Knob(0.995, float, TRAINING, "discount", minimum=0.0, maximum=1.0),
    "lambda_": Knob(0.98, float, TRAINING, "GAE lambda", minimum=0.0, maximum=1.0),
    "num_epochs": Knob(1, int, TRAINING, "passes over each batch; gradient steps per batch = "
                       "num_epochs x minibatches (1 x 1 = the reference)", minimum=1,
                       online_only="PPO's passes over each batch"),
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
    # What a user wants on a busy machine is the batch, late: RLlib drops the episodes of a
    # sample() past its timeout, so none waits for them; a timeout that passes with no episode
    # stops the run with one line (EsperPPO.training_step) rather than train on nothing.
    "sample_timeout_s": Knob(None, float, ENV_RUNNERS, "seconds one sample() may take (none = "
                             "wait for the episodes however busy the machine; a timeout with "
                             "no episode stops the run)", minimum=1.0, optional=True),
    "gpus": Knob(0.0, float, RESOURCES, "GPUs of the learner", minimum=0.0, searchable=False),
    "gpus_per_env_runner": Knob(0.0, float, RESOURCES, "GPUs of each env runner (the env "
                                "then trains its host on cuda)", minimum=0.0, searchable=False),
    "restart_failed_env_runners": Knob(True, bool, FAULT, "restart env runners that die"),
    "env_runner_restart_delay_s": Knob(5.0, float, FAULT, "wait before restarting a dead "
                                       "env runner", minimum=0.0,
                                       key="delay_between_env_runner_restarts_s"),
    # --- the run ---
    "rng_seed": Knob(0, int, RUN, "seed of torch's and numpy's random numbers; env i of runner "
                     "w starts from rng_seed x 10000 + w x envs per runner + i", minimum=0),
    "iterations": Knob(10, int, RUN, "training iterations (batches)", minimum=1,
                       searchable=False),
    "checkpoint_every": Knob(5, int, RUN, "checkpoint every N iterations (0 = only at the "
                             "end)", minimum=0, searchable=False),
}

# The profiles and presets are pure data in run/profiles.py, where the CLI's parsers read their
# names without importing this table and the env it takes its bounds from; imported from here too.


def _unknown(what: str, name: str, known: Sequence[str]) -> ConfigError:
    """One line: the near misses ("did you mean"), then the known names, or where to find
    them when there are too many for a line."""
    import difflib

    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    listing = (f"known: {', '.join(known)}" if len(known) <= 12
               else f"`esper-rllib knobs` lists all {len(known)}")
    return ConfigError(f"unknown {what} {name!r}{hint} ({listing})" if hint or len(known) > 12
                       else f"unknown {what} {name!r}; {listing}")


# Old knob names, each a one-line error naming the new one ("seed" names the grown module).
RENAMED_KNOBS: dict[str, str] = {"seed": "rng_seed"}


def _unknown_key(name: str) -> ConfigError:
    if name in RENAMED_KNOBS:
        return ConfigError(f"key {name!r} is now called {RENAMED_KNOBS[name]!r}")
    return _unknown("key", name, list(KNOBS))


def _check_value(name: str, value: Any) -> Any:
    if name not in KNOBS:
        raise _unknown_key(name)
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
            raise _unknown_key(name)
        out[name] = KNOBS[name].parse(name, text)
    return out


def parse_grid(items: Sequence[str], typed: Callable[[str, str], Any] | None = None,
               reserved: Mapping[str, str] | None = None) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` (``--grid``) -> ``{key: [values]}``, each value typed by
    ``typed(key, text)`` (default: the knob's type, as ``--set``). ConfigError for an item that
    is not key=v1,v2,..., a key given twice, a value given twice, or a ``reserved`` key (key ->
    why it is not a grid axis)."""
    grid: dict[str, list[Any]] = {}
    reserved = reserved or {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        texts = [v.strip() for v in text.split(",")]
        if not sep or not key or not all(texts):
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,...")
        if key in reserved:
            raise ConfigError(f"--grid {key}: {reserved[key]}")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        values = [typed(key, t) if typed else parse_set([f"{key}={t}"])[key] for t in texts]
        if any(v in values[:i] for i, v in enumerate(values)):
            raise ConfigError(f"--grid {key}: repeated value in {texts}")
        grid[key] = values
    return grid


def resolve_knobs(profile: str = DEFAULT_PROFILE, preset: str | None = None,
                  overrides: Mapping[str, Any] | None = None,
                  online: bool = True) -> dict[str, Any]:
    """Every knob's value: defaults <- profile <- preset <- overrides, validated. ``online``
    False (critic-fit's knobs on a recording): ``minibatches`` is not bounded by the online
    batch (``episodes_per_batch``); the caller bounds it by its own training episodes."""
    if profile in RENAMED_PROFILES:
        raise ConfigError(f"profile {profile!r} is now called {RENAMED_PROFILES[profile]!r}")
    if profile not in PROFILES:
        raise _unknown("profile", profile, list(PROFILES))
    if preset is not None and preset not in PRESETS:
        raise _unknown("preset", preset, list(PRESETS))
    knobs = {name: knob.default for name, knob in KNOBS.items()}
    layers = (PROFILES[profile], PRESETS.get(preset, {}), overrides or {})
    for where, layer in zip((f"profile {profile}", f"preset {preset}", None), layers,
                            strict=True):
        for name, value in layer.items():
            try:
                knobs[name] = _check_value(name, value)
            except ConfigError as err:
                # A profile's or preset's own bad entry names where it comes from.
                raise ConfigError(f"{where}: {err}" if where else str(err)) from None
    _stack_batch(knobs, {name for layer in layers for name in layer})
    _check_together(knobs, online)
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


def _check_together(knobs: Mapping[str, Any], online: bool) -> None:
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
        if online and n > knobs["episodes_per_batch"]:
            raise ConfigError(f"minibatches={n}: each minibatch holds whole episodes; allowed: "
                              f"1..episodes_per_batch = {knobs['episodes_per_batch']}")
    seq_len = knobs["max_seq_len"]
    if seq_len is not None and seq_len < episode_steps(knobs) + 1:
        raise ConfigError(
            f"max_seq_len={seq_len}: the learner trains whole episodes as one sequence; "
            f"allowed: none or >= max_epochs + 1 = {episode_steps(knobs) + 1}")
    model_config = _model_section(knobs)
    if not any(_is_search_space(v) for v in model_config.values()):
        try:
            resolve_model_config(model_config)
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


def _model_section(knobs: Mapping[str, Any]) -> dict[str, Any]:
    model = _section(knobs, MODEL)
    model["max_seq_len"] = sequence_length(model["max_seq_len"], episode_steps(knobs))
    return model


@dataclass(frozen=True)
class Optimiser:
    """The optimiser's knobs, named as ``PPOConfig.training`` takes them (in a sweep's base a
    Tune search space may stand for a number)."""

    lr: float
    grad_clip: float


@dataclass(frozen=True)
class Sections:
    """One run's knobs in the sections that read them: the network's (``model_config``, its
    sequence length resolved), the loss's (``learner_config_dict``) and the optimiser's. The
    PPOConfig builder hands them to RLlib; the offline commands read them without it."""

    model: dict[str, Any]
    learner: dict[str, Any]
    optimiser: Optimiser


def sections(knobs: Mapping[str, Any]) -> Sections:
    """``knobs`` (as ``resolve_knobs`` returns them) in their sections."""
    return Sections(model=_model_section(knobs), learner=_section(knobs, LEARNER),
                    optimiser=Optimiser(lr=knobs["lr"], grad_clip=knobs["max_grad_norm"]))


def module_spec(knobs: Mapping[str, Any], observation_space: Any,
                action_space: Any) -> RLModuleSpec:
    """The RLModule that ``build_ppo_config(knobs)`` trains, for the commands that build one
    outside PPO (``record``'s initial policy, ``critic-fit``'s critics)."""
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from esper_rllib.model.module import FactoredLSTM

    return RLModuleSpec(module_class=FactoredLSTM, observation_space=observation_space,
                        action_space=action_space, model_config=sections(knobs).model)


def build_ppo_config(knobs: Mapping[str, Any]) -> PPOConfig:
    """The PPOConfig of one run (``knobs`` as returned by ``resolve_knobs``)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from esper_rllib.model.module import FactoredLSTM
    from esper_rllib.ppo.algorithm import EsperPPO
    from esper_rllib.ppo.callbacks import EsperCallbacks
    from esper_rllib.ppo.env_runner import SeedOnceEnvRunner
    from esper_rllib.ppo.learner import FactoredPPOLearner

    batch = knobs["episodes_per_batch"] * episode_steps(knobs)
    run = sections(knobs)
    # The trainer process holds the learner (num_learners=0). With N remote env runners it
    # computes only while they wait for it (PPO samples, then learns, never both), so the run
    # asks for N CPUs in all: half a CPU for the trainer, (N - 0.5) / N for each runner (Ray
    # gives each process one torch thread either way); 2 runners sample on both cores of a
    # 2-core machine. The trainer's share cannot be 0: RLlib puts env runner i in bundle i of
    # the trial's placement group, bundle 0 being the trainer's. Sampling in the trainer
    # process (num_env_runners=0) keeps its one CPU.
    runners = knobs["num_env_runners"]
    main_cpus = 0.5 if runners else 1
    # Floored to Ray's 1e-4 resolution, so that the shares add up to no more than N.
    runner_cpus = int((runners - main_cpus) / runners * 1e4) / 1e4 if runners else 1
    return (
        PPOConfig(algo_class=EsperPPO)
        # The "envs:" prefix makes gymnasium import `envs` (which registers the ids) in every
        # remote env runner too.
        .environment(f"envs:{knobs['env']}", env_config=env_config(knobs))
        .env_runners(
            env_runner_cls=SeedOnceEnvRunner,
            num_env_runners=knobs["num_env_runners"],
            num_envs_per_env_runner=knobs["num_envs_per_env_runner"],
            gym_env_vectorize_mode=knobs["gym_env_vectorize_mode"],
            num_cpus_per_env_runner=runner_cpus,
            num_gpus_per_env_runner=knobs["gpus_per_env_runner"],
            sample_timeout_s=knobs["sample_timeout_s"],
            # Whole episodes only: one batch = episodes_per_batch complete episodes.
            batch_mode="complete_episodes",
            rollout_fragment_length="auto",
        )
        # Ray gives each actor of at most 1 CPU OMP_NUM_THREADS=1, so learner and env runners
        # each use one torch thread.
        .resources(num_cpus_for_main_process=main_cpus)
        .learners(
            learner_class=FactoredPPOLearner,
            num_learners=0,
            num_cpus_per_learner=main_cpus,
            num_gpus_per_learner=knobs["gpus"],
            learner_config_dict=run.learner,
        )
        .training(
            lr=run.optimiser.lr,
            grad_clip=run.optimiser.grad_clip,
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
                   model_config=run.model)
        .callbacks(EsperCallbacks)
        .fault_tolerance(
            restart_failed_env_runners=knobs["restart_failed_env_runners"],
            delay_between_env_runner_restarts_s=knobs["env_runner_restart_delay_s"],
        )
        .debugging(seed=knobs["rng_seed"])
    )

