"""A side check outside the product's critics: a plain 2-layer MLP (64 wide, AdamW, 512-row
step-shuffled minibatches, early stopping on the last quarter of the training episodes) from
the same inputs as the reference learners (reference.design_matrix: features, blueprint
one-hots, t) to the return-to-go, with the inputs as they are, z-scored (clipped +-5) and
robustly scaled (median / MAD, clipped +-5); gradient-boosted trees beside them. The split is
critic-fit's kind: every 4th env seed held out.

    python mlp_check.py RECORDING   (run from the repository root, in .venv)
"""

import sys

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor

from esper_rllib.offline import dataset, reference
from esper_rllib.ppo import telemetry

torch.set_num_threads(1)
records = sorted(dataset.read_episodes(sys.argv[1]), key=lambda r: r.env_seed)
held = [r for i, r in enumerate(records) if i % 4 == 3]
pool = [r for i, r in enumerate(records) if i % 4 != 3]


def rows(rs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.concatenate([reference.design_matrix(r) for r in rs])
    g = np.concatenate([telemetry.returns_to_go(r.rewards, 0.995) for r in rs])
    return x, g, np.concatenate([np.full(len(r), i) for i, r in enumerate(rs)])


def ev(g: np.ndarray, p: np.ndarray) -> float:
    return 1 - np.var(g - p) / np.var(g)


X, G, EP = rows(pool)
Xh, Gh, _ = rows(held)
back = EP >= int(len(pool) * 0.75)
trees = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=40,
                                      early_stopping=False, random_state=0).fit(X, G)
print(f"{len(pool)} training episodes, {len(held)} held out")
print(f"trees: held-out EV {ev(Gh, trees.predict(Xh)):.3f}")


def mlp(x: np.ndarray, xh: np.ndarray, lr: float, dropout: float, seed: int = 0) -> float:
    torch.manual_seed(seed)
    gm, gs = G[~back].mean(), G[~back].std()
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    xt, xb, xhh = t(x[~back]), t(x[back]), t(xh)
    gt, gb = t((G[~back] - gm) / gs), t((G[back] - gm) / gs)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                              torch.nn.Dropout(dropout), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(64, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    best, state, since = float("inf"), None, 0
    for step in range(6000):
        net.train()
        i = torch.randint(0, len(xt), (512,))
        loss = ((net(xt[i]).squeeze(-1) - gt[i]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            net.eval()
            with torch.no_grad():
                lb = float(((net(xb).squeeze(-1) - gb) ** 2).mean())
            if lb < best:
                best, state, since = lb, {k: v.clone() for k, v in net.state_dict().items()}, 0
            elif (since := since + 1) > 20:
                break
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return ev(Gh, net(xhh).squeeze(-1).numpy() * gs + gm)


fit = X[~back]
mad = np.median(np.abs(fit - np.median(fit, 0)), 0) * 1.4826
sd = fit.std(0) + 1e-8
scalings = {
    "as they are": (X, Xh),
    "z-score, clip 5": tuple(np.clip((a - fit.mean(0)) / sd, -5, 5) for a in (X, Xh)),
    "median/MAD, clip 5": tuple(np.clip((a - np.median(fit, 0)) / np.where(mad > 0, mad, sd),
                                        -5, 5) for a in (X, Xh)),
}
for name, (x, xh) in scalings.items():
    for lr, dropout in ((1e-3, 0.0), (3e-4, 0.1)):
        print(f"MLP, inputs {name}, lr {lr:g}, dropout {dropout}: held-out EV "
              f"{mlp(x, xh, lr, dropout):.3f}")
