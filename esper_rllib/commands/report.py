"""``esper-rllib report DIR [--postmortem [TRIAL]]``: the ablation report of a sweep folder, or
one trial in the seed document's table form."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper_rllib.report import REFERENCE_EPISODES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the ablation report of a sweep folder",
        description="Write report.md and plots into a sweep's experiment folder: cells with "
                    "IQM and stratified-bootstrap intervals (rliable), final EV against the EV "
                    "ceiling of a signal.json in or beside DIR (`esper-rllib signal`), the "
                    "probability that the seed document's fix and the best cell beat the broken "
                    "run, main effects, reference policies. With --postmortem, print one "
                    "trial's tables in the seed document's form.")
    parser.add_argument("dir", help="a sweep's experiment folder (or a trial folder with "
                        "--postmortem)")
    parser.add_argument("--postmortem", nargs="?", const="", metavar="TRIAL",
                        help="one trial: a trial folder, or a trial name (or unique part of "
                        "it) inside DIR; without a value DIR itself is the trial (or holds "
                        "exactly one)")
    parser.add_argument("--reference-episodes", type=int, default=REFERENCE_EPISODES,
                        metavar="N", help="episodes per reference policy (0 = skip; default "
                        f"{REFERENCE_EPISODES}; cached in DIR)")
    parser.set_defaults(func=run)


def find_trial(root: Path, name: str) -> Path:
    """The trial folder that ``name`` means under ``root`` (see --postmortem)."""
    from tuning.results import PARAMS_FILE, trial_dirs

    if name and Path(name, PARAMS_FILE).is_file():
        return Path(name)
    if not name and (root / PARAMS_FILE).is_file():
        return root
    matches = [p for p in trial_dirs(root) if name in p.name]
    if len(matches) != 1:
        listing = ", ".join(p.name for p in trial_dirs(root)) or "none"
        what = "no trial" if not matches else f"{len(matches)} trials"
        raise ValueError(f"--postmortem {name or '(no value)'}: {what} match in {root}; "
                         f"trials: {listing}")
    return matches[0]


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    try:
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder")
        if args.reference_episodes < 0:
            raise ValueError(f"--reference-episodes {args.reference_episodes}: allowed: >= 0")
        if args.postmortem is not None:
            from esper_rllib.postmortem import postmortem

            print(postmortem(find_trial(root, args.postmortem)))
            return 0
        from esper_rllib.report import write_report

        written = write_report(root, args.reference_episodes)
    except ValueError as err:
        print(f"esper-rllib report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written[0]}")
    print(f"plots:  {', '.join(str(p) for p in written[1:] if p.suffix == '.png')}")
    return 0
