"""``esper-rllib heuristic``: baseline episodes of the rule-based and the WAIT-only policies,
the reference rows a learned policy must beat."""

from __future__ import annotations

import argparse

from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args

POLICIES = ("heuristic", "wait")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "heuristic", help="baseline episodes of the heuristic and WAIT-only policies",
        description="Run the heuristic and the WAIT-only policy on the env built from the "
                    "profile and --set env knobs; print the final accuracy per seed and means.")
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--seeds", type=int, default=3, help="episodes per policy (default 3)")
    parser.add_argument("--policy", choices=[*POLICIES, "both"], default="both",
                        help="which baseline to run (default: both)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.run.config import ConfigError

    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: allowed: an int >= 1")
    knobs = knobs_from_args(args)  # bad input answers before the env's imports (torch)
    import numpy as np

    from envs.heuristic import HeuristicPolicy, WaitPolicy, run_episode
    from esper_rllib.run.preflight import make_env

    if knobs["env"] != "esper/SeedMorphogenesis-v0":
        raise ConfigError(f"env={knobs['env']}: the baselines run on the real env only")
    env = make_env(knobs)
    policies = {"heuristic": HeuristicPolicy, "wait": WaitPolicy}
    names = POLICIES if args.policy == "both" else (args.policy,)
    seeds = [knobs["rng_seed"] + i for i in range(args.seeds)]
    for name in names:
        accs = []
        for seed in seeds:
            episode = run_episode(env, policies[name](), seed)
            accs.append(episode["val_acc"])
            print(f"{name:<9} seed {seed}: final val acc {episode['val_acc']:6.2f}%  "
                  f"fossils {episode['n_fossils']}  seed params {episode['seed_params']}  "
                  f"return {episode['return']:+.3f}")
        print(f"{name:<9} mean over {len(seeds)} seeds: {np.mean(accs):6.2f}% "
              f"(std {np.std(accs):.2f})")
    env.close()
    return 0
