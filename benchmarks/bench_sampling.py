"""Sampling overhead: env steps per second through an RLlib SingleAgentEnvRunner (connectors,
the full-size FactoredLSTM, our callbacks) versus a raw loop over the same env with random
legal actions. Rounds alternate in one process so a noisy machine affects both alike.

Prints one summary line (ratio = runner steps/s / raw steps/s; 1.0 = no overhead).

    .venv/bin/python benchmarks/bench_sampling.py [--profile standard] [--steps 60] [--rounds 3]

The module has the profile's sizes (`standard`: the reference LSTM 512); the env is the
profile's task with --n-train images so an epoch is short and the overhead shows.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from esper_rllib.config import build_ppo_config, env_config, resolve_knobs  # noqa: E402
from esper_rllib.random_actions import random_legal_action  # noqa: E402


class RawLoop:
    """The same env stepped directly with random legal actions; episodes run on across rounds,
    resets included, as in the runner."""

    def __init__(self, env: gym.Env, rng: np.random.Generator) -> None:
        self.env, self.rng = env, rng
        self.n_slots = len(env.observation_space["blueprints"].nvec)
        self.obs, _ = env.reset(seed=int(rng.integers(1 << 30)))

    def steps_per_s(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            action = random_legal_action(self.obs["action_mask"], self.n_slots, self.rng)
            self.obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                self.obs, _ = self.env.reset()
        return steps / (time.perf_counter() - start)


def runner_steps_per_s(runner: object, steps: int) -> float:
    start = time.perf_counter()
    episodes = runner.sample(num_timesteps=steps, explore=True)
    done = sum(len(e) for e in episodes)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60, help="env steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    knobs = resolve_knobs(args.profile, overrides={"n_train": args.n_train, "n_val": 256,
                                                   "max_epochs": 30, "episodes_per_batch": 1})
    config = build_ppo_config(knobs)
    runner = SingleAgentEnvRunner(config=config)
    env = gym.make(f"envs:{knobs['env']}", **env_config(knobs))
    raw_loop = RawLoop(env, np.random.default_rng(0))
    raw_loop.steps_per_s(2)  # warm-up: first allocations
    runner_steps_per_s(runner, 2)
    raw, rllib = [], []
    for _ in range(args.rounds):
        raw.append(raw_loop.steps_per_s(args.steps))
        rllib.append(runner_steps_per_s(runner, args.steps))
    raw_rate, rllib_rate = float(np.median(raw)), float(np.median(rllib))
    params = sum(p.numel() for p in runner.module.parameters())
    print(f"sampling ({args.profile}, module {params:,} params, n_train {args.n_train}): "
          f"raw env loop {raw_rate:.1f} steps/s, RLlib env runner {rllib_rate:.1f} steps/s, "
          f"ratio {rllib_rate / raw_rate:.2f} (median of {args.rounds} rounds of "
          f"{args.steps} steps)")
    runner.stop()
    env.close()


if __name__ == "__main__":
    main()
