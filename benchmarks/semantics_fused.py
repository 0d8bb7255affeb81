"""Whole-episode semantics of the fused host kernels against the PyTorch reference (issue 34).

For the `batch64` profile's env (its task, n_train, max_epochs and reward; the default n_val),
plays one whole episode per env seed with ``host_kernel="torch"`` and with ``host_kernel="fused"``
on the same env seeds and the same policies: WAIT, random (``RandomPolicy`` seeded 1,000 + the env
seed, as the learnability audit seeds it), the heuristic, and an oracle-style scripted policy
with one fixed ``BLUEPRINT@SLOT`` (``--oracle``; the real oracle's search costs minutes). Each
side is one ``SeedMorphogenesisVectorEnv`` of K = the number of seeds (seeds as a list: sub-env
k is reset with seed k, the shared data order comes from the first seed, the same on both
sides); sub-env k has its own policy object, fed its own row of the batched obs and info.

Per episode it keeps the final validation accuracy and the return (the sum of the rewards the
env paid) of each side, and per step the two sides' difference in reward, accuracy and
observation features, whether the action masks agree, and the first step where the two sides'
accuracy or action differ. Rows go to a CSV (``--csv``; rows of the same policy and seed are
replaced, others kept, so seeds can be added by later runs); the summary of every row in the
CSV is printed as markdown: per policy the means of each side, the paired difference (fused -
torch) with its 95% paired t interval over env seeds, and whether that interval lies inside
+-``--bound`` accuracy points (the issue's equivalence bound, 0.5).

Usage: python benchmarks/semantics_fused.py --csv rows.csv [--policies wait random heuristic
oracle --first-seed 0 --seeds 32 --oracle bottleneck@r0c1 --bound 0.5]
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.contract import Op
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import HeuristicPolicy, WaitPolicy, make_action
from envs.scripted import OraclePolicy, RandomPolicy, parse_oracle
from envs.vector_env import SeedMorphogenesisVectorEnv
from esper_rllib.analysis.audit import RANDOM_SEED_BASE
from esper_rllib.analysis.learnability import paired
from esper_rllib.run.config import env_config, resolve_knobs

PROFILE = "batch64"
POLICIES = ("wait", "random", "heuristic", "oracle")
SIDES = ("torch", "fused")
EARLY_STEPS = 5  # steps 1..EARLY_STEPS: the per-step agreement's window
FIELDS = ("policy", "seed", "acc_torch", "acc_fused", "return_torch", "return_fused",
          "early_max_reward_diff", "early_max_acc_diff", "early_max_feature_diff",
          "early_masks_equal", "first_acc_diff_step", "first_action_diff_step", "steps")


def policy_factory(name: str, oracle: tuple[int, int], max_epochs: int
                   ) -> Callable[[int], Any]:
    """env seed -> the policy object that plays that seed's episode."""
    return {"wait": lambda seed: WaitPolicy(),
            "random": lambda seed: RandomPolicy(RANDOM_SEED_BASE + seed),
            "heuristic": lambda seed: HeuristicPolicy(),
            "oracle": lambda seed: OraclePolicy(*oracle, max_epochs)}[name]


