"""The seam to RLlib and Tune: every private name of theirs that this project uses, in one table.

RLlib 2.60 has no public way to do some of what the project needs: keep the learner's train
batch after the learner connector, cut minibatches of whole episodes, give each optimiser group
its own lr multiplier, seed each env once, take the critic's bootstrap value at rollout. Each
such use is a private name, and a Ray release may rename or reshape it without notice. Here
they are listed (``PRIVATE_NAMES``: the class that owns each, what kind of name it is, the
signature expected, who uses it and why), and the private attributes are read and written only
through the accessors below. Hooks that the project overrides (RLlib calls them by name) stay
methods of its subclasses, listed here with the method of RLlib's that calls them.

``problem(entry)`` holds an entry against the installed Ray and says in one line what changed
(``tests/ppo/test_rllib_seam.py`` runs it on every entry; no Ray start needed). When you upgrade
Ray, run that test first: each failing line names a name to port.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Kinds of private name.
HOOK = "hook"  # a method the project overrides; RLlib's `caller` calls it
CALL = "call"  # a method the project calls
ATTRIBUTE = "attribute"  # an instance attribute the project reads or writes
PROPERTY = "property"  # a property whose value the project relies on
KWARG = "kwarg"  # a private keyword argument of the owner's constructor
MODULE = "module"  # a private module, named as a logger whose messages the project filters

_LEARNER = "ray.rllib.algorithms.ppo.torch.ppo_torch_learner:PPOTorchLearner"
_RUNNER = "ray.rllib.env.single_agent_env_runner:SingleAgentEnvRunner"
_MODULE = "ray.rllib.core.rl_module.torch.torch_rl_module:TorchRLModule"
_TENSORBOARD = "ray.tune.logger:TBXLoggerCallback"


@dataclass(frozen=True)
class PrivateName:
    owner: str  # "module:Class" of the Ray class the project's code meets it on ("": MODULE)
    name: str
    kind: str
    used_by: str  # the project's files that use it, and what for
    signature: str | None = None  # HOOK, CALL: parameters as inspect prints them, no annotations
    caller: str | None = None  # HOOK: the owner's method that calls it

    @property
    def label(self) -> str:
        if self.kind == MODULE:
            return f"{self.name} ({self.kind})"
        return f"{self.owner.rpartition(':')[2]}.{self.name} ({self.kind})"


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # --- the learner (esper_rllib/ppo/learner.py) ---
    PrivateName(_LEARNER, "_make_batch_if_necessary", HOOK,
                "ppo/learner.py: keeps the iteration's train batch after the learner connector "
                "(post-update metrics, the value phase), fits feature norms and PopArt on it",
                "(self, training_data)", caller="_create_iterator_if_necessary"),
    PrivateName(_LEARNER, "_create_iterator_if_necessary", HOOK,
                "ppo/learner.py: minibatches of whole episodes (learner knob minibatches)",
                "(self, *, training_data, num_total_minibatches=0, num_epochs=1, "
                "minibatch_size=None, shuffle_batch_per_epoch=False, **kwargs)",
                caller="update"),
    PrivateName(_LEARNER, "_set_optimizer_lr", HOOK,
                "ppo/learner.py: the lr schedule sets each group at lr x its scale "
                "(critic_lr_scale)", "(optimizer, lr)", caller="after_gradient_based_update"),
    PrivateName(_LEARNER, "_set_slicing_by_batch_id", CALL,
                "ppo/learner.py: a batch sliced by sequence, for whole-episode minibatches",
                "(self, batch, *, value)"),
    PrivateName(_LEARNER, "_learner_connector", ATTRIBUTE,
                "ppo/learner.py: RLlib's learner pipeline, its pieces replaced by ours (one "
                "numpy pass to sequences, our GAE)"),
    PrivateName(_LEARNER, "_params", ATTRIBUTE,
                "ppo/learner.py: apply_gradients sets each parameter's gradient (RLlib's own "
                "checks every tensor for NaN twice; ours were made finite with their norms)"),
    PrivateName(_LEARNER, "_optimizer_parameters", ATTRIBUTE,
                "ppo/learner.py: apply_gradients steps every optimiser"),
    # --- the env runner (esper_rllib/ppo/env_runner.py) ---
    PrivateName(_RUNNER, "_reset_envs", HOOK,
                "ppo/env_runner.py: envs seeded once, on the runner's first reset",
                "(self, episodes, shared_data, explore)", caller="_reset_envs_and_episodes"),
    PrivateName(_RUNNER, "_sample", HOOK,
                "ppo/env_runner.py: bootstrap values of chunks cut mid-episode",
                "(self, *, num_timesteps=None, num_episodes=None, explore, "
                "random_actions=False, force_reset=False)", caller="sample"),
    PrivateName(_RUNNER, "_make_on_episode_callback", HOOK,
                "ppo/env_runner.py: the bootstrap value of an episode that ends truncated",
                "(self, which, idx, episodes)", caller="_sample"),
    PrivateName(_RUNNER, "_seed", ATTRIBUTE,
                "ppo/env_runner.py: each env's own seed; benchmarks/bench_sampling.py reads it"),
    PrivateName(_RUNNER, "_needs_initial_reset", ATTRIBUTE,
                "ppo/env_runner.py: later resets pass no seed (each env continues its stream)"),
    PrivateName(_RUNNER, "_ongoing_episodes", ATTRIBUTE,
                "ppo/env_runner.py: which env row a cut chunk's bootstrap value is in"),
    PrivateName(_RUNNER, "_cached_to_module", ATTRIBUTE,
                "ppo/env_runner.py: the env-to-module batch of every env's latest observation"),
    # --- the RLModule (esper_rllib/model/module.py): RLlib's documented override points ---
    PrivateName(_MODULE, "_forward", HOOK,
                "model/module.py: the train forward pass; ppo/learner.py calls it for the "
                "post-update metrics on sequences cut at their last real step",
                "(self, batch, **kwargs)", caller="_forward_train"),
    PrivateName(_MODULE, "_forward_exploration", HOOK,
                "model/module.py: sampling's forward pass (with the critic's outputs)",
                "(self, batch, **kwargs)", caller="forward_exploration"),
    PrivateName(_MODULE, "_forward_inference", HOOK,
                "model/module.py: evaluation's forward pass (with the critic's outputs)",
                "(self, batch, **kwargs)", caller="forward_inference"),
    # --- the builder and batches ---
    PrivateName("ray.rllib.algorithms.ppo:PPOConfig", "_model_config_auto_includes", PROPERTY,
                "model/model_config.py: RLLIB_INJECTED_KEYS, the keys RLlib merges into every "
                "model_config (dropped before validation)"),
    PrivateName("ray.rllib.policy.sample_batch:SampleBatch", "_zero_padded", KWARG,
                "ppo/learner.py: the value phase's batch is zero-padded sequences"),
    # --- Tune (tuning/) ---
    PrivateName(_TENSORBOARD, "_try_log_hparams", HOOK,
                "tuning/tensorboard.py: HParams from the trial's whole history",
                "(self, trial, result)", caller="log_trial_end"),
    PrivateName(_TENSORBOARD, "_trial_writer", ATTRIBUTE,
                "tuning/tensorboard.py: each trial's SummaryWriter"),
    PrivateName(_TENSORBOARD, "_trial_result", ATTRIBUTE,
                "tuning/tensorboard.py: whether a trial reported (HParams of a `train` run)"),
    PrivateName("ray.tune.trainable.trainable:Trainable", "_storage", ATTRIBUTE,
                "run/trainer.py: a continued run's checkpoints are numbered on "
                "(number_checkpoints_after)"),
    PrivateName("ray._private.resource_and_label_spec:ResourceAndLabelSpec", "resolve", CALL,
                "tuning/local_ray.py: this machine's CPUs and GPUs as a local ray.init counts "
                "them, before Ray starts", "(self, is_head, node_ip_address=None, "
                "resource_isolation_config=None)"),
    PrivateName("", "ray._common.deprecation", MODULE,
                "tuning/output.py: a logger whose harmless deprecation notice is filtered"),
    PrivateName("", "ray.train._internal.storage", MODULE,
                "tuning/output.py: a logger whose per-checkpoint notice is filtered"),
)


# --- accessors: the private attributes, read and written here only ----------------------------
def learner_connector(learner: Any) -> Any:
    """The learner's connector pipeline (None where aggregator actors run it)."""
    return learner._learner_connector


