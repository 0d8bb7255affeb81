"""How far each of the observation's base features moves on a recording, against its span, and
the mean return-to-go per twentile of the validation-loss feature.

    python feature_scale.py RECORDING [GAMMA]   (run from the repository root, in .venv)
"""

import sys

import numpy as np

from envs.contract import N_BASE_FEATURES
from esper_rllib.offline import dataset
from esper_rllib.ppo import telemetry

records = dataset.read_episodes(sys.argv[1])
gamma = float(sys.argv[2]) if len(sys.argv) > 2 else 0.995
x = np.concatenate([r.obs["features"][:, :N_BASE_FEATURES] for r in records])
g = np.concatenate([telemetry.returns_to_go(r.rewards, gamma) for r in records])
print(f"{len(records)} episodes, {len(x)} steps; G mean {g.mean():.3f} std {g.std():.3f}")
print("feature  min      q10      q50      q90      max      (q90-q10)/(max-min)")
for j in range(N_BASE_FEATURES):
    q = np.quantile(x[:, j], [0, 0.1, 0.5, 0.9, 1])
    span = q[4] - q[0]
    ratio = (q[3] - q[1]) / span if span > 0 else float("nan")
    print(f"{j:7d}  " + "  ".join(f"{v:7.4f}" for v in q) + f"  {ratio:.4f}")
edges = np.quantile(x[:, 1], np.linspace(0, 1, 21))
bins = np.digitize(x[:, 1], edges[1:-1])
print("mean G per twentile of feature 1 (validation loss):")
print(" ".join(f"{g[bins == b].mean():+.3f}" for b in range(20)))
