"""What the online EV's target does to a trained critic's score, on recorded episodes.

For each checkpoint: the critic's EV on DATA's held-out episodes (critic-fit's split) against
(1) the discounted return-to-go (what `critic-fit --checkpoint` reports), (2) GAE(lambda)
targets built from the critic's own values, the horizon bootstrapped with its value of the last
recorded observation (a stand-in for the unrecorded final one, as the learner's targets are
built), (3) the same GAE targets with no bootstrap (truncation_bootstrap=false).

    RAY_AUTH_MODE=disabled .venv/bin/python docs/results/long-quick-aligned/bootstrap_ev.py \
        DATA CKPT [CKPT ...]
"""

import sys
from pathlib import Path

import numpy as np
import torch
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import load_checkpoint_module
from esper_rllib.offline.critic_fit import Critic, to_episodes
from esper_rllib.offline.fit_plan import plan_fit
from esper_rllib.offline.fit_run import split_records

GAMMA, LAMBDA = 0.995, 0.98  # the quick profile's


def ev(target: np.ndarray, value: np.ndarray) -> float:
    return float(1 - np.var(target - value) / np.var(target))


def gae_targets(rewards: np.ndarray, values: np.ndarray, bootstrap: float) -> np.ndarray:
    """RLlib's GAE targets (the learner's function) of one episode ended at the horizon, with
    ``bootstrap`` as the value after its last step."""
    n = len(rewards)
    truncated = np.zeros(n + 1)
    truncated[n - 1] = 1.0  # the episode ends: no advantage flows back from the extra step
    return compute_value_targets(values=np.append(values, bootstrap),
                                 rewards=np.append(rewards, 0.0), terminateds=np.zeros(n + 1),
                                 truncateds=truncated, gamma=GAMMA, lambda_=LAMBDA)[:n]


def main(data: str, checkpoints: list[str]) -> None:
    plan = plan_fit(data, overrides=[], grid=[], trunks="shared", seeds=1, steps=1,
                    train_episodes="all")
    _, held = split_records(plan, dataset.read_episodes(Path(data)))
    episodes = to_episodes(held, GAMMA)
    for path in checkpoints:
        with torch.no_grad():
            values = Critic.trained(load_checkpoint_module(path).eval()).values(episodes)
        returns, with_boot, without = [], [], []
        for i, record in enumerate(held):
            v = values[i, :len(record)].numpy().astype(np.float64)
            r = record.rewards.astype(np.float64)
            returns.append(episodes.targets[i, :len(record)].numpy())
            with_boot.append(gae_targets(r, v, bootstrap=v[-1]))
            without.append(gae_targets(r, v, bootstrap=0.0))
        v_all = values[episodes.mask].numpy()
        print(f"{path}: EV vs return-to-go {ev(np.concatenate(returns), v_all):+.3f}; "
              f"vs GAE targets, horizon bootstrapped {ev(np.concatenate(with_boot), v_all):+.3f}; "
              f"not bootstrapped {ev(np.concatenate(without), v_all):+.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
