"""``esper-rllib ablate``: a Tune sweep of the ablation, then ablation.csv and the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from esper_rllib.analysis.defaults import REFERENCE_EPISODES
from esper_rllib.commands.knob_args import (
    add_address_argument,
    add_grid_argument,
    add_knob_arguments,
    add_max_concurrent_argument,
)
from esper_rllib.run.profiles import size_note
from tuning.sweeps import DEFAULT_SWEEP, RENAMED_SWEEPS, SWEEPS, Sweep, get_sweep


def _sweep_line(sweep: Sweep) -> str:
    """``name  profile  N cells: axis (values) x ...``: what a sweep varies, from its grid, and
    the profile it was sized for."""
    cells = 1
    for values in sweep.axes.values():
        cells *= len(values)
    axes = " x ".join(f"{k} ({' | '.join(map(str, v))})" for k, v in sweep.axes.items())
    return f"  {sweep.name:<10} {sweep.profile:<8} {cells:>2} cells: {axes}"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate", help="run an ablation sweep with Tune",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a named sweep (every cell x seeds, each to the same budget) with Tune;\n"
                    "then write ablation.csv and report.md into the experiment folder.\n\n"
                    "sweeps and the --profile each was sized for (docs/design.md, \"Commands,\n"
                    "profiles, sweeps and knobs\", says what each asks):\n"
                    + "\n".join(_sweep_line(s) for s in SWEEPS.values()))
    sweep = parser.add_argument("--sweep", default=DEFAULT_SWEEP, choices=list(SWEEPS),
                                help=f"named sweep (default: {DEFAULT_SWEEP})")
    sweep.renamed = RENAMED_SWEEPS
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--seeds", type=int, help="seeds per cell (default 5); the seed is a "
                        "grid axis counting up from the `rng_seed` knob")
    add_grid_argument(parser, "sweep (or add) an axis over these values (repeatable)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                        help="GPUs per trial, split between the learner and the env runners "
                             "(default 0)")
    parser.add_argument("--storage", default="runs", help="local folder or URI for results "
                        "(default: runs)")
    parser.add_argument("--name", help="experiment name under --storage (default: "
                        "<sweep>-<profile>-<time>)")
    parser.add_argument("--slice", metavar="K/N",
                        help="run the K-th of N slices of the sweep's trials (seed-major: "
                        "every cell's first seed before any second; the N slices together run "
                        "it once), e.g. one per session")
    parser.add_argument("--results", metavar="DIR",
                        help="keep each trial in DIR as it finishes, a folder to commit: its "
                        "knobs, per-iteration metrics and evaluation on the sweep's held-out "
                        "seeds, the command, commit, machine and wall time (no checkpoints); "
                        "trials DIR keeps are not run again; `esper-rllib report DIR` reads "
                        "every slice kept there as one sweep")
    parser.add_argument("--resume", action="store_true",
                        help="finish an interrupted sweep (--name, or the newest "
                        "<sweep>-<profile>-* under --storage)")
    add_address_argument(parser)
    add_max_concurrent_argument(parser, "as resources allow")
    parser.add_argument("--stop-on-collapse", type=int, metavar="PATIENCE",
                        help="stop a trial after PATIENCE consecutive 'failure' verdicts "
                        "(default: off; confirmatory sweeps run every cell to the end)")
    parser.add_argument("--max-failures", type=int, default=2, metavar="N",
                        help="retries of a crashed trial from its last checkpoint (default 2)")
    parser.add_argument("--reference-episodes", type=int, default=REFERENCE_EPISODES,
                        metavar="N", help="heuristic/WAIT-only episodes for the report (0 = "
                        f"skip; default {REFERENCE_EPISODES})")
    parser.add_argument("--evaluate-episodes", type=int, default=0, metavar="N",
                        help="held-out episodes per policy when the report evaluates the last "
                        "checkpoints of the baseline (broken), fixed and best cells (default 0: "
                        "off, it would add minutes to a quick sweep; `esper-rllib report DIR` "
                        "evaluates them later, 4 episodes by default)")
    parser.add_argument("--verbose", action="store_true",
                        help="Tune's own trial tables and every Ray message (default: one line "
                        "per trial result)")
    parser.set_defaults(func=run)


def parse_grid(items: list[str], sweep: str) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` -> ``{key: [typed values]}`` (typed per knob; labels as text)."""
    from esper_rllib.run import config

    labels = get_sweep(sweep).labels
    return config.parse_grid(items, lambda key, text: text if key in labels
                             else config.parse_set([f"{key}={text}"])[key])


