"""What one live seed costs a host-epoch, beside its arithmetic floor on this machine (issue 34).

After the fused host kernels, the seeds are most of a `batch64` step. For every buildable CNN
blueprint at every slot of the impaired host, this steps a stacked vector env of K hosts (the
`batch64` data sizes: 2,048 training and 1,000 validation images) in which every host grows that
blueprint at that slot (GERMINATE, ADVANCE to TRAINING, then WAIT: the seed in the forward pass
and learning), interleaved in one process on one thread with the same hosts under WAIT (no seed),
and reports the seed's cost per host-epoch as the difference, in CPU seconds of this process:

- ``ms``: the live seed's CPU ms per host-epoch (training, clipping, SGD, validation with its
  counterfactuals; all that the seed adds to the env's step);
- ``MFLOP``: the FLOPs that difference does, counted by ``torch.utils.flop_counter`` on the
  same steps (convolutions, matmuls and einsums, forward and backward; elementwise ops are not
  counted, so the floor is a lower bound);
- ``floor``: MFLOP at this core's matmul rate (1024^3 ``mm``), and ``x floor`` the ratio.

The last line, ``ratio=``, is the bottleneck seed at r0c0 (the dearest) over its floor.

``--occupancy evaluation.json`` (what ``esper-rllib evaluate`` or ``signal`` wrote) measures the
seeds one policy grows instead (its ``seeds_grown``: mean epochs per episode of each
blueprint@slot) and prints what they cost one `batch64` env runner's 32 episodes: CPU seconds as
measured here, and their floor; ``ratio=`` is then the measured over the floor.

Usage: python benchmarks/bench_seed_convs.py [--hosts 8 --epochs 3]
       [--occupancy EVALUATION_JSON --policy trained]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_roofline import machine  # this script's folder
from torch.utils.flop_counter import FlopCounterMode

from envs.contract import BLUEPRINT_NAMES, CNN_BLUEPRINTS, Op
from envs.heuristic import make_action
from envs.hosts import SLOT_SIZES
from envs.scripted import parse_oracle
from envs.vector_env import SeedMorphogenesisVectorEnv

ENV = {"task": "synth_impaired", "n_train": 2048, "max_epochs": 40}
RUNNER_EPISODES = 32  # one batch64 env runner's share of a 64-episode batch


def _step(env: SeedMorphogenesisVectorEnv, action: np.ndarray, count: bool) -> tuple[float, int]:
    """CPU seconds, or counted FLOPs (``count``), of one env step with this action on every
    host. FLOPs are counted on a step of their own: the counter's Python dispatch of every op
    would enter the timing."""
    acts = np.stack([action] * env.num_envs)
    if count:
        counter = FlopCounterMode(display=False)
        with counter:
            env.step(acts)
        return 0.0, counter.get_total_flops()
    start = time.process_time()
    env.step(acts)
    return time.process_time() - start, 0


def seed_cost(blueprint: int, slot: int, hosts: int, epochs: int) -> tuple[float, float]:
    """(CPU seconds, FLOPs) one live seed adds to a host-epoch: its hosts minus WAIT's."""
    envs = {side: SeedMorphogenesisVectorEnv(hosts, **ENV) for side in ("seed", "wait")}
    for env in envs.values():
        env.reset(seed=list(range(hosts)))
    grow = [make_action(Op.GERMINATE, slot, blueprint=blueprint), make_action(Op.ADVANCE, slot)]
    envs["seed"].step(np.stack([grow[0]] * hosts))
    envs["seed"].step(np.stack([grow[1]] * hosts))
    for _ in range(2):
        envs["wait"].step(np.stack([make_action(Op.WAIT)] * hosts))
    seconds = {side: 0.0 for side in envs}
    flops = {side: 0 for side in envs}
    # Interleaved, so that load and clock drift fall on both sides; the last epoch counts FLOPs.
    for epoch in range(epochs + 1):
        for side, env in envs.items():
            s, f = _step(env, make_action(Op.WAIT, slot), count=epoch == epochs)
            seconds[side] += s
            flops[side] += f
    return ((seconds["seed"] - seconds["wait"]) / (hosts * epochs),
            (flops["seed"] - flops["wait"]) / hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--occupancy", help="an evaluation.json or signal.json")
    parser.add_argument("--policy", default="trained")
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, peak = machine()
    print(f"bench_seed_convs: {args.hosts} hosts x {args.epochs} epochs per cell, impaired host, "
          f"{ENV['n_train']} training images; matmul {peak / 1e9:.1f} GFLOP/s")
    seed_cost(CNN_BLUEPRINTS[0], 0, 2, 1)  # warm-up: numba's kernels, torch's first calls
    if args.occupancy:
        grown = json.loads(open(args.occupancy).read())["policies"][args.policy]["seeds_grown"]
        cells = {name: (parse_oracle(name), epochs) for name, epochs in grown.items()}
    else:
        cells = {f"{BLUEPRINT_NAMES[b]}@r0c{s}": ((b, s), None)
                 for b in CNN_BLUEPRINTS for s in range(len(SLOT_SIZES))}
    print(f"{'blueprint@slot':18s} {'px':>3s} {'ms':>7s} {'MFLOP':>8s} {'floor ms':>9s} "
          f"{'x floor':>8s}" + ("  epochs/episode" if args.occupancy else ""))
    ratio, spent, floor_s = float("nan"), 0.0, 0.0
    for name, ((blueprint, slot), epochs) in cells.items():
        seconds, flops = seed_cost(blueprint, slot, args.hosts, args.epochs)
        floor = flops / peak
        x = seconds / floor if floor > 0 else float("nan")
        print(f"{name:18s} {SLOT_SIZES[slot]:3d} {seconds * 1e3:7.1f} {flops / 1e6:8.1f} "
              f"{floor * 1e3:9.2f} {x:8.1f}" + (f"  {epochs:.1f}" if epochs else ""))
        if epochs:
            spent += RUNNER_EPISODES * epochs * seconds
            floor_s += RUNNER_EPISODES * epochs * floor
        elif name == "bottleneck@r0c0":
            ratio = x
    if args.occupancy:
        print(f"bench_seed_convs {args.policy}'s seeds over one runner's {RUNNER_EPISODES} "
              f"episodes: {spent:.1f} CPU s measured, floor {floor_s:.1f} s")
        ratio = spent / floor_s
    print(f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
