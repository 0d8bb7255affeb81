"""``esper-rllib train``: one PPO run with a progress line per iteration.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args
from esper_rllib.failure_runs import FIX
from esper_rllib.run.profiles import DEFAULT_PROFILE, PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="one PPO run",
        description="One PPO run: a progress line per iteration, TensorBoard event files with "
                    "every metric, checkpoints every N iterations and at the end, the verdict.")
    add_knob_arguments(parser)
    parser.add_argument("--storage", default="runs", help="results directory (default: runs)")
    parser.add_argument("--name", help="run name under --storage, a folder no other run "
                        "holds (default: train-<time>, -2, -3, ... when taken)")
    parser.add_argument("--gpus", type=float, help="GPUs of the learner (knob `gpus`; default: "
                        "the profile's, `esper-rllib knobs` lists them)")
    parser.add_argument("--iterations", type=int, help="training iterations (knob `iterations`; "
                        "default: the profile's)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="checkpoint every N iterations and at the end (knob "
                        "`checkpoint_every`; default: the profile's)")
    parser.add_argument("--restore", metavar="CHECKPOINT",
                        help="continue the run of this checkpoint directory (its newest "
                        "checkpoint_NNNNNN) in its own folder with its own knobs (--set, "
                        "--iterations on top); with --name, a new run under --storage that "
                        "starts from it (default: a fresh module)")
    parser.add_argument("--verbose", action="store_true",
                        help="also Tune's tables and every Ray message (default: one line per "
                        "iteration)")
    # None: given or not tells a continuation (which keeps its run's) from a new run.
    parser.set_defaults(func=run, profile=None)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.run.config import parse_set

    parse_set(args.overrides)  # a bad --set answers before the checkpoint's and Ray's imports
    options = {"gpus": args.gpus, "iterations": args.iterations,
               "checkpoint_every": args.checkpoint_every}
    restored = _restored_run(args) if args.restore else None
    if restored is not None:  # its knobs as the run was given them, this command's on top
        options = {**restored.inputs.get("options", {}),
                   **{k: v for k, v in options.items() if v is not None}}
        args.overrides = [*restored.inputs.get("set", []), *args.overrides]
        args.profile, args.preset = restored.inputs["profile"], restored.inputs.get("preset")
    args.profile = args.profile or DEFAULT_PROFILE
    knobs = knobs_from_args(args, **options)
    from esper_rllib.run.trainer import train

    print(value_head_line(knobs))
    # The trial folder (TensorBoard's run name): the preset, if any, and the seed.
    label = ",".join(filter(None, (args.preset, f"rng_seed={knobs['rng_seed']}")))
    inputs = {"profile": args.profile, "preset": args.preset, "set": args.overrides,
              "options": {k: v for k, v in options.items() if v is not None}}
    result = train(knobs, storage=args.storage, name=args.name, restore=args.restore,
                   continuation=restored if args.name is None else None, label=label,
                   verbose=args.verbose, inputs=inputs,
                   names={"profile": args.profile, "preset": args.preset or "none"})
    return 130 if result.get("interrupted") else 0  # 130: stopped by Ctrl-C, as a shell says


def _restored_run(args: argparse.Namespace) -> Any:
    """The `train` run whose checkpoint --restore names (run_folder.Continuation), or None
    for a checkpoint of no `train` run (it starts a new run as --name does); ConfigError for
    a broken checkpoint, a continuation from other than the run's newest checkpoint, or a
    --profile/--preset other than the run's."""
    from esper_rllib.run.config import ConfigError
    from esper_rllib.run.run_folder import check_checkpoint, check_newest, find_run

    what = f"--restore {args.restore}"
    restored = find_run(check_checkpoint(args.restore), what)
    if restored is None:
        return None
    if args.name is None:
        check_newest(restored, what)
    for option, value in (("profile", args.profile), ("preset", args.preset)):
        theirs = restored.inputs.get(option)
        if value is not None and value != theirs:
            given = f"--{option} {theirs}" if theirs else f"no --{option}"
            raise ConfigError(f"--{option} {value}: the run of {args.restore} was trained with "
                              f"{given}; a restore keeps its run's knobs (--set changes single "
                              "ones)")
    return restored


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
