"""``esper-rllib critic-fit DATA``: critics of module configs fitted on a recording (Tune trials),
their learning curves (curve.csv, TensorBoard) and report.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from esper_rllib.commands.knob_args import (
    add_address_argument,
    add_grid_argument,
    add_max_concurrent_argument,
    add_set_argument,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "critic-fit", help="fit critics on recorded episodes: held-out EV vs gradient steps "
                           "and training episodes",
        description="Train the critic of each cell (--set and --grid over model and learner "
                    "knobs) on a recording of `esper-rllib record` with the learner's value "
                    "loss, optimiser, clipping and whole-episode minibatches, against the "
                    "discounted return-to-go; episodes split train / held out by env seed. "
                    "Writes curve.csv, TensorBoard curves (trials/), report.md and plots/.")
    parser.add_argument("data", metavar="DATA", help="a recording folder (esper-rllib record)")
    add_set_argument(parser, "a model or learner knob (repeatable)")
    add_grid_argument(parser, "an axis of model/learner knob values, or preset=seed_before,"
                              "seed_after (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--steps", type=int, default=4096, metavar="S",
                        help="gradient steps per fit (default 4096); the curve is measured at "
                             "log-spaced steps up to S")
    parser.add_argument("--train-episodes", default="8,32,all", metavar="N1,N2,...",
                        help="training-set sizes (default 8,32,all)")
    parser.add_argument("--trunk", default="shared", metavar="TRUNK[,TRUNK]",
                        help="shared | frozen | separate | mlp, or several (an axis; "
                        "default shared)")
    parser.add_argument("--reference", default="trees,ridge", metavar="LEARNER[,LEARNER]",
                        help="reference learners fitted on the same episodes as the critics, "
                             "each from the current observation plus t and from the last 4 "
                             "stacked (<learner>_k4): trees (gradient-boosted trees), ridge, "
                             "or none (default trees,ridge)")
    parser.add_argument("--out", help="output folder (default runs/critic-fit/<DATA name>-"
                                      "<time>)")
    parser.add_argument("--signal", metavar="FOLDER", help="folder of the signal.json whose EV "
                        "ceiling the report draws (default: --out or DATA, or beside them)")
    parser.add_argument("--online", action="append", default=[], metavar="DIR[@SWEEP]",
                        help="a sweep folder (ablation.csv) whose trials give the online final "
                             "EV of the decomposition (repeatable; SWEEP: the named sweep when "
                             "the folder has no sweep.json and its name does not start with "
                             "it)")
    add_address_argument(parser)
    add_max_concurrent_argument(parser, "as CPUs allow")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                        help="fit nothing: the EV of a trained run's critic, as it is, on "
                             "DATA's held-out episodes and training pool (repeatable)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite report.md and plots/ of an existing --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.analysis.outputs import command_line, make_out_dir
    from esper_rllib.offline.decomposition import cell_knobs
    from esper_rllib.offline.fit_plan import plan_fit, recorded_knobs
    from esper_rllib.offline.fit_report import load_fit, save_fit, write_report
    from esper_rllib.offline.fit_run import CURVE_CSV, TRIALS_DIR, run_fit
    from esper_rllib.offline.record import git_commit
    from esper_rllib.run.config import ConfigError
    from tuning.storage import claim_folder, claim_new_folder

    if args.checkpoint:
        from esper_rllib.offline.checkpoint_ev import checkpoint_evs

        for r in checkpoint_evs(args.data, args.checkpoint):
            print(f"{r.checkpoint}: held-out EV {r.heldout_ev:+.4f} ({r.heldout} episodes), "
                  f"training-pool EV {r.pool_ev:+.4f} ({r.pool} episodes)")
        return 0
    if args.report_only:
        if not args.out or not (Path(args.out) / CURVE_CSV).is_file():
            raise ConfigError("--report-only: needs --out, a folder holding a critic fit's "
                              f"{CURVE_CSV}")
        out = Path(args.out)
        fit = load_fit(out)
        fit["online"] = args.online or fit.get("online", [])
        _check_online(fit["online"], fit["recording"]["profile"])
        save_fit(out, fit)
        print(f"wrote {write_report(out, fit, _signal_folders(args, fit['data'], out))}")
        return 0
    plan = plan_fit(args.data, overrides=args.overrides, grid=args.grid, trunks=args.trunk,
                    seeds=args.seeds, steps=args.steps, train_episodes=args.train_episodes,
                    references=args.reference)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {args.max_concurrent}: allowed: an int >= 1")
    out = Path(args.out or Path("runs", "critic-fit",
                                f"{Path(args.data).name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    if (out / CURVE_CSV).exists() or (out / TRIALS_DIR).exists():
        raise ConfigError(f"--out {out}: already holds a critic fit; give another folder")
    if args.signal is not None and not Path(args.signal).is_dir():
        raise ConfigError(f"--signal {args.signal}: no such folder")
    _check_online(args.online, plan.meta["profile"])
    _check_cpus(args.address)
    # One fit writes a folder (issue 36): a default name taken in the same second gets -2, ...
    out = (claim_folder(out, f"--out {out}", fresh=False) if args.out
           else claim_new_folder(make_out_dir(out.parent), out.name, "--out")).path
    pool, held = plan.split()
    # The recording's own, not a cell's: --set may hold knobs only a --grid preset allows.
    recorded = recorded_knobs(plan.meta)
    fit = {"data": str(args.data), "command": command_line("critic-fit"),
           "recording": {k: plan.meta.get(k) for k in ("profile", "overrides", "policy", "seed",
                                                       "episodes", "commit")},
           "recorded_env": {"profile": plan.meta["profile"], "reward": recorded["reward"],
                            "max_epochs": recorded["max_epochs"]},
           "heldout": len(held), "pool": len(pool), "seeds": plan.seeds, "steps": plan.steps,
           "trunk": ",".join(plan.axes.get("trunk", [plan.trunk])), "overrides": plan.overrides,
           "axes": plan.axes, "train_sizes": plan.train_sizes, "commit": git_commit(),
           "cells": {plan.cell_label(c): cell_knobs(plan.knobs(c)) for c in plan.cells()},
           "cell_trunks": {plan.cell_label(c): plan.trunk_of(c) for c in plan.cells()},
           "online": args.online, "references": plan.references}
    cells = plan.cells()
    refs = f" (and {len(plan.references)} reference learners)" if plan.references else ""
    print(f"critic-fit on {args.data}: {len(cells)} cells{refs} x {len(plan.seeds)} seeds x "
          f"{len(plan.train_sizes)} training sizes, {plan.steps} gradient steps each")
    save_fit(out, fit)  # before the trials: an interrupted fit can still be reported
    start = time.monotonic()
    rows = run_fit(plan, out, address=args.address, max_concurrent=args.max_concurrent)
    fit["wall_s"] = round(time.monotonic() - start, 1)
    save_fit(out, fit)
    if not rows:
        print(f"no trial finished; see {out / TRIALS_DIR}")
        return 1
    report = write_report(out, fit, _signal_folders(args, args.data, out))
    print(f"wrote {out / CURVE_CSV}, {report} ({fit['wall_s']:.0f} s)")
    return 0


def _check_cpus(address: str | None) -> None:
    """Each trial takes 1 CPU: a Ray without one would wait for it forever."""
    from esper_rllib.run.preflight import check_cpus
    from tuning.runner import init_ray

    init_ray(address)  # run_fit then uses this Ray
    check_cpus(1, address, "critic-fit", "each trial", "allowed: a Ray with CPUs (ray start "
               "--num-cpus N), or --address of a cluster that has them")


def _signal_folders(args: argparse.Namespace, data: str, out: Path) -> list[Path]:
    return [Path(args.signal)] if args.signal else [out, Path(data)]


def _check_online(specs: list[str], profile: str) -> None:
    from esper_rllib.offline.decomposition import load_online

    for spec in specs:
        load_online(spec, profile)  # ConfigError for a folder without ablation.csv
