"""``esper-rllib report DIR [--postmortem [TRIAL]]``: the ablation report of a sweep folder, or
one trial in the seed document's table form.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper_rllib.analysis.defaults import EVALUATE_EPISODES, REFERENCE_EPISODES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the ablation report of a sweep folder",
        description="Write report.md and plots into a sweep's experiment folder: cells with "
                    "IQM and stratified-bootstrap intervals (rliable), final EV against the EV "
                    "ceiling of a signal.json in or beside DIR (`esper-rllib signal`), the "
                    "probability that the seed document's fix and the best cell beat the broken "
                    "run, the final checkpoints of those cells evaluated next to WAIT, the "
                    "heuristic and the oracle (`esper-rllib evaluate`), main effects, reference "
                    "policies. With --postmortem, print one trial's tables in the seed "
                    "document's form.")
    parser.add_argument("dir", help="a sweep's experiment folder (or a trial folder with "
                        "--postmortem)")
    parser.add_argument("--postmortem", nargs="?", const="", metavar="TRIAL",
                        help="one trial: a trial folder, or a trial name (or unique part of "
                        "it) inside DIR; without a value DIR itself is the trial (or holds "
                        "exactly one)")
    parser.add_argument("--reference-episodes", type=int, default=REFERENCE_EPISODES,
                        metavar="N", help="episodes per reference policy (0 = skip; default "
                        f"{REFERENCE_EPISODES}; cached in DIR)")
    parser.add_argument("--evaluate-episodes", type=int, default=EVALUATE_EPISODES,
                        metavar="N", help="held-out episodes per policy when evaluating the "
                        "last checkpoint of each trial of the baseline (broken), fixed and best "
                        f"cells (0 = skip; default {EVALUATE_EPISODES}; cached in each trial's "
                        "evaluation/ folder, the scripted policies played once)")
    parser.add_argument("--signal-seeds", type=int, default=0, metavar="N",
                        help="when no signal.json of the sweep's profile, reward and episode "
                        "length is in or beside DIR, measure one (`esper-rllib signal` with N "
                        "episodes per policy) on the sweep's env and write it into DIR "
                        "(default 0: off)")
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


def _check_trials(root: Path) -> None:
    from tuning.results import PARAMS_FILE, trial_dirs

    if not trial_dirs(root):
        raise ValueError(f"{root}: no trial folders ({PARAMS_FILE}) found; allowed: a sweep's "
                         "experiment folder or a train run's folder (--storage/--name)")


def run(args: argparse.Namespace) -> int:
    from esper_rllib.analysis.defaults import check_counts

    root = Path(args.dir)
    try:
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder")
        check_counts(args.reference_episodes, args.evaluate_episodes, args.signal_seeds)
        if args.postmortem is None:
            _check_trials(root)  # before the analysis's imports (seconds) and any Ray
        from esper_rllib.analysis.render import write_report

        if args.postmortem is not None:
            from esper_rllib.analysis.postmortem import postmortem

            print(postmortem(find_trial(root, args.postmortem)))
            return 0
        written = write_report(root, args.reference_episodes,
                               evaluate_episodes=args.evaluate_episodes,
                               signal_seeds=args.signal_seeds)
    except ValueError as err:
        print(f"esper-rllib report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written[0]}")
    print(f"plots:  {', '.join(str(p) for p in written[1:] if p.suffix == '.png')}")
    return 0
