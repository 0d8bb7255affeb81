"""Sampling overhead: env steps per second through our RLlib env runner (SeedOnceEnvRunner:
connectors, the FactoredLSTM forward with the critic's outputs and bootstrap values, episode
bookkeeping, our callbacks) versus a raw loop that replays the very same actions on an
identically seeded copy of the env. Both sides then do exactly the same env work (the same host
epochs, seeds and resets; the replay checks it gets the runner's rewards), so the ratio is the
runner's own cost and not the luck of which ops a round happened to draw. Rounds alternate in
one process so a noisy machine affects both alike; episodes run on across rounds on both sides.

Prints a summary line, then ``ratio=<runner steps/s / raw steps/s>`` (1.0 = no overhead).

    .venv/bin/python benchmarks/bench_sampling.py [--profile standard] [--n-train 2048]
        [--steps 40] [--rounds 5]

The module has the profile's sizes (`standard`: the reference LSTM 512, `quick`: 64); the env is
the profile's task with --n-train images, one env per runner (stack_batch off).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from esper_rllib.ppo.env_runner import SeedOnceEnvRunner  # noqa: E402
from esper_rllib.run.config import build_ppo_config, env_config, resolve_knobs  # noqa: E402


class Replay:
    """The runner's env, stepped directly with the actions the runner took."""

    def __init__(self, env: gym.Env, seed: int) -> None:
        self.env = env
        env.reset(seed=seed)

    def seconds(self, episodes: list) -> float:
        """Replays the episode chunks in order (resetting after each finished episode) and
        returns the time it took; raises if the env does not follow the runner's."""
        took = 0.0
        for episode in episodes:
            actions, rewards = episode.get_actions(), episode.get_rewards()
            start = time.perf_counter()
            got = [self.env.step(a)[1] for a in actions]
            if episode.is_done:
                self.env.reset()
            took += time.perf_counter() - start
            if not np.allclose(got, rewards):
                raise RuntimeError("the replayed env diverged from the runner's")
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="standard")
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=40, help="env steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    # One plain env on both sides: with stack_batch (the profiles' default) the runner would
    # step a stacked vector env of one sub-env, whose data order is the vector env's and not
    # the single env's, and the replay would diverge. The stacked env's own speed is
    # bench_vector_env.py's.
    knobs = resolve_knobs(args.profile, overrides={"n_train": args.n_train, "n_val": 256,
                                                   "max_epochs": args.max_epochs,
                                                   "episodes_per_batch": 1,
                                                   "stack_batch": False})
    runner = SeedOnceEnvRunner(config=build_ppo_config(knobs))
    replay = Replay(gym.make(f"envs:{knobs['env']}", **env_config(knobs)), runner._seed)
    runner_rates, raw_rates = [], []
    for round_ in range(args.rounds + 1):  # round 0 warms both up
        start = time.perf_counter()
        episodes = runner.sample(num_timesteps=args.steps, explore=True)
        runner_s = time.perf_counter() - start
        raw_s = replay.seconds(episodes)
        steps = sum(len(e) for e in episodes)
        if round_:
            runner_rates.append(steps / runner_s)
            raw_rates.append(steps / raw_s)
    runner_rate, raw_rate = float(np.median(runner_rates)), float(np.median(raw_rates))
    params = sum(p.numel() for p in runner.module.parameters())
    print(f"sampling ({args.profile}, module {params:,} params, n_train {args.n_train}): "
          f"raw env loop {raw_rate:.2f} steps/s, RLlib env runner {runner_rate:.2f} steps/s "
          f"(median of {args.rounds} rounds of {args.steps} steps, same actions on both)")
    runner.stop()
    replay.env.close()
    print(f"ratio={runner_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()
