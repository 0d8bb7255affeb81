"""``esper-rllib knobs``: the table of every ``--set`` key, its default and allowed values."""

from __future__ import annotations

import argparse
import itertools
import shutil
import textwrap


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("knobs", help="list every --set key",
                                   description="Every knob: its value under each profile, "
                                               "allowed values, where it goes; then the "
                                               "profiles and presets.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.run.config import KNOBS, PRESETS, PROFILES, resolve_knobs

    width = max(80, min(shutil.get_terminal_size((100, 24)).columns, 120))
    effective = {p: resolve_knobs(p) for p in PROFILES}
    print(textwrap.fill(
        "Every --set key: its value under each --profile (the profile's own settings applied; "
        f"{' and '.join(f'--preset {p}' for p in PRESETS)} change the ones listed at the end), "
        "what is allowed, where it goes.", width))
    header = ["knob", *PROFILES]
    rows = [[name, *(_value(effective[p][name]) for p in PROFILES)] for name in KNOBS]
    widths = [min(27, max(len(r[0]) for r in rows)),
              *(min(16, max(len(r[i]) for r in [header, *rows])) for i in range(1, len(header)))]
    print()
    for line in _cells(header, widths):
        print(line)
    print("  ".join("-" * w for w in widths))
    for row, knob in zip(rows, KNOBS.values(), strict=True):
        for line in _cells(row, widths):
            print(line)
        for line in textwrap.wrap(f"allowed: {knob.allowed()}. [{knob.where}] {knob.help}",
                                  width - 4):
            print(f"    {line}")
    for title, table in (("profile", PROFILES), ("preset", PRESETS)):
        print()
        for name, values in table.items():
            print(textwrap.fill(", ".join(f"{k}={v}" for k, v in values.items()), width,
                                initial_indent=f"{title} {name}: ", subsequent_indent="    "))
    return 0


def _value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _cells(row: list[str], widths: list[int]) -> list[str]:
    """One table row, each cell wrapped to its column's width (long values take more lines)."""
    wrapped = [textwrap.wrap(text, w) or [""]
               for text, w in zip(row, widths, strict=True)]
    return ["  ".join(part.ljust(w) for part, w in zip(parts, widths, strict=True)).rstrip()
            for parts in itertools.zip_longest(*wrapped, fillvalue="")]
