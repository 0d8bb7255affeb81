"""``esper-rllib record``: episodes of a behaviour policy as a columnar dataset (one Parquet file
per episode and meta.json), for fitting critics offline (``esper-rllib critic-fit``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from esper_rllib.commands.knob_args import add_address_argument, add_knob_arguments
from esper_rllib.offline.record_spec import POLICY_CHOICES, SEED_STRIDE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record", help="record episodes of a behaviour policy (for critic-fit)",
        description="Play N episodes of a behaviour policy on the env of a profile, in parallel "
                    "over Ray workers, and write one row per step (observation, legal masks, "
                    "action per head, behaviour log-prob, reward, flags, final accuracy) as "
                    "Parquet plus meta.json into --out. Re-running the same command resumes an "
                    "interrupted recording (or extends it to a larger --episodes).")
    add_knob_arguments(parser, presets=False)
    parser.add_argument("--policy", default="initial", metavar="POLICY",
                        help=f"{' | '.join(POLICY_CHOICES)} | a checkpoint folder (initial: a "
                             "freshly built module of the model knobs and --seed; default)")
    parser.add_argument("--episodes", type=int, default=256,
                        help=f"episodes, 1 to {SEED_STRIDE} (default 256)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the module's initialisation seed and the env seeds' block "
                             "(default 0)")
    parser.add_argument("--out", help="output folder (default runs/record/<profile>-<policy>-"
                                      "seed<seed>)")
    add_address_argument(parser, "a local Ray on every core")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="parallel episodes (default: every CPU of the Ray cluster)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esper_rllib.run.config import episode_steps, parse_set

    overrides = parse_set(args.overrides)  # a bad --set answers before Ray and torch load
    from esper_rllib.analysis.outputs import Progress
    from esper_rllib.offline.record import check_out, plan_recording, record
    from esper_rllib.run.preflight import check_cpus
    from tuning.runner import init_ray
    from tuning.storage import claim_folder

    plan = plan_recording(args.profile, overrides, args.policy, args.episodes,
                          args.seed)
    name = Path(plan.policy).name if plan.policy not in POLICY_CHOICES else plan.policy
    out = Path(args.out or Path("runs", "record", f"{args.profile}-{name}-seed{args.seed}"))
    done = check_out(out, plan)  # bad flags and a foreign --out fail before Ray starts
    claim_folder(out, f"--out {out}", fresh=False)  # one recording writes it at a time
    if args.workers is not None and args.workers < 1:
        from esper_rllib.run.config import ConfigError

        raise ConfigError(f"--workers {args.workers}: allowed: an int >= 1")
    init_ray(args.address)
    todo = plan.episodes - len(done)
    workers = min(todo, args.workers or 1)  # without --workers: one per CPU, at least one
    check_cpus(workers, args.address, f"--workers {args.workers}" if args.workers else "record",
               f"record ({workers} worker{'s' if workers > 1 else ''}, 1 CPU each)",
               "allowed: --workers up to the cluster's CPUs, or leave it out (a worker per CPU)")
    print(f"recording {todo} of {plan.episodes} episodes ({len(done)} already in {out}), "
          f"policy {name}")
    progress = Progress(todo * episode_steps(plan.knobs))
    meta = record(plan, out, workers=args.workers, tick=progress)
    progress.close()
    print(f"wrote {plan.episodes} episodes to {out} ({meta['wall_s']:.0f} s)")
    return 0
