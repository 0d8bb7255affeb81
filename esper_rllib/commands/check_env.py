"""``esper-rllib check-env``: build the env from the knobs, run Gymnasium's checker and a few
random legal steps, print the spaces and the step time."""

from __future__ import annotations

import argparse
import re
import time
import warnings

from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-env", help="check the env built from --profile/--set",
        description="Build the env with the profile's and --set's env knobs, run "
                    "gymnasium's check_env, then a few random legal steps.")
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--steps", type=int, default=3, help="random legal steps (default 3)")
    parser.set_defaults(func=run)


def _plain(text: str) -> str:
    """``text`` without ANSI escape codes and gymnasium's "WARN: " prefix, on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return " ".join(text.removeprefix("WARN: ").split())


def run(args: argparse.Namespace) -> int:
    from esper_rllib.run.config import ConfigError, env_config

    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: allowed: an int >= 1")
    knobs = knobs_from_args(args)  # bad input answers before the env's imports (torch)
    import numpy as np
    from gymnasium.utils.env_checker import check_env

    from envs.scripted import random_legal_action
    from esper_rllib.run.preflight import make_env

    env_kwargs = env_config(knobs)
    env = make_env(knobs)
    print(f"env: {knobs['env']} {env_kwargs}")
    print(f"observation space: {env.observation_space}")
    print(f"action space: {env.action_space}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(env.unwrapped, skip_render_check=True)
            failure = None
        except AssertionError as err:  # still time the steps: both are worth seeing
            failure = str(err)
    # Gymnasium colours its warnings with ANSI codes and prints each with its source line:
    # one plain line per distinct warning instead.
    for message in dict.fromkeys(_plain(str(w.message)) for w in caught):
        print(f"gymnasium check_env warning: {message}")
    print(f"gymnasium check_env: {'FAILED: ' + failure if failure else 'passed'}")
    rng = np.random.default_rng(knobs["rng_seed"])
    obs, _ = env.reset(seed=knobs["rng_seed"])
    n_slots = len(env.observation_space["blueprints"].nvec)
    times = []
    for _ in range(args.steps):
        action = random_legal_action(obs["action_mask"], n_slots, rng)
        start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        times.append(time.perf_counter() - start)
        print(f"  action {action.tolist()} -> reward {reward:+.4f} "
              f"effective op {info.get('effective_op')}")
        if terminated or truncated:
            obs, _ = env.reset()
    print(f"step time: mean {np.mean(times):.3f}s over {len(times)} steps "
          f"(min {np.min(times):.3f}s, max {np.max(times):.3f}s)")
    env.close()
    return 1 if failure else 0
