"""``esper-rllib evaluate CHECKPOINT``: a trained policy on held-out env seeds next to the
audit's scripted policies (WAIT, random, heuristic, oracle), paired by seed."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esper_rllib.audit import (
    POLICIES,
    Episodes,
    Tick,
    oracle_name,
    play_policies,
    render_markdown,
    scripted_policies,
    summarize,
)
from esper_rllib.commands.signal import (
    OracleFinder,
    Progress,
    add_oracle_arguments,
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
EVALUATION_DIR = "evaluation"


def default_out(checkpoint: str | Path) -> Path:
    """Where an evaluation of ``checkpoint`` goes by default: its trial folder's evaluation/."""
    return Path(checkpoint).resolve().parent / EVALUATION_DIR


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
    add_oracle_arguments(parser)
    parser.add_argument("--out", help="output folder (default: the checkpoint's trial folder "
                        "/evaluation)")
    parser.set_defaults(func=run)


class ScriptedEpisodes:
    """The scripted policies' episodes (WAIT, random, heuristic, oracle, oracle-hold), played once
    per env config and env seeds: they do not depend on the checkpoint, so every checkpoint of an
    experiment evaluated through one ``ScriptedEpisodes`` shares them."""

    def __init__(self, oracle: str | None = None, search_seeds: int = 2) -> None:
        from envs.scripted import parse_oracle

        self.oracle, self.search_seeds = None, search_seeds
        if oracle is not None:
            try:
                self.oracle = parse_oracle(oracle)
            except ValueError as err:
                raise ConfigError(f"--oracle: {err}") from None
        self._played: dict[str, tuple[Episodes, OracleFinder]] = {}

    @staticmethod
    def _key(env_kwargs: dict[str, Any], seeds: list[int]) -> str:
        return json.dumps([env_kwargs, seeds], sort_keys=True, default=str)

    def steps(self, env_kwargs: dict[str, Any], seeds: list[int], n_slots: int) -> int:
        """Env steps ``play`` will take (0 when these episodes were played already)."""
        if self._key(env_kwargs, seeds) in self._played:
            return 0
        max_epochs = env_kwargs["max_epochs"]
        finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
        return finder.search_steps(n_slots, max_epochs) + len(POLICIES) * len(seeds) * max_epochs

    def play(self, new_env: Callable[[], Any], env_kwargs: dict[str, Any], seeds: list[int],
             gamma: float, tick: Tick) -> tuple[Episodes, OracleFinder]:
        """(the episodes, the finder that chose their oracle), played on first use."""
        key = self._key(env_kwargs, seeds)
        if key not in self._played:
            max_epochs = env_kwargs["max_epochs"]
            finder = OracleFinder(self.oracle, env_kwargs, self.search_seeds)
            best = finder.find(new_env, max_epochs, tick)
            episodes, _ = play_policies(new_env, scripted_policies(best, max_epochs), seeds=seeds,
                                        max_epochs=max_epochs, gamma=gamma, ev_states=0,
                                        ev_continuations=2, tick=tick)
            self._played[key] = episodes, finder
        return self._played[key]


def evaluate(checkpoint: str | Path, *, episodes: int, greedy: bool, first_seed: int,
             oracle: str | None = None, search_seeds: int = 2,
             scripted: ScriptedEpisodes | None = None) -> dict[str, Any]:
    """The evaluation result (the audit's summary with the trained policy added). ``scripted``
    shares the scripted policies' episodes between evaluations (its oracle settings then apply;
    ``oracle`` and ``search_seeds`` make a new one otherwise)."""
    import gymnasium as gym
    import numpy as np
    import torch

    import envs
    from esper_rllib.checkpoint_policy import CheckpointPolicy

    if episodes < 2:
        raise ConfigError(f"--episodes {episodes}: allowed: an int >= 2")
    scripted = scripted or ScriptedEpisodes(oracle, search_seeds)
    policy, run_config = CheckpointPolicy.from_checkpoint(checkpoint, greedy=greedy)
    if run_config["env"] != f"envs:{envs.ENV_ID}":
        raise ConfigError(f"{checkpoint}: trained on {run_config['env']}, not the real env")
    env_kwargs, gamma = run_config["env_config"], run_config["gamma"]
    torch.set_num_threads(1)

    def new_env() -> Any:
        return gym.make(envs.ENV_ID, **env_kwargs).unwrapped

    n_slots, max_epochs = new_env().n_slots, env_kwargs["max_epochs"]
    seeds = [first_seed + i for i in range(episodes)]
    progress = Progress(scripted.steps(env_kwargs, seeds, n_slots) + episodes * max_epochs)
    start = time.monotonic()
    references, finder = scripted.play(new_env, env_kwargs, seeds, gamma, progress)

    def trained(seed: int) -> CheckpointPolicy:
        policy.rng = np.random.default_rng(seed)
        return policy

    played, _ = play_policies(new_env, {TRAINED: trained}, seeds=seeds, max_epochs=max_epochs,
                              gamma=gamma, ev_states=0, ev_continuations=2, tick=progress)
    progress.close()
    result = summarize({**played, **references}, {}, gamma)
    result["oracle_search"] = finder.search
    result["meta"] = {
        "title": f"Evaluation of `{checkpoint}` ({'greedy' if greedy else 'sampled'} actions)",
        "profile": "from the checkpoint", "reward": env_kwargs.get("reward"),
        "reward_normalization": new_env().cfg.reward_normalization, "max_epochs": max_epochs,
        "seeds": seeds, "gamma": gamma, "oracle": oracle_name(*finder.oracle),
        "oracle_source": finder.source, "env_config": env_kwargs,
        "command": command_line("evaluate"), "wall_s": round(time.monotonic() - start, 1),
        "checkpoint": str(checkpoint), "greedy": greedy,
    }
    return result


def write_evaluation(out: Path, result: dict[str, Any]) -> None:
    """evaluation.json and evaluation.md in ``out`` (created)."""
    make_out_dir(out)
    write_json(out / EVALUATION_JSON, result)
    write_atomic(out / EVALUATION_MD, render_markdown(result))


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.checkpoint, episodes=args.episodes, greedy=args.greedy,
                      first_seed=args.seeds, oracle=args.oracle, search_seeds=args.search_seeds)
    out = Path(args.out) if args.out else default_out(args.checkpoint)
    write_evaluation(out, result)
    print(render_markdown(result))
    print(f"wrote {out / EVALUATION_MD} and {out / EVALUATION_JSON}")
    return 0
