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
        f"the presets, --preset {' | '.join(PRESETS)}, change the ones listed at the end), what "
        "is allowed, where it goes.", width, break_long_words=False, break_on_hyphens=False))
    header = ["knob", *PROFILES]
    rows = {name: [_value(effective[p][name]) for p in PROFILES] for name in KNOBS}
    # A value the same under every profile is written once across their columns; the others
    # get columns wide enough for their longest word: a value is wrapped between words only.
    varying = [values for values in rows.values() if len(set(values)) > 1]
    widths = [min(27, max(map(len, rows))),
              *(max(min(16, max(len(v[i]) for v in [header[1:], *varying])),
                    *(len(word) for v in varying for word in v[i].split()))
                for i in range(len(PROFILES)))]
    span = sum(widths[1:]) + 2 * (len(PROFILES) - 1)
    print()
    for line in _cells(header, widths):
        print(line)
    print("  ".join("-" * w for w in widths))
    for (name, values), knob in zip(rows.items(), KNOBS.values(), strict=True):
        if len(set(values)) == 1:
            cells = _cells([name, f"{values[0]} (every profile)"], [widths[0], span])
        else:
            cells = _cells([name, *values], widths)
        for line in cells:
            print(line)
        for line in textwrap.wrap(f"allowed: {knob.allowed()}. [{knob.where}] {knob.help}",
                                  width - 4, break_long_words=False, break_on_hyphens=False):
            print(f"    {line}")
    for title, table in (("profile", PROFILES), ("preset", PRESETS)):
        print()
        for name, values in table.items():
            print(textwrap.fill(", ".join(f"{k}={v}" for k, v in values.items()), width,
                                initial_indent=f"{title} {name}: ", subsequent_indent="    ",
                                break_long_words=False, break_on_hyphens=False))
    return 0


def _value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _cells(row: list[str], widths: list[int]) -> list[str]:
    """One table row, each cell wrapped to its column's width (long values take more lines)."""
    wrapped = [textwrap.wrap(text, w, break_long_words=False, break_on_hyphens=False) or [""]
               for text, w in zip(row, widths, strict=True)]
    return ["  ".join(part.ljust(w) for part, w in zip(parts, widths, strict=True)).rstrip()
            for parts in itertools.zip_longest(*wrapped, fillvalue="")]
