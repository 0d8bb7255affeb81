"""Wall time of one training iteration of a profile against the same profile with other
sampling settings, measured in one process: the two algorithms are built side by side and
their iterations alternate (new, old, new, old, ...), so a busy machine slows both alike.

Prints each iteration's seconds (RLlib's time_this_iter_s: sampling, the learner update, the
weight sync), the CPU seconds each env runner spent in it (what the iteration costs on cores of
its own, whatever else runs on the machine) and the learner update's seconds, the medians and
``ratio=<old / new>`` (2.0 = the profile's iteration takes half the time of the other
setting's).

    .venv/bin/python benchmarks/profile_iteration.py [--profile batch64] [--preset seed_after]
        [--iterations 2] [--old num_env_runners=1] [--set key=value ...] [--restore CKPT]

Not part of `make bench` (a batch64 iteration takes minutes). The trainer's torch uses one
thread, as in a Tune trial whose env runners hold the CPUs. On a busy machine raise the
profiles' sample timeout (``--set sample_timeout_s=7200``): a sample() past it returns nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import torch  # noqa: E402

from esper_rllib.run.config import build_ppo_config, parse_set, resolve_knobs  # noqa: E402


def _cpus(config) -> float:
    request = config.algo_class.default_resource_request(config)
    return sum(bundle.get("CPU", 0.0) for bundle in request.bundles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="batch64")
    parser.add_argument("--preset", default="seed_after")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--old", action="append", default=[], metavar="KEY=VALUE",
                        help="the setting to compare with (default num_env_runners=1: one "
                        "stacked env of the whole batch on one core)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a knob of both sides")
    parser.add_argument("--restore", metavar="CHECKPOINT", help="both sides start from this "
                        "checkpoint (a trained policy plays: its seeds, not random play's)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    common = parse_set(args.overrides)
    sides = {"new": resolve_knobs(args.profile, args.preset, common),
             "old": resolve_knobs(args.profile, args.preset,
                                  {**common, **parse_set(args.old or ["num_env_runners=1"])})}
    configs = {name: build_ppo_config(knobs) for name, knobs in sides.items()}
    # Logical CPUs for both algorithms' actors at once; only one of them samples at a time.
    ray.init(num_cpus=int(sum(_cpus(c) for c in configs.values())) + 1,
             include_dashboard=False, log_to_driver=False)
    algos = {name: config.build_algo() for name, config in configs.items()}
    if args.restore:
        for algo in algos.values():
            algo.restore_from_path(args.restore)
    seconds: dict[str, list[float]] = {name: [] for name in algos}
    for i in range(args.iterations):
        for name, algo in algos.items():
            cpu_before = algo.env_runner_group.foreach_env_runner(lambda r: time.process_time(),
                                                                  local_env_runner=False)
            start = time.perf_counter()
            result = algo.train()
            wall = time.perf_counter() - start
            cpu = [after - before for after, before in zip(
                algo.env_runner_group.foreach_env_runner(lambda r: time.process_time(),
                                                         local_env_runner=False),
                cpu_before, strict=True)]
            learner = result.get("timers", {}).get("learner_update_timer", float("nan"))
            seconds[name].append(result["time_this_iter_s"])
            knobs = sides[name]
            # A sample() that ran past sample_timeout_s returns no episodes: give it more.
            steps = result.get("env_runners", {}).get("num_env_steps_sampled", 0)
            print(f"{name} iter {i + 1}: {result['time_this_iter_s']:.1f} s "
                  f"(wall {wall:.1f} s; {knobs['num_env_runners']} env runners x "
                  f"{knobs['num_envs_per_env_runner']} envs, {steps} env steps); env runner "
                  f"CPU s {', '.join(f'{c:.1f}' for c in cpu)}; learner update "
                  f"{learner:.1f} s", flush=True)
    for algo in algos.values():
        algo.stop()
    new, old = (statistics.median(seconds[n]) for n in ("new", "old"))
    print(f"{args.profile}: median {new:.1f} s per iteration; old setting "
          f"({', '.join(args.old or ['num_env_runners=1'])}): {old:.1f} s")
    print(f"ratio={old / new:.3f}")


if __name__ == "__main__":
    main()
