"""The knob arguments shared by subcommands: ``--profile``, ``--preset``, ``--set key=value``."""

from __future__ import annotations

import argparse
from typing import Any

from esper_rllib.commands.names import DEFAULT_PROFILE, PRESETS, PROFILES


def add_knob_arguments(parser: argparse.ArgumentParser, presets: bool = True) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                        help=f"run size (default: {DEFAULT_PROFILE}); `esper-rllib knobs` shows "
                             "each profile's values")
    if presets:
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="the seed document's value head before or after the fix "
                                 "(default: none, the value-head knobs' own defaults, which "
                                 "are neither; the run prints the head it trains)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one knob (repeatable); `esper-rllib knobs` lists them")


def knobs_from_args(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Resolved knobs: profile <- preset <- --set <- the command's own options (not None)."""
    from esper_rllib.run.config import parse_set, resolve_knobs

    overrides = parse_set(args.overrides)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return resolve_knobs(args.profile, getattr(args, "preset", None), overrides)
