"""Env overhead and counterfactual cost, measured side by side in one process.

1. One `env.step` (train one epoch, validate, counterfactuals, lifecycle, reward, observation)
   versus a plain PyTorch loop doing the same work on the same model and data.
2. Main validation pass plus every counterfactual, over the main pass alone: prefix-shared
   (what the env does) and one full pass per configuration (the naive way).

The last line, ``ratio=``, is 2's prefix-shared ratio (the issue's goal: <= 1.5).

Usage: python benchmarks/bench_env.py [--n-train 5000 --n-val 1000 --repeats 5]
(`--n-train 50000 --n-val 10000`: CIFAR-sized synthetic data, same host.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from envs.contract import Op
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.training import EVAL_CHUNK, validate


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def env_with_three_blending_seeds(n_train, n_val, device="cpu"):
    """A seed in each slot, alpha > 0, so every step measures three counterfactuals."""
    env = SeedMorphogenesisEnv(n_train=n_train, n_val=n_val, max_seeds=0, max_epochs=10_000,
                               device=device)
    env.reset(seed=0)
    blueprints = (1, 7, 4)  # conv_light, conv_heavy, depthwise
    for slot, bp in enumerate(blueprints):
        env.step(make_action(Op.GERMINATE, slot, blueprint=bp, tempo=0, alpha_target=2))
    for _ in range(2):  # GERMINATED -> TRAINING -> BLENDING
        for slot in range(3):
            env.step(make_action(Op.ADVANCE, slot))
    assert all(a > 0 for a in env.step(make_action(Op.WAIT))[4]["alphas"])
    return env


def plain_epoch(env):
    """The same work as one env step, written as a plain PyTorch loop."""
    model, data, task = env.model, env._data, env.cfg.task
    seeds = [s for s in model.slots if s.seed is not None]
    host_opt = torch.optim.SGD(model.host.parameters(), lr=task.host_lr,
                               momentum=task.host_momentum, weight_decay=task.host_weight_decay)
    seed_opts = [torch.optim.SGD(s.seed_parameters(), lr=task.seed_lr,
                                 momentum=task.seed_momentum) for s in seeds]
    model.train()
    perm = torch.randperm(data.x_train.shape[0])
    for b in range(data.x_train.shape[0] // task.batch_size):
        idx = perm[b * task.batch_size:(b + 1) * task.batch_size]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        for opt in (host_opt, *seed_opts):
            opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.host.parameters(), task.grad_clip)
        host_opt.step()
        for s, opt in zip(seeds, seed_opts, strict=True):
            torch.nn.utils.clip_grad_norm_(s.seed_parameters(), task.grad_clip)
            opt.step()
    validate(model, data.x_val, data.y_val, env._ablation_configs())


def separate_passes(model, x, y, configs):
    """One full forward pass per configuration, in the same chunks as `validate`."""
    with torch.no_grad():
        model.eval()
        for start in range(0, x.shape[0], EVAL_CHUNK):
            xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
            for cfg in [frozenset(), *configs]:
                (model(xb, ablate=cfg).argmax(1) == yb).sum()


def parse_sizes(description: str) -> argparse.Namespace:
    """--n-train, --n-val and --repeats (this benchmark and gpu_env_step.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def main() -> None:
    args = parse_sizes(__doc__.splitlines()[0])
    torch.set_num_threads(1)  # the env runs one per env-runner core

    env = env_with_three_blending_seeds(args.n_train, args.n_val)
    x, y = env._data.x_val, env._data.y_val
    configs = env._ablation_configs()
    step_t, plain_t, main_t, shared_t, separate_t = [], [], [], [], []
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        step_t.append(timed(lambda: env.step(make_action(Op.WAIT))))
        plain_t.append(timed(lambda: plain_epoch(env)))
        main_t.append(timed(lambda: validate(env.model, x, y, [])))
        shared_t.append(timed(lambda: validate(env.model, x, y, configs)))
        separate_t.append(timed(lambda: separate_passes(env.model, x, y, configs)))
    med = statistics.median
    size = f"{args.n_train}/{args.n_val}"
    print(f"bench_env step: env.step {med(step_t) * 1e3:.0f} ms vs plain loop "
          f"{med(plain_t) * 1e3:.0f} ms per epoch ({size}, 3 live seeds): "
          f"ratio {med(step_t) / med(plain_t):.2f}x")
    print(f"bench_env counterfactuals ({len(configs)} configs): main+counterfactuals / main = "
          f"{med(shared_t) / med(main_t):.2f}x prefix-shared, "
          f"{med(separate_t) / med(main_t):.2f}x separate passes (naive {1 + len(configs)}x)")
    print(f"ratio={med(shared_t) / med(main_t):.2f}")


if __name__ == "__main__":
    main()
