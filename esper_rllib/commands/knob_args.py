"""The arguments shared by subcommands, each declared once: ``--profile``, ``--preset``,
``--set key=value``, ``--grid key=v1,v2``, ``--address`` and ``--max-concurrent``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from esper_rllib.run.profiles import (
    DEFAULT_PROFILE,
    PRESET_PROFILES,
    PRESETS,
    PROFILE_ABOUT,
    PROFILES,
    RENAMED_PROFILES,
    size_note,
)


def add_knob_arguments(parser: argparse.ArgumentParser, presets: bool = True) -> None:
    sizes = "; ".join(f"{name}: {about}" for name, about in PROFILE_ABOUT.items())
    profile = parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                                  help=f"run size (default: {DEFAULT_PROFILE}). {sizes}. "
                                       "`esper-rllib knobs` shows each profile's values")
    profile.renamed = RENAMED_PROFILES  # old names: a one-line error naming the new one
    if presets:
        sized = ", ".join(f"{p} at --profile {s}" for p, s in PRESET_PROFILES.items())
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="named knob values over the profile's (default: none); "
                                 f"{sized}; `esper-rllib knobs` shows each preset's values, "
                                 "and the run prints the value head it trains")
    add_set_argument(parser)


def add_set_argument(parser: argparse.ArgumentParser,
                     help: str = "override one knob (repeatable); `esper-rllib knobs` lists them"
                     ) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=help)


def add_grid_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--grid key=v1,v2`` (repeatable), parsed by ``run.config.parse_grid``."""
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help=help)


def add_address_argument(parser: argparse.ArgumentParser, local: str = "a local Ray") -> None:
    parser.add_argument("--address", help="a running Ray cluster to join (default: RAY_ADDRESS, "
                                          f"else {local})")


def add_max_concurrent_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--max-concurrent", type=int, metavar="N",
                        help=f"at most N trials at once (default: {default})")


def knobs_from_args(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """Resolved knobs: profile <- preset <- --set <- the command's own options (not None)."""
    from esper_rllib.run.config import parse_set, resolve_knobs

    overrides = parse_set(args.overrides)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    preset = getattr(args, "preset", None)
    knobs = resolve_knobs(args.profile, preset, overrides)
    note = preset in PRESET_PROFILES and size_note(f"preset {preset}", PRESET_PROFILES[preset],
                                                   args.profile)
    if note:
        print(note, file=sys.stderr)
    return knobs