def row_of(obs: dict[str, np.ndarray], infos: dict[str, Any], k: int
           ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Sub-env k's observation and info out of the vector env's batched ones."""
    def pick(tree: dict[str, Any]) -> dict[str, Any]:
        return {key: pick(value) if isinstance(value, dict) else value[k]
                for key, value in tree.items() if not key.startswith("_")}
    info = pick(infos)
    for key in ("slot_stages", "alphas", "contributions", "blueprints"):
        info[key] = list(info[key])
    return {key: value[k] for key, value in obs.items()}, info


def play_side(kernel: str, policy: str, seeds: Sequence[int], env_kwargs: dict[str, Any],
              oracle: tuple[int, int]) -> dict[str, Any]:
    """One episode per seed on one vector env: per sub-env its trace of (action, reward,
    accuracy, features, mask) per step (step 0: the reset), its return and final accuracy."""
    vec = SeedMorphogenesisVectorEnv(len(seeds), **env_kwargs, host_kernel=kernel)
    make = policy_factory(policy, oracle, env_kwargs["max_epochs"])
    players = [make(seed) for seed in seeds]
    for player in players:
        player.reset()
    obs, infos = vec.reset(seed=list(seeds))
    traces: list[list[tuple]] = [[] for _ in seeds]
    for k in range(len(seeds)):
        o, info = row_of(obs, infos, k)
        traces[k].append((None, 0.0, info["val_acc"], o["features"].copy(),
                          o["action_mask"].copy()))
    done = np.zeros(len(seeds), dtype=bool)
    returns, final_acc = np.zeros(len(seeds)), np.full(len(seeds), math.nan)
    start = time.perf_counter()
    while not done.all():
        actions = [make_action(Op.WAIT) if done[k] else players[k].act(*row_of(obs, infos, k))
                   for k in range(len(seeds))]
        obs, rewards, terminated, truncated, infos = vec.step(np.stack(actions))
        for k in np.flatnonzero(~done):
            o, info = row_of(obs, infos, k)
            traces[k].append((actions[k].copy(), float(rewards[k]), info["val_acc"],
                              o["features"].copy(), o["action_mask"].copy()))
            returns[k] += rewards[k]
            if terminated[k] or truncated[k]:
                done[k], final_acc[k] = True, info["val_acc"]
    return {"traces": traces, "returns": returns, "final_acc": final_acc,
            "seconds": time.perf_counter() - start}


def first_step(flags: Sequence[bool]) -> int | str:
    """The first step (counted from 0, the reset) where a flag is set; "" when none is."""
    return next((t for t, flag in enumerate(flags) if flag), "")


def compare(policy: str, seeds: Sequence[int], sides: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """One CSV row per seed: both sides' outcomes and where their trajectories part."""
    rows = []
    for k, seed in enumerate(seeds):
        ref, new = sides["torch"]["traces"][k], sides["fused"]["traces"][k]
        n = min(len(ref), len(new))
        early = slice(1, EARLY_STEPS + 1)
        reward_diff = [abs(a[1] - b[1]) for a, b in zip(ref[:n], new[:n], strict=True)]
        acc_diff = [abs(a[2] - b[2]) for a, b in zip(ref[:n], new[:n], strict=True)]
        feature_diff = [float(np.abs(a[3].astype(np.float64) - b[3]).max())
                        for a, b in zip(ref[:n], new[:n], strict=True)]
        masks_equal = [bool(np.array_equal(a[4], b[4]))
                       for a, b in zip(ref[:n], new[:n], strict=True)]
        action_differs = [t > 0 and not np.array_equal(a[0], b[0])
                          for t, (a, b) in enumerate(zip(ref[:n], new[:n], strict=True))]
        rows.append({
            "policy": policy, "seed": seed,
            "acc_torch": sides["torch"]["final_acc"][k],
            "acc_fused": sides["fused"]["final_acc"][k],
            "return_torch": sides["torch"]["returns"][k],
            "return_fused": sides["fused"]["returns"][k],
            "early_max_reward_diff": max(reward_diff[early]),
            "early_max_acc_diff": max(acc_diff[early]),
            "early_max_feature_diff": max(feature_diff[early]),
            "early_masks_equal": all(masks_equal[early]),
            "first_acc_diff_step": first_step([d > 0 for d in acc_diff]),
            "first_action_diff_step": first_step(action_differs),
            "steps": f"{len(ref) - 1}/{len(new) - 1}",
        })
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def reference_rows(path: Path, policy: str, seeds: Sequence[int], env_kwargs: dict[str, Any],
                   oracle: tuple[int, int]) -> list[dict[str, Any]]:
    """The reference against itself: the CSV's reference episodes of ``seeds`` (stacked with
    the other seeds of their run) beside the same episodes on a vector env of ``seeds`` only:
    the same data order (from the first seed) and actions, another float order."""
    recorded = {int(r["seed"]): r for r in read_rows(path) if r["policy"] == policy}
    missing = [s for s in seeds if s not in recorded]
    if missing:
        raise SystemExit(f"--reference-seeds: {path} has no {policy} rows for seeds {missing}; "
                         "run the pair first")
    own = play_side("torch", policy, seeds, env_kwargs, oracle)
    print(f"  {policy} torch at K={len(seeds)}: {own['seconds']:.0f} s", flush=True)
    return [{"policy": f"{policy}:torch-K{len(seeds)}", "seed": seed,
             "acc_torch": float(recorded[seed]["acc_torch"]), "acc_fused": own["final_acc"][k],
             "return_torch": float(recorded[seed]["return_torch"]),
             "return_fused": own["returns"][k], **dict.fromkeys(FIELDS[6:], "")}
            for k, seed in enumerate(seeds)]


def _label_key(label: str) -> tuple[int, str]:
    """Rows in POLICIES' order, a policy's reference-against-itself rows after its own."""
    return POLICIES.index(label.split(":")[0]), label


def write_rows(path: Path, new: list[dict[str, Any]]) -> None:
    """The CSV's rows with ``new`` replacing any of the same (policy, seed), sorted."""
    keys = {(r["policy"], str(r["seed"])) for r in new}
    rows = [r for r in read_rows(path) if (r["policy"], r["seed"]) not in keys] + new
    rows.sort(key=lambda r: (*_label_key(r["policy"]), int(r["seed"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in r.items()})
    tmp.replace(path)


def _ci(p: dict[str, float], digits: int) -> str:
    return f"{p['diff']:+.{digits}f} [{p['low']:+.{digits}f}, {p['high']:+.{digits}f}]"


def _parts(rows: list[dict[str, Any]], field: str) -> str:
    """Median (min-max; how many never) of a first-step column."""
    steps = [int(r[field]) for r in rows if r[field] != ""]
    never = len(rows) - len(steps)
    if not steps:
        return f"never ({never})"
    return f"{np.median(steps):g} ({min(steps)}-{max(steps)}; {never})"


def summary(rows: list[dict[str, Any]], bound: float) -> str:
    """The markdown tables: outcomes paired over env seeds, and the early per-step agreement."""
    lines = ["| policy | seeds | acc torch | acc fused | fused - torch acc [95% t] | "
             f"inside +-{bound} | return torch | return fused | fused - torch return [95% t] |",
             "|---|---|---|---|---|---|---|---|---|"]
    early = [f"| policy | max abs reward diff, steps 1-{EARLY_STEPS} | max abs acc diff (points) "
             "| max abs feature diff | masks equal | first step acc differs: median "
             "(min-max; seeds never) | first step action differs: median (min-max; seeds "
             "never) |", "|---|---|---|---|---|---|---|"]
    for policy in sorted({r["policy"] for r in rows}, key=_label_key):
        mine = [r for r in rows if r["policy"] == policy]
        col = {f: np.array([float(r[f]) for r in mine]) for f in FIELDS[2:6]}
        acc = paired(col["acc_fused"], col["acc_torch"])
        ret = paired(col["return_fused"], col["return_torch"])
        inside = "yes" if -bound < acc["low"] and acc["high"] < bound else "no"
        lines.append(f"| {policy} | {len(mine)} | {col['acc_torch'].mean():.2f} | "
                     f"{col['acc_fused'].mean():.2f} | {_ci(acc, 2)} | {inside} | "
                     f"{col['return_torch'].mean():.3f} | {col['return_fused'].mean():.3f} | "
                     f"{_ci(ret, 3)} |")

        if mine[0]["early_max_reward_diff"] == "":
            continue  # the reference against itself: outcomes only
        early.append(
            f"| {policy} | {max(float(r['early_max_reward_diff']) for r in mine):.2g} | "
            f"{max(float(r['early_max_acc_diff']) for r in mine):.2g} | "
            f"{max(float(r['early_max_feature_diff']) for r in mine):.2g} | "
            f"{sum(r['early_masks_equal'] in (True, 'True') for r in mine)}/{len(mine)} | "
            f"{_parts(mine, 'first_acc_diff_step')} | {_parts(mine, 'first_action_diff_step')} |")
    return "\n".join([*lines, "", *early])


def first_steps(policy: str, seed: int, steps: int, env_kwargs: dict[str, Any],
                oracle: tuple[int, int], perturbation: float) -> str:
    """Per step of one single-env episode, the fused side's and a perturbed reference's
    distance from the reference (host_kernel="torch"): the perturbed reference is the reference
    with every host parameter multiplied by 1 + ``perturbation`` x N(0, 1) after the reset, a
    float-rounding-sized change; where the fused side parts no faster than it, the parting is
    float order amplified by training, not a different function."""
    make = policy_factory(policy, oracle, env_kwargs["max_epochs"])
    runs = {}
    for side in ("torch", "fused", "perturbed"):
        env = SeedMorphogenesisEnv(**env_kwargs, host_kernel="fused" if side == "fused"
                                   else "torch")
        player = make(seed)
        player.reset()
        obs, info = env.reset(seed=seed)
        if side == "perturbed":
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in env.model.parameters():
                    p.mul_(1 + perturbation * torch.randn(p.shape, generator=gen))
        trace = []
        for _ in range(steps):
            action = player.act(obs, info)
            obs, reward, _, _, info = env.step(action)
            params = torch.cat([p.detach().flatten() for p in env.model.parameters()])
            trace.append((action, reward, info["val_acc"], obs["features"].copy(), params))
        runs[side] = trace
    lines = [f"{policy}, env seed {seed}: distance from the reference (host_kernel=torch) of "
             f"the fused side / of the reference perturbed by {perturbation:g}",
             "| step | op | reward | acc (points) | features | parameters |",
             "|---|---|---|---|---|---|"]
    for t, (ref, *others) in enumerate(zip(*runs.values(), strict=True), 1):
        cells = [" / ".join(f"{abs(o[1] - ref[1]):.2g}" for o in others),
                 " / ".join(f"{abs(o[2] - ref[2]):.2g}" for o in others),
                 " / ".join(f"{np.abs(o[3] - ref[3]).max():.2g}" for o in others),
                 " / ".join(f"{(o[4] - ref[4]).abs().max().item():.2g}" for o in others)]
        lines.append(f"| {t} | {Op(int(ref[0][0])).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True, help="per-seed rows (merged)")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=32, help="env seeds, one vector env")
    parser.add_argument("--oracle", default="bottleneck@r0c1", help="BLUEPRINT@SLOT")
    parser.add_argument("--bound", type=float, default=0.5, help="accuracy points")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--reference-seeds", type=int, default=0, metavar="N",
                        help="instead: the reference against itself, the first N seeds' "
                        "episodes on a vector env of N beside the CSV's reference rows of "
                        "those seeds at K=--seeds (rows POLICY:torch-KN; acc_fused and "
                        "return_fused hold the reference at K=N)")
    parser.add_argument("--first-steps", type=int, metavar="STEPS", default=0,
                        help="instead: per step of one single-env episode (--policies' first, "
                        "--first-seed), the fused side and a perturbed reference against the "
                        "reference")
    parser.add_argument("--perturbation", type=float, default=1e-7,
                        help="--first-steps: the perturbed reference's relative change")
    args = parser.parse_args()
    try:
        oracle = parse_oracle(args.oracle)
    except ValueError as err:
        parser.error(f"--oracle: {err}")
    if not 0 <= args.reference_seeds < args.seeds:
        parser.error(f"--reference-seeds must be 0 (off) or 1..{args.seeds - 1} (fewer than "
                     f"--seeds, a different stacking), got {args.reference_seeds}")
    if args.seeds < 2:
        parser.error(f"--seeds must be >= 2 (a paired interval needs two), got {args.seeds}")
    torch.set_num_threads(1)  # one env runner, one core
    env_kwargs = env_config(resolve_knobs(PROFILE))
    if args.first_steps:
        print(first_steps(args.policies[0], args.first_seed, args.first_steps, env_kwargs,
                          oracle, args.perturbation))
        return
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if not args.summary_only:
        print(f"semantics_fused: profile {PROFILE} env {env_kwargs}, seeds {seeds[0]}.."
              f"{seeds[-1]}, oracle {args.oracle}", flush=True)
        for policy in args.policies:
            if args.reference_seeds:
                write_rows(args.csv, reference_rows(args.csv, policy, seeds[:args.reference_seeds],
                                                    env_kwargs, oracle))
                continue
            sides = {}
            for kernel in SIDES:
                sides[kernel] = play_side(kernel, policy, seeds, env_kwargs, oracle)
                print(f"  {policy} {kernel}: {sides[kernel]['seconds']:.0f} s for "
                      f"{len(seeds)} episodes", flush=True)
            write_rows(args.csv, compare(policy, seeds, sides))
    print(summary(read_rows(args.csv), args.bound))


if __name__ == "__main__":
    main()
