"""``esper-rllib train``: one PPO run with a progress line per iteration.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args
from esper_rllib.failure_runs import FIX
from esper_rllib.run.profiles import PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="one PPO run",
        description="One PPO run: a progress line per iteration, TensorBoard event files with "
                    "every metric, checkpoints every N iterations and at the end, the verdict.")
    add_knob_arguments(parser)
    parser.add_argument("--storage", default="runs", help="results directory (default: runs)")
    parser.add_argument("--name", help="run name under --storage (default: train-<time>)")
    parser.add_argument("--gpus", type=float, help="GPUs of the learner (knob `gpus`; default: "
                        "the profile's, `esper-rllib knobs` lists them)")
    parser.add_argument("--iterations", type=int, help="training iterations (knob `iterations`; "
                        "default: the profile's)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="checkpoint every N iterations and at the end (knob "
                        "`checkpoint_every`; default: the profile's)")
    parser.add_argument("--restore", metavar="CHECKPOINT",
                        help="start from this checkpoint directory (a checkpoint_NNNNNN; "
                        "default: a fresh module)")
    parser.add_argument("--verbose", action="store_true",
                        help="also Tune's tables and every Ray message (default: one line per "
                        "iteration)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The knobs first: a bad --set answers before the trainer's imports (Ray, torch).
    knobs = knobs_from_args(args, gpus=args.gpus, iterations=args.iterations,
                            checkpoint_every=args.checkpoint_every)
    from esper_rllib.run.trainer import train

    print(value_head_line(knobs))
    # The trial folder (TensorBoard's run name): the preset, if any, and the seed.
    label = ",".join(filter(None, (args.preset, f"rng_seed={knobs['rng_seed']}")))
    result = train(knobs, storage=args.storage, name=args.name, restore=args.restore,
                   label=label, verbose=args.verbose,
                   names={"profile": args.profile, "preset": args.preset or "none"})
    return 130 if result.get("interrupted") else 0  # 130: stopped by Ctrl-C, as a shell says


def value_head_line(knobs: Mapping[str, Any]) -> str:
    """Which value head the run trains, and whether it is the head of one of the presets that
    name one (the seed document's two runs; the knobs' defaults are neither)."""
    head = (f"depth {knobs['value_head_depth']}, LayerNorm "
            f"{'on' if knobs['value_head_layernorm'] else 'off'}, gain "
            f"{knobs['value_head_gain']:g}, value_coef {knobs['value_coef']:g}")
    heads = {name: values for name, values in PRESETS.items() if set(FIX) <= set(values)}
    same = [name for name, values in heads.items()
            if all(knobs[k] == v for k, v in values.items())]
    if same:  # the most specific (a preset may add knobs to another's head)
        return f"value head: {head} (preset {max(same, key=lambda n: len(heads[n]))})"
    return (f"value head: {head}: neither of the seed document's heads (--preset "
            f"{' or '.join(heads)})")
