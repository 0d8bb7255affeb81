"""``esper-rllib knobs``: the table of every ``--set`` key, its default and allowed values."""

from __future__ import annotations

import argparse

from esper_rllib.run.config import KNOBS, PRESETS, PROFILES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knobs", help="list every --set key",
                                   description="Every knob: default, allowed values, where it "
                                               "goes; then the profiles and presets.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name, knob in KNOBS.items():
        print(f"{name:<27} {knob.default!s:<28} {knob.allowed():<36} [{knob.where}] {knob.help}")
    for title, table in (("profile", PROFILES), ("preset", PRESETS)):
        for name, values in table.items():
            print(f"{title} {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0