def _check_counts(args: argparse.Namespace) -> None:
    from esper_rllib.analysis.defaults import check_counts
    from esper_rllib.run.config import ConfigError

    for flag, value in (("--max-concurrent", args.max_concurrent),
                        ("--stop-on-collapse", args.stop_on_collapse)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: allowed: an int >= 1")
    if args.max_failures < 0:
        raise ConfigError(f"--max-failures {args.max_failures}: allowed: an int >= 0")
    check_counts(args.reference_episodes, args.evaluate_episodes)


def resume_command(experiment: str) -> str:
    """The command that finishes the interrupted sweep in ``experiment``."""
    import shlex

    storage, _, name = experiment.rstrip("/").rpartition("/")
    return (f"esper-rllib ablate --resume --storage {shlex.quote(storage)} "
            f"--name {shlex.quote(name)}")


def run(args: argparse.Namespace) -> int:
    from esper_rllib.analysis.render import write_report
    from esper_rllib.analysis.results_folder import plan_run
    from esper_rllib.run.config import build_ppo_config, parse_set, resolve_knobs
    from esper_rllib.run.preflight import check_env_inputs, check_trial_resources, runs_here
    from tuning.output import COMPACT, TUNE_TABLES, quiet_ray
    from tuning.plan import SEED, SweepPlan, plan_sweep
    from tuning.runner import find_experiment, resume_sweep, run_sweep
    from tuning.storage import check_storage
    from tuning.tensorboard import tensorboard_command

    def report(path: Any) -> Any:
        return write_report(path, args.reference_episodes,
                            evaluate_episodes=args.evaluate_episodes)

    verbose = TUNE_TABLES if args.verbose else COMPACT
    if not args.verbose:
        quiet_ray()  # RLlib's notices come with the checks before Ray starts
    try:
        _check_counts(args)
        check_storage(args.storage)
        if args.resume and (args.slice or args.results):
            raise ValueError("--resume: a resumed run keeps the --slice and --results it was "
                             "started with; give neither (in a new session, run the slice's "
                             "command again: the trials --results keeps are skipped)")
        if args.resume:
            experiment = find_experiment(args.storage, args.name,
                                         prefix=f"{args.sweep}-{args.profile}-")
            print(f"resuming {experiment}")
            if "://" not in experiment:
                saved = SweepPlan.load(experiment)
                check_trial_resources(saved.cell_knobs(next(saved.trials())), args.address)
            outcome = resume_sweep(experiment, build_ppo_config, address=args.address,
                                   report=report, verbose=verbose)
        else:
            note = size_note(f"sweep {args.sweep}", get_sweep(args.sweep).profile, args.profile)
            if note:
                print(note, file=sys.stderr)
            plan = plan_sweep(args.sweep, args.profile, resolve_knobs, seeds=args.seeds,
                              grid=parse_grid(args.grid, args.sweep),
                              overrides=parse_set(args.overrides),
                              gpus_per_trial=args.gpus_per_trial)
            plan, results = plan_run(plan, args.slice, args.results, args.evaluate_episodes)
            if not plan.n_trials:
                print(f"nothing to run: {args.results} keeps every trial of this run")
                return 0
            for params in plan.trials():
                check_env_inputs(plan.cell_knobs(params), local=runs_here(args.address))
            # Asking for more CPUs or GPUs than this machine has would wait forever.
            check_trial_resources(plan.cell_knobs(next(plan.trials())), args.address)
            print(f"sweep {plan.sweep}, profile {plan.profile}: {plan.n_trials} trials "
                  f"({len(plan.axes) - 1} axes x {len(plan.axes[SEED])} seeds), "
                  f"{plan.iterations} iterations each")
            outcome = run_sweep(plan, build_ppo_config, args.storage, name=args.name,
                                address=args.address, max_concurrent=args.max_concurrent,
                                collapse_patience=args.stop_on_collapse,
                                max_failures=args.max_failures, report=report,
                                verbose=verbose, trial_done=results,
                                resume_command=resume_command)
    except ValueError as err:  # ConfigError, StorageError and the planner's checks
        print(f"esper-rllib ablate: error: {err}", file=sys.stderr)
        return 2
    where = outcome.experiment
    if not outcome.complete:
        print(f"interrupted: {len(outcome.unfinished)} of {outcome.n_trials} trials unfinished "
              f"(state saved in {where}). Finish them with:\n  {resume_command(where)}",
              file=sys.stderr)
        return 130
    print(f"\nexperiment folder (Tune trial folders, checkpoints): {where}")
    print(f"ablation table: {where}/ablation.csv")
    print(f"report:         {where}/report.md (plots in {where}/plots)")
    print(f"TensorBoard (every metric; HParams tab: axes vs summary metrics):\n"
          f"  {tensorboard_command(where)}")
    if args.results:
        print(f"kept (commit it): {args.results}; every run kept there as one sweep: "
              f"esper-rllib report {args.results}")
    if outcome.errored:
        print(f"{len(outcome.errored)} trial(s) failed: {', '.join(outcome.errored)}",
              file=sys.stderr)
        return 1
    return 0
