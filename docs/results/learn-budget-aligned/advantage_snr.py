"""The advantage's signal-to-noise on a recording of random play: how much the first action
moves an episode's return against how much the return varies anyway.

At t = 0 every episode starts from the same kind of state, so PPO's advantage of the first
action is G_0 minus one baseline: its noise is the spread of G_0 itself. The signal is how much
G_0 depends on that action: the mean G_0 after each first op (ops legal at t = 0) against the
rest, and after a germination in the first 5 epochs against none. Printed: per-episode std of
G_0 and of the final accuracy, each effect with its standard error, effect / std (the SNR of one
episode), and the episodes per arm a batch would need for the effect to stand at 2 standard
errors: 2 x (2 / SNR)^2.

    python advantage_snr.py RECORDING [GAMMA]   (run from the repository root, in .venv)
"""

import sys

import numpy as np

from envs.contract import N_OPS, Op
from esper_rllib.offline import dataset
from esper_rllib.ppo import telemetry

records = dataset.read_episodes(sys.argv[1])
gamma = float(sys.argv[2]) if len(sys.argv) > 2 else 0.995
g0 = np.array([telemetry.returns_to_go(r.rewards, gamma)[0] for r in records])
acc = np.array([r.final_acc for r in records])
ops = np.array([r.actions[0, 0] for r in records])
legal0 = records[0].obs["action_mask"][0, :N_OPS] > 0
first_germination = np.array([
    next((t for t in range(len(r)) if r.actions[t, 0] == Op.GERMINATE
          and r.obs["action_mask"][t, Op.GERMINATE] > 0), len(r)) for r in records])
print(f"{len(records)} episodes; G_0 mean {g0.mean():.4f} std {g0.std():.4f}; final accuracy "
      f"mean {np.nanmean(acc):.2f} std {np.nanstd(acc):.2f}")
print("arm (against the rest)                 n     effect on G_0 (s.e.)  SNR     episodes/arm")


def arm(name: str, chosen: np.ndarray) -> None:
    if min(chosen.sum(), (~chosen).sum()) < 2:
        print(f"{name:38s} {int(chosen.sum()):5d}  (too few episodes on one side)")
        return
    a, b = g0[chosen], g0[~chosen]
    effect = a.mean() - b.mean()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    snr = effect / g0.std()
    need = 2 * (2 / snr) ** 2 if snr else float("inf")
    d_acc = np.nanmean(acc[chosen]) - np.nanmean(acc[~chosen])
    print(f"{name:38s} {len(a):5d}  {effect:+.4f} ({se:.4f})     {snr:+.3f}  {need:9.0f}"
          f"   final accuracy {d_acc:+.2f} points")


for op in Op:
    if legal0[op]:
        arm(f"first op {op.name}", ops == op)
arm("a germination in epochs 0-4", first_germination < 5)
arm("no germination before epoch 2", first_germination >= 2)
