"""The knob arguments shared by subcommands: ``--profile``, ``--preset``, ``--set key=value``."""

from __future__ import annotations

import argparse
from typing import Any

from esper_rllib.config import (
    PRESETS,
    PROFILES,
    ConfigError,
    env_config,
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


def make_env(knobs: dict[str, Any]) -> Any:
    """The env the knobs describe; the env's own validation errors become one CLI line."""
    import gymnasium as gym

    from esper_rllib.preflight import check_env_inputs

    check_env_inputs(knobs)
    try:
        return gym.make(f"envs:{knobs['env']}", **env_config(knobs))
    except ValueError as err:  # e.g. a missing data_dir
        raise ConfigError(f"env: {err}") from None