def learner_params(learner: Any) -> Mapping[Any, Any]:
    """Parameter reference -> parameter, of every optimiser's parameters."""
    return learner._params


def learner_optimizers(learner: Any) -> Iterable[Any]:
    """Every optimiser the learner registered."""
    return learner._optimizer_parameters


def slice_by_sequence(learner: Any, batch: Any) -> Any:
    """``batch`` (a MultiAgentBatch) made to slice by sequence rather than by step."""
    return learner._set_slicing_by_batch_id(batch, value=True)


def set_runner_seed(runner: Any, seed: int) -> None:
    """The seed an env runner's first reset passes to its vector env."""
    runner._seed = seed


def keep_env_streams(runner: Any) -> None:
    """The runner's next reset passes no seed: each env continues its own random stream."""
    runner._needs_initial_reset = False


def ongoing_episodes(runner: Any) -> list[Any]:
    """The episode of each env, by env row, as the runner is stepping them."""
    return runner._ongoing_episodes


def cached_to_module(runner: Any) -> Any:
    """The env-to-module batch of every env's latest observation (its carried state)."""
    return runner._cached_to_module


def number_checkpoints_after(trainable: Any, index: int) -> None:
    """A Tune trainable's next checkpoint folder is ``checkpoint_<index + 1>``."""
    if trainable._storage is not None:
        trainable._storage.current_checkpoint_index = index


