"""The arguments shared by subcommands, each declared once: ``--profile``, ``--preset``,
``--set key=value``, ``--grid key=v1,v2``, ``--address`` and ``--max-concurrent``."""

from __future__ import annotations

import argparse
from typing import Any

from esper_rllib.run.profiles import DEFAULT_PROFILE, PRESETS, PROFILES, RENAMED_PROFILES


def add_knob_arguments(parser: argparse.ArgumentParser, presets: bool = True) -> None:
    profile = parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                                  help=f"run size (default: {DEFAULT_PROFILE}); `esper-rllib "
                                       "knobs` shows each profile's values")
    profile.renamed = RENAMED_PROFILES  # old names: a one-line error naming the new one
    if presets:
        parser.add_argument("--preset", choices=list(PRESETS),
                            help="named knob values over the profile's (default: none); "
                                 "`esper-rllib knobs` shows each preset's values, and the run "
                                 "prints the value head it trains")
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
    return resolve_knobs(args.profile, getattr(args, "preset", None), overrides)
