"""Sweep scaling: trials per hour of the `quick` profile's `seed` sweep with 1 versus 2
concurrent trials, measured back to back in one process (one local Ray, 2 CPUs).

Prints one summary line (ratio = trials/hour at 2 concurrent / at 1). Defaults shrink the
sweep (4 cells, 3 iterations) so the benchmark takes minutes, not the full `make run`.

    .venv/bin/python benchmarks/bench_scaling.py [--cells 4] [--iterations 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from esper_rllib.run.config import build_ppo_config, resolve_knobs  # noqa: E402
from tuning.plan import plan_sweep  # noqa: E402
from tuning.runner import run_sweep  # noqa: E402


def trials_per_hour(concurrent: int, cells: int, iterations: int, storage: str) -> float:
    # The first `cells` cells of the `seed` sweep: gain x depth (value_coef fixed at 1.0).
    gains, depths = ([1.0, 0.01], [2, 4]) if cells >= 4 else ([1.0], [2, 4][:cells])
    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=1,
                      grid={"value_head_gain": gains, "value_head_depth": depths,
                            "value_coef": [1.0]},
                      overrides={"iterations": iterations, "checkpoint_every": 0})
    start = time.perf_counter()
    outcome = run_sweep(plan, build_ppo_config, storage, name=f"scaling-{concurrent}",
                        max_concurrent=concurrent, verbose=0)
    elapsed = time.perf_counter() - start
    assert outcome.complete and not outcome.errored, outcome
    return plan.n_trials / elapsed * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as storage:
        one = trials_per_hour(1, args.cells, args.iterations, storage)
        two = trials_per_hour(2, args.cells, args.iterations, storage)
    print(f"scaling (quick, {args.cells} trials x {args.iterations} iterations, 2 CPUs): "
          f"{one:.0f} trials/h at 1 concurrent, {two:.0f} at 2")
    print(f"ratio={two / one:.2f}")


if __name__ == "__main__":
    main()
