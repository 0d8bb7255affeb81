"""A trained run's critic on recorded episodes (``esper-rllib critic-fit --checkpoint``).

The online EV of a run (``explained_variance``) is measured against the learner's GAE(lambda)
targets, which carry the critic's own values (and its bootstrap at truncation); offline fits
and the EV ceiling regress the discounted return-to-go. Scoring the run's final critic, as it
is, on a recording's held-out episodes puts it on the offline scale: the same targets, the same
episodes as every critic-fit cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from esper_rllib.offline.behaviour import load_checkpoint_module
from esper_rllib.offline.critic_fit import Critic, critic_ev, to_episodes
from esper_rllib.offline.dataset import read_episodes
from esper_rllib.offline.fit_plan import plan_fit
from esper_rllib.offline.fit_run import split_records
from esper_rllib.run.checkpoint_policy import load_run_config
from esper_rllib.run.config import ConfigError, env_config

# Where the host trains, and whether its epoch runs the fused kernels or PyTorch (the same
# function), do not change the episodes a run's env produces; a checkpoint from before the
# kernels has no host_kernel at all.
_NOT_COMPARED = ("device", "host_kernel")


@dataclass(frozen=True)
class CheckpointEV:
    checkpoint: str
    heldout_ev: float  # on the recording's held-out episodes (critic-fit's split)
    pool_ev: float  # on its training pool, which the run never saw either
    heldout: int
    pool: int


def checkpoint_evs(data: str | Path, checkpoints: Sequence[str]) -> list[CheckpointEV]:
    """Each checkpoint's critic on ``data``; ConfigError for a checkpoint whose env differs
    from the recording's."""
    plan = plan_fit(data, overrides=[], grid=[], trunks="shared", seeds=1, steps=1,
                    train_episodes="all")
    recorded = {k: v for k, v in env_config(plan.knobs({})).items() if k not in _NOT_COMPARED}
    modules = []
    for path in checkpoints:
        module = load_checkpoint_module(path)
        config = load_run_config(Path(path))
        env = {k: v for k, v in config["env_config"].items() if k not in _NOT_COMPARED}
        differ = sorted(k for k in recorded.keys() | env.keys() if recorded.get(k) != env.get(k))
        if differ:
            raise ConfigError(f"--checkpoint {path}: its env differs from the recording's in "
                              f"{', '.join(differ)}; allowed: a run of the recorded env")
        modules.append((path, module, float(config["gamma"])))
    pool, held = split_records(plan, read_episodes(Path(plan.data)))
    out = []
    for path, module, gamma in modules:
        critic = Critic.trained(module.eval())
        out.append(CheckpointEV(path, critic_ev(critic, to_episodes(held, gamma)),
                                critic_ev(critic, to_episodes(pool, gamma)), len(held),
                                len(pool)))
    return out
