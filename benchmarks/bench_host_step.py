"""The single env's step before and after the host-step work (issue 19), side by side.

"Before" is today's code path kept here as the baseline: ``legacy_train_epoch`` is the host
epoch as ``envs/training.py`` ran it before (one ``x[idx]`` gather per minibatch, ReLU before a
MaxPool2d with autograd, torch's SGD and clip per minibatch, a host sync per minibatch for the
non-finite check). "After" is the env as it is (``train_epochs``: the stacked host with K = 1).
Both envs get the same seed and the same actions; the step's other work (validation,
counterfactuals, lifecycle, reward) is the same code in both.

With ``--compile`` it also measures ``torch.compile`` of the new host step's forward and loss
(``StackedHosts.losses``, K = 1, host only, no seeds): its compile time and per-epoch time, and
the epochs a trial must run to pay it back.

The last line, ``ratio=``, is the median step time before over after (> 1: faster now).

Usage: python benchmarks/bench_host_step.py [--n-train 2048 --n-val 1000 --steps 12 --compile]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from envs.contract import Op
from envs.datasets import augment_batch
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.seeded_model import SeededModel
from envs.tasks import TaskSpec
from envs.training import (
    EXPLODING_NORM,
    VANISHING_NORM,
    EpochResult,
    SeedGradStats,
    _clip,
    train_epochs,
)


def legacy_train_epoch(
    model: SeededModel,
    host_opt: torch.optim.Optimizer,
    seed_opts: dict[int, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: TaskSpec,
    gen: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> EpochResult:
    """envs/training.py's train_epoch before issue 19, verbatim (the baseline)."""
    model.train()
    n_batches = x.shape[0] // task.batch_size
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    host_params = model.host_parameters()
    seed_params = {i: [p for g in o.param_groups for p in g["params"]]
                   for i, o in seed_opts.items()}
    total = torch.zeros((), device=x.device)
    norm_sum = {i: torch.zeros((), device=x.device) for i in seed_opts}
    healthy = {i: torch.zeros((), device=x.device) for i in seed_opts}
    for b in range(n_batches):
        idx = perm[b * task.batch_size:(b + 1) * task.batch_size]
        xb = x[idx]
        if augment is not None:
            xb = augment(xb, gen)
        loss = F.cross_entropy(model(xb), y[idx])
        if not torch.isfinite(loss):
            return EpochResult(math.nan, {})
        host_opt.zero_grad(set_to_none=True)
        for opt in seed_opts.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        _clip(host_params, task.grad_clip)
        host_opt.step()
        for i, opt in seed_opts.items():
            norm = _clip(seed_params[i], task.grad_clip).detach()
            norm_sum[i] += norm
            healthy[i] += (torch.isfinite(norm) & (norm >= VANISHING_NORM)
                           & (norm <= EXPLODING_NORM)).float()
            opt.step()
        total += loss.detach()
    n = max(n_batches, 1)
    stats = {i: SeedGradStats(float(norm_sum[i]) / n, float(healthy[i]) / n) for i in seed_opts}
    return EpochResult(float(total) / n, stats)


class LegacyEnv(SeedMorphogenesisEnv):
    """The env with the baseline host epoch; everything else is the env's own code."""

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        start = self._begin_step(action)
        augment = augment_batch if self._data.augment else None
        result = legacy_train_epoch(self._model, self._host_opt, self._learners(),
                                    self._data.x_train, self._data.y_train,
                                    task=self.cfg.task, gen=self._gen, augment=augment)
        return self._end_step(start, result)


# WAIT, then a conv_light seed in slot 1 trained and blended in, so most steps carry a seed.
SCRIPT = [make_action(Op.WAIT), make_action(Op.GERMINATE, 1, blueprint=1, tempo=0,
                                            alpha_target=2),
          make_action(Op.ADVANCE, 1), make_action(Op.ADVANCE, 1), make_action(Op.ADVANCE, 1)]


def action(i: int) -> np.ndarray:
    return SCRIPT[i] if i < len(SCRIPT) else make_action(Op.WAIT)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_compile(n_train: int, n_val: int, epochs: int) -> str:
    """torch.compile of the host step (host only): compile time, per-epoch time, payback."""
    env = SeedMorphogenesisEnv(n_train=n_train, n_val=n_val, max_epochs=10_000)
    env.reset(seed=0)
    task, data = env.cfg.task, env._data

    def epoch() -> None:
        train_epochs([env.model], [env._host_opt], [{}], data.x_train, data.y_train,
                     task=task, gen=env._gen)

    eager = statistics.median(timed(epoch) for _ in range(epochs))
    from envs import stacked  # compile the stacked forward in place, as the env would

    original = stacked.StackedHosts.losses
    stacked.StackedHosts.losses = torch.compile(original, dynamic=False)
    try:
        first = timed(epoch)  # includes the compile
        compiled = statistics.median(timed(epoch) for _ in range(epochs))
    finally:
        stacked.StackedHosts.losses = original
    compile_s = first - compiled
    gain = eager - compiled
    payback = compile_s / gain if gain > 0 else math.inf
    return (f"torch.compile: eager {eager * 1e3:.1f} ms/epoch, compiled {compiled * 1e3:.1f} "
            f"ms/epoch, compile {compile_s:.1f} s: pays back after {payback:.0f} epochs "
            f"(eager/compiled {eager / compiled:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the env runs one per env-runner core

    kw = {"n_train": args.n_train, "n_val": args.n_val, "max_epochs": args.steps + 1}
    before, after = LegacyEnv(**kw), SeedMorphogenesisEnv(**kw)
    before.reset(seed=0)
    after.reset(seed=0)
    t_before, t_after, drift = [], [], 0.0
    for i in range(args.steps):  # interleaved, so load on the machine hits both alike
        a = action(i)
        t_before.append(timed(lambda a=a: before.step(a)))
        t_after.append(timed(lambda a=a: after.step(a)))
        drift = max(drift, abs(before._loss_hist[-1] - after._loss_hist[-1]))
    med = statistics.median
    print(f"bench_host_step ({args.n_train}/{args.n_val}, {args.steps} steps, a seed from "
          f"step 2): env.step before {med(t_before) * 1e3:.1f} ms, after "
          f"{med(t_after) * 1e3:.1f} ms; largest val_loss difference {drift:.2e}")
    if args.compile:
        print(measure_compile(args.n_train, args.n_val, 5))
    print(f"ratio={med(t_before) / med(t_after):.2f}")


if __name__ == "__main__":
    main()