# --- the contract --------------------------------------------------------------------------------
def owner_class(entry: PrivateName) -> Any:
    module, _, name = entry.owner.partition(":")
    return getattr(importlib.import_module(module), name)


def signature_text(func: Any) -> str:
    """A callable's parameters as ``inspect`` prints them, annotations left out (they name
    types by strings that change with imports, not with the contract)."""
    sig = inspect.signature(func)
    return str(sig.replace(
        parameters=[p.replace(annotation=inspect.Parameter.empty)
                    for p in sig.parameters.values()],
        return_annotation=inspect.Signature.empty))


def assigns(cls: type, name: str) -> bool:
    """Whether one of ``cls``'s Ray classes (its MRO) assigns ``self.<name>``."""
    pattern = re.compile(rf"self\.{re.escape(name)}\s*(:[^=\n]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass.__module__.startswith("ray.") and pattern.search(inspect.getsource(klass)):
            return True
    return False


def calls(cls: type, caller: str, name: str) -> bool:
    """Whether one of ``cls``'s Ray classes defines ``caller`` calling ``self.<name>(...)``
    (an override may hand on to the base's through super())."""
    return any(caller in vars(klass) and f"self.{name}(" in inspect.getsource(vars(klass)[caller])
               for klass in cls.__mro__ if klass.__module__.startswith("ray."))


def problem(entry: PrivateName) -> str | None:
    """One line naming ``entry`` and what changed on the installed Ray, or None."""
    import ray

    where = f"{entry.label} on ray {ray.__version__}, used by {entry.used_by.split(':')[0]}"
    if entry.kind == MODULE:
        try:
            found = importlib.util.find_spec(entry.name) is not None
        except ImportError:
            found = False
        return None if found else f"{where}: no such module"
    owner = owner_class(entry)
    if entry.kind == ATTRIBUTE:
        return None if assigns(owner, entry.name) else (
            f"{where}: no class of {owner.__name__}'s assigns self.{entry.name}")
    if entry.kind == KWARG:
        return None if f'"{entry.name}"' in inspect.getsource(owner.__init__) else (
            f"{where}: {owner.__name__}() no longer reads {entry.name}=")
    try:
        static = inspect.getattr_static(owner, entry.name)
    except AttributeError:
        return f"{where}: {owner.__name__} has no {entry.name}"
    if entry.kind == PROPERTY:
        return None if isinstance(static, property) else f"{where}: no longer a property"
    found = signature_text(getattr(owner, entry.name))
    if found != entry.signature:
        return f"{where}: signature {found}, expected {entry.signature}"
    if entry.caller is not None and not calls(owner, entry.caller, entry.name):
        return f"{where}: {owner.__name__}.{entry.caller} no longer calls it"
    return None


def problems() -> list[str]:
    """Every entry's problem on the installed Ray (empty: the seam holds)."""
    return [line for entry in PRIVATE_NAMES if (line := problem(entry)) is not None]
