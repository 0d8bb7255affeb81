"""``esper-rllib evaluate CHECKPOINT``: a trained policy on held-out env seeds next to the
audit's scripted policies (WAIT, random, heuristic, oracle), paired by seed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from esper_rllib.commands.signal import (
    OracleFinder,
    Progress,
    command_line,
    make_out_dir,
    write_atomic,
    write_json,
)
from esper_rllib.config import ConfigError

# Training envs are seeded seed x 10000 + runner offsets and go on from their own RNG: a block
# this far out is never a training episode's start.
HELD_OUT_SEED = 500_000
EVALUATION_JSON = "evaluation.json"
EVALUATION_MD = "evaluation.md"
TRAINED = "trained"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="a checkpoint's policy on held-out env seeds next to WAIT, random, "
                         "heuristic and oracle",
        description="Play the checkpoint's policy and the scripted policies on the same "
                    "held-out env seeds (the env the run trained on); report final accuracy, "
                    "return, op mix and paired differences against WAIT with 95% intervals.")
    parser.add_argument("checkpoint", help="a checkpoint_NNNNNN folder of a train or sweep run")
    parser.add_argument("--episodes", type=int, default=6, help="episodes per policy "
                        "(default 6)")
    parser.add_argument("--greedy", action="store_true",
                        help="the most likely legal value of each head instead of sampling")
    parser.add_argument("--seeds", type=int, default=HELD_OUT_SEED, metavar="START",
                        help=f"first env seed (default {HELD_OUT_SEED}, held out from training)")
    parser.add_argument("--oracle", metavar="BLUEPRINT@SLOT",
                        help="skip the oracle search, e.g. bottleneck@r0c1")
    parser.add_argument("--search-seeds", type=int, default=2,
                        help="episodes per candidate in the oracle search (default 2)")
    parser.add_argument("--out", help="output folder (default: the checkpoint's trial folder "
                        "/evaluation)")
    parser.set_defaults(func=run)


def evaluate(checkpoint: str | Path, *, episodes: int, greedy: bool, first_seed: int,
             oracle: str | None = None, search_seeds: int = 2) -> dict[str, Any]:
    """The evaluation result (the audit's summary with the trained policy added)."""
    import gymnasium as gym
    import numpy as np
    import torch

    import envs
    from envs.scripted import parse_oracle
    from esper_rllib.audit import POLICIES, oracle_name, run_audit, scripted_policies
    from esper_rllib.checkpoint_policy import CheckpointPolicy

    if episodes < 2:
        raise ConfigError(f"--episodes {episodes}: allowed: an int >= 2")
    policy, run_config = CheckpointPolicy.from_checkpoint(checkpoint, greedy=greedy)
    if run_config["env"] != f"envs:{envs.ENV_ID}":
        raise ConfigError(f"{checkpoint}: trained on {run_config['env']}, not the real env")
    env_kwargs = run_config["env_config"]
    torch.set_num_threads(1)

    def new_env() -> Any:
        return gym.make(envs.ENV_ID, **env_kwargs).unwrapped

    n_slots, max_epochs = new_env().n_slots, env_kwargs["max_epochs"]
    given = None
    if oracle is not None:
        try:
            given = parse_oracle(oracle)
        except ValueError as err:
            raise ConfigError(f"--oracle: {err}") from None
    finder = OracleFinder(given, env_kwargs, search_seeds)
    progress = Progress(finder.search_steps(n_slots, max_epochs)
                        + (len(POLICIES) + 1) * episodes * max_epochs)
    start = time.monotonic()
    best = finder.find(new_env, max_epochs, progress)

    def trained(seed: int) -> CheckpointPolicy:
        policy.rng = np.random.default_rng(seed)
        return policy

    seeds = [first_seed + i for i in range(episodes)]
    result = run_audit(new_env, {TRAINED: trained, **scripted_policies(best, max_epochs)},
                       seeds=seeds, max_epochs=max_epochs, gamma=run_config["gamma"],
                       ev_states=0, ev_continuations=2, tick=progress)
    progress.close()
    result["oracle_search"] = finder.search
    result["meta"] = {
        "title": f"Evaluation of `{checkpoint}` ({'greedy' if greedy else 'sampled'} actions)",
        "profile": "from the checkpoint", "reward": env_kwargs.get("reward"),
        "reward_normalization": new_env().cfg.reward_normalization, "max_epochs": max_epochs,
        "seeds": seeds, "gamma": run_config["gamma"], "oracle": oracle_name(*best),
        "oracle_source": finder.source, "env_config": env_kwargs,
        "command": command_line("evaluate"), "wall_s": round(time.monotonic() - start, 1),
        "checkpoint": str(checkpoint), "greedy": greedy,
    }
    return result


def run(args: argparse.Namespace) -> int:
    from esper_rllib.audit import render_markdown

    result = evaluate(args.checkpoint, episodes=args.episodes, greedy=args.greedy,
                      first_seed=args.seeds, oracle=args.oracle, search_seeds=args.search_seeds)
    out = make_out_dir(Path(args.out) if args.out else
                       Path(args.checkpoint).resolve().parent / "evaluation")
    write_json(out / EVALUATION_JSON, result)
    write_atomic(out / EVALUATION_MD, render_markdown(result))
    print(render_markdown(result))
    print(f"wrote {out / EVALUATION_MD} and {out / EVALUATION_JSON}")
    return 0
