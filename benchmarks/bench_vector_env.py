"""The stacked vector env against K separate envs, side by side, same actions (issue 19).

For K = 1, 4, 8, 16 at `quick` sizes (2,048 training, 1,000 validation images): env steps per
second per core of
  stacked   ``SeedMorphogenesisVectorEnv(K)`` (one stacked host epoch per step for all K);
  separate  K ``SeedMorphogenesisEnv`` stepped one after another (what a SyncVectorEnv does);
  before    K of today's single env before issue 19 (``bench_host_step.LegacyEnv``).
Everything runs on one thread, so steps/s is per core. Sub-env k gets the same actions on every
side: WAIT, then (even k) a conv_light seed germinated, trained and blended in, so some
sub-envs carry a seed and others not. Steps are interleaved across the sides.

The last line, ``ratio=``, is stacked over separate steps/s at K = 8 (the issue's target: >= 2).

Usage: python benchmarks/bench_vector_env.py [--ks 1 4 8 16 --steps 4 --n-train 2048]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_host_step import LegacyEnv  # this script's folder

from envs.contract import Op
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.vector_env import SeedMorphogenesisVectorEnv

SEEDED = [make_action(Op.GERMINATE, 1, blueprint=1, tempo=0, alpha_target=2),
          make_action(Op.ADVANCE, 1), make_action(Op.ADVANCE, 1)]


def actions(step: int, k: int) -> np.ndarray:
    """Sub-env k's action at a step (step 0 is the warm-up WAIT)."""
    if k % 2 == 0 and 1 <= step <= len(SEEDED):
        return SEEDED[step - 1]
    return make_action(Op.WAIT)


def run(k: int, steps: int, kw: dict) -> dict[str, float]:
    """Seconds per vector step of each side (median over ``steps`` interleaved steps)."""
    vec = SeedMorphogenesisVectorEnv(k, **kw)
    vec.reset(seed=0)
    sides: dict[str, list] = {"separate": [SeedMorphogenesisEnv(**kw) for _ in range(k)],
                              "before": [LegacyEnv(**kw) for _ in range(k)]}
    for envs in sides.values():
        for i, env in enumerate(envs):
            env.reset(seed=i)
    times: dict[str, list[float]] = {"stacked": [], "separate": [], "before": []}
    for step in range(steps + 1):
        acts = np.stack([actions(step, i) for i in range(k)])
        start = time.perf_counter()
        vec.step(acts)
        times["stacked"].append(time.perf_counter() - start)
        for name, envs in sides.items():
            start = time.perf_counter()
            for env, a in zip(envs, acts, strict=True):
                env.step(a)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}  # step 0: warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--n-val", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one env runner, one core
    kw = {"n_train": args.n_train, "n_val": args.n_val, "max_epochs": args.steps + 2,
          "reward": "aligned"}
    ratio_k8 = None
    for k in args.ks:
        t = run(k, args.steps, kw)
        rate = {name: k / s for name, s in t.items()}
        print(f"bench_vector_env K={k:2d} ({args.n_train}/{args.n_val}): env steps/s per core "
              f"stacked {rate['stacked']:.2f}, separate {rate['separate']:.2f}, before "
              f"{rate['before']:.2f}; stacked/separate {rate['stacked'] / rate['separate']:.2f}x,"
              f" stacked/before {rate['stacked'] / rate['before']:.2f}x", flush=True)
        if k == 8:
            ratio_k8 = rate["stacked"] / rate["separate"]
    if ratio_k8 is not None:
        print(f"ratio={ratio_k8:.2f}")
    else:
        print(f"ratio={rate['stacked'] / rate['separate']:.2f} (K={k})")


if __name__ == "__main__":
    main()
