"""The profiles (run sizes) and presets (named sets of knob values), defined once as pure data.

``run.config`` layers them under the knobs (defaults <- profile <- preset <- ``--set``) and
validates every value; the command-line parsers take their names and the default profile from
here, which imports neither torch nor Ray (``esper-rllib --help`` and argparse's errors import
this module only). Adding a profile or a preset is one entry here: ``--profile``/``--preset``
choices, ``esper-rllib knobs`` and ``resolve_knobs`` all read these dicts.
"""

from __future__ import annotations

from typing import Any

from esper_rllib.failure_runs import BROKEN_RUN, FIX

# What ``--profile`` and ``resolve_knobs`` use when none is named.
DEFAULT_PROFILE = "quick"

# The reward every profile runs, named in each: aligned (0.1 x the accuracy gained, less the
# seeds' parameter price) tracks final accuracy; the env's own default, shaped (the reference's,
# envs.config.DEFAULTS), reproduces the seed document's run with --set reward=shaped.
PLATFORM_REWARD = "aligned"

# Sizes per profile; each must keep its time budget (`quick`: `make run` near 10 minutes).
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        # 40-epoch episodes: at 25 the oracle's gain over WAIT was within seed noise
        # (docs/results/signal-quick-aligned); 8 iterations keep `make run` near 10 minutes.
        "task": "synth_impaired", "n_train": 2048, "max_epochs": 40, "episodes_per_batch": 4,
        "iterations": 8, "lstm_hidden": 64, "feature_dim": 64, "head_hidden": 64,
        "blueprint_head_hidden": (64, 32), "checkpoint_every": 5,
        "stack_batch": True, "reward": PLATFORM_REWARD,
    },
    "batch64": {
        # The seed document's budget on quick's env and module: 64 episodes per batch, 16
        # batches (1,024 episodes; `--iterations 32` for its 2,000). 16x quick's data per batch
        # buys PPO's usual update: 4 epochs x 4 minibatches of 16 whole episodes (640 env steps)
        # = 16 gradient steps per batch at Adam's lr 3e-4 (KL 0.015 and 0.007 after the first
        # two updates), where quick takes 1 step on 4 episodes at 1e-4. 2 env runners of 32
        # stacked envs: both cores of a 2-core machine sample (the trainer asks for half a CPU,
        # each runner 0.75); a checkpoint every 2 iterations.
        "task": "synth_impaired", "n_train": 2048, "max_epochs": 40, "episodes_per_batch": 64,
        "iterations": 16, "lstm_hidden": 64, "feature_dim": 64, "head_hidden": 64,
        "blueprint_head_hidden": (64, 32), "checkpoint_every": 2,
        "stack_batch": True, "num_env_runners": 2, "num_epochs": 4, "minibatches": 4,
        "lr": 3e-4, "reward": PLATFORM_REWARD,
    },
    "standard": {
        # About 4x quick in env steps (60 x 4 x 24 = 5,760 vs 40 x 4 x 8 = 1,280; the 512-wide
        # LSTM costs more per step), with 3x its batches.
        "task": "synth_impaired", "n_train": 2048, "max_epochs": 60, "episodes_per_batch": 4,
        "iterations": 24, "checkpoint_every": 8,
        "stack_batch": True, "reward": PLATFORM_REWARD,
    },
    "cifar": {
        # The seed document's run: minutes per episode on a GPU. 4 env runners of 16 stacked
        # envs (one kernel per layer serves 16 hosts); one sample() call steps them through
        # whole episodes (hours).
        "task": "cifar_impaired", "n_train": 50_000, "max_epochs": 150,
        "episodes_per_batch": 64, "iterations": 32, "num_env_runners": 4, "stack_batch": True,
        "gpus": 1.0, "checkpoint_every": 4,
        "reward": PLATFORM_REWARD,
    },
}

# One line per profile for `--profile`'s help: what the size is for.
PROFILE_ABOUT: dict[str, str] = {
    "quick": "4 episodes x 8 batches, minutes: `make run` and smoke tests",
    "batch64": "the seed document's budget, 64 episodes x 16 batches on both cores (~25 min): "
               "where the agent learns",
    "standard": "a 512-wide LSTM, 4 episodes x 24 batches",
    "cifar": "the seed document's CIFAR run, hours on a GPU",
}

# Old profile names, each a one-line error naming the new one ("seed" names the grown module).
RENAMED_PROFILES: dict[str, str] = {"seed": "cifar"}

# The critic that generalises, chosen by critic-fit's grids on 2,000 recorded episodes of random
# play (1,500 to train, 500 held out; held-out EV at the last step, docs/results/critic-opt-
# quick-aligned): a feed-forward critic trunk of the current observation (mlp), the features
# robustly standardised (feature_norm) and read as piecewise-linear encodings over 8 quantile
# bins (critic_feature_bins), no LayerNorm in the critic's trunk, dropout 0.2, the fix's value
# head at depth 2 (one hidden layer: no LayerNorm there either), its training stopped early on
# a quarter of its episodes. The steps: the fix's head on the mlp trunk 0.143 (0.172 with
# 8 minibatches and the critic's lr at 1e-3), with the bins 0.198, without the LayerNorms 0.223,
# with dropout 0.2 0.244; gradient-boosted trees read 0.252 from the same inputs. Without early
# stopping every LSTM critic memorised its episodes. Online the early stop acts in a value
# phase, so it has one: up to 128 value steps per batch over the current and the last 3
# batches (128 steps without a stop overfit one batch: docs/results/budget-quick-aligned).
CRITIC_FIX: dict[str, Any] = {**FIX, "value_head_depth": 2, "critic_trunk": "mlp",
                              "feature_norm": "robust", "critic_feature_bins": 8,
                              "critic_layernorm": False, "critic_dropout": 0.2,
                              "critic_stop_fraction": 0.25, "critic_steps": 128,
                              "critic_replay": 3}

# The agent that learns (sweep policy's cell lr 1e-3 x shaped at --profile batch64, 3 seeds:
# 17.1% on 32 fresh env seeds, +5.6 over WAIT, docs/results/policy-critic-fix-ple-budget-
# aligned): critic_fix, a larger update, and the reference's shaped reward (its stage potentials
# pay each advance of a seed when it happens).
LEARNING_AGENT: dict[str, Any] = {**CRITIC_FIX, "lr": 1e-3, "reward": "shaped"}

# The seed document's broken run and its fix (the value head and the value_coef each run used),
# the critic that generalises, and the agent that learns.
PRESETS: dict[str, dict[str, Any]] = {"seed_before": dict(BROKEN_RUN), "seed_after": dict(FIX),
                                      "critic_fix": CRITIC_FIX, "learning_agent": LEARNING_AGENT}
# The profile a preset's result was measured at (a preset not listed fits any): another
# profile is one line of warning, not an error (a smoke test at quick is legitimate).
PRESET_PROFILES: dict[str, str] = {"learning_agent": "batch64"}


def size_note(what: str, sized_for: str, profile: str) -> str | None:
    """One line when ``what`` (a preset or a sweep) runs on a profile it was not sized for."""
    if profile == sized_for:
        return None
    per_batch = (PROFILES[p].get("episodes_per_batch") for p in (sized_for, profile))
    return (f"note: {what} is sized for --profile {sized_for} ({next(per_batch)} episodes per "
            f"batch); this run uses {profile} ({next(per_batch)}): its results were measured at "
            f"{sized_for}")
