"""``esper-rllib signal``: the learnability audit of a profile and reward (signal.md and
signal.json), to read before judging any critic on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from esper_rllib.analysis.defaults import EV_STATES
from esper_rllib.commands.knob_args import add_knob_arguments, knobs_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "signal", help="learnability audit: does the return track accuracy, how much of it "
                       "can a critic explain (EV ceiling)?",
        description="Play WAIT-only, random, heuristic, oracle and oracle-hold episodes on the "
                    "env of a profile and reward; report accuracy, return, their correlation, "
                    "ridge R^2 and the EV ceiling. Writes signal.md and signal.json in --out.")
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--seeds", type=int, default=6, help="episodes per policy (default 6)")
    parser.add_argument("--out", help="output folder (default runs/signal/<profile>-<reward>)")
    add_oracle_arguments(parser)
    parser.add_argument("--ev-states", type=int, default=EV_STATES,
                        help=f"states the EV ceiling branches at (default {EV_STATES})")
    parser.add_argument("--ev-continuations", type=int, default=4,
                        help="returns per state, the sampled one included, per figure: the "
                             "Markov-state ceiling and the shared-stream one (default 4)")
    parser.set_defaults(func=run)


def add_oracle_arguments(parser: argparse.ArgumentParser) -> None:
    """--oracle and --search-seeds (``signal`` and ``evaluate`` both play the oracle)."""
    parser.add_argument("--oracle", metavar="BLUEPRINT@SLOT",
                        help="skip the oracle search, e.g. bottleneck@r0c1")
    parser.add_argument("--search-seeds", type=int, default=2,
                        help="episodes per candidate in the oracle search (default 2)")


def run(args: argparse.Namespace) -> int:
    knobs = knobs_from_args(args)  # bad input answers before the audit's imports (torch)
    from envs.hosts import SLOT_SIZES
    from esper_rllib.analysis.audit import render_markdown
    from esper_rllib.analysis.outputs import make_out_dir
    from esper_rllib.analysis.signal import (
        SIGNAL_JSON,
        SIGNAL_MD,
        check_audit_args,
        signal_audit,
        write_signal,
    )

    # Bad flags fail before anything is created.
    check_audit_args(args.oracle, len(SLOT_SIZES), seeds=args.seeds, search_seeds=args.search_seeds,
                ev_states=args.ev_states, ev_continuations=args.ev_continuations)
    out = make_out_dir(Path(args.out or Path("runs", "signal",
                                             f"{args.profile}-{knobs['reward']}")))
    result = signal_audit(knobs, profile=args.profile, seeds=args.seeds, oracle=args.oracle,
                          search_seeds=args.search_seeds, ev_states=args.ev_states,
                          ev_continuations=args.ev_continuations)
    write_signal(out, result)
    print(render_markdown(result))
    print(f"wrote {out / SIGNAL_MD} and {out / SIGNAL_JSON} ({result['meta']['wall_s']:.0f} s)")
    return 0
