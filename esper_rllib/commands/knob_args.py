"""The knob arguments shared by subcommands: ``--profile``, ``--preset``, ``--set key=value``."""

from __future__ import annotations

import argparse
from typing import Any

from esper_rllib.run.config import (
    PRESETS,
    PROFILES,
    parse_set,
    resolve_knobs,
)


def add_knob_arguments(parser: argparse.ArgumentParser, presets: bool = True) -> None:
    parser.add_argument("--profile", default="quick", choices=list(PROFILES),
                        help="run size (default: quick)")
    if presets:
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="the seed document's value head before or after the fix")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one knob (repeatable); `esper-rllib knobs` lists them")


def knobs_from_args(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Resolved knobs: profile <- preset <- --set <- the command's own options (not None)."""
    overrides = parse_set(args.overrides)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return resolve_knobs(args.profile, getattr(args, "preset", None), overrides)
