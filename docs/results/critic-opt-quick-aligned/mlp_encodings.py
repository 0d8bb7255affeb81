"""Can a plain MLP read what the trees read? The inputs of the reference learners
(reference.design_matrix) robustly scaled (median / MAD, clipped +-5, as feature_norm=robust),
quantile-transformed to a normal, and three mixes; widths 64 and 256, dropout, a 5-member
ensemble. AdamW, 512-row step-shuffled minibatches, early stopping on the last quarter of the
training episodes; critic-fit's split (every 4th env seed held out).

    python mlp_encodings.py RECORDING 1   (first set: mlp_encodings.txt)
    python mlp_encodings.py RECORDING 2   (second set: mlp_encodings2.txt)
    python mlp_encodings.py RECORDING 3   (piecewise-linear encodings: mlp_encodings3.txt)
    python mlp_encodings.py RECORDING 4   (the best of set 3 in 5 seeds against the trees:
                                           mlp_encodings4.txt)

The third set encodes each feature as the product's critic_feature_bins does
(esper_rllib.model.feature_norm.PiecewiseLinearEncoding, fitted on the same rows as the
scalers): its position in each of N quantile bins, centred.
"""

import sys
import time

import numpy as np
import torch
from sklearn.preprocessing import QuantileTransformer

from esper_rllib.model.feature_norm import PiecewiseLinearEncoding
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
Xh, Gh, EPh = rows(held)
back = EP >= int(len(pool) * 0.75)
print(X.shape, Xh.shape, flush=True)
fit = X[~back]
mad = np.median(np.abs(fit - np.median(fit, 0)), 0) * 1.4826
sd = fit.std(0) + 1e-8
qt = QuantileTransformer(n_quantiles=256, output_distribution="normal", subsample=10**6,
                         random_state=0).fit(fit)


def robust_unclipped(a: np.ndarray) -> np.ndarray:
    return (a - np.median(fit, 0)) / np.where(mad > 0, mad, sd)


def robust(a: np.ndarray, clip: float = 5.0) -> np.ndarray:
    return np.clip(robust_unclipped(a), -clip, clip)


def zscore(a: np.ndarray) -> np.ndarray:
    return np.clip((a - fit.mean(0)) / sd, -5, 5)


def ple(a: np.ndarray, bins: int, scale: object = np.asarray) -> np.ndarray:
    """``scale(a)`` encoded, the encoding fitted on ``scale(fit)``."""
    encoding = PiecewiseLinearEncoding(a.shape[1], bins)
    encoding.fit(torch.tensor(scale(fit), dtype=torch.float32))
    with torch.no_grad():
        return encoding(torch.tensor(scale(a), dtype=torch.float32)).numpy()


def train(x: np.ndarray, xh: np.ndarray, lr: float = 3e-4, dropout: float = 0.1,
          width: int = 64, seed: int = 0, wd: float = 0.0) -> tuple[np.ndarray, int]:
    torch.manual_seed(seed)
    gm, gs = G[~back].mean(), G[~back].std()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    xt, xb, xhh = t(x[~back]), t(x[back]), t(xh)
    gt, gb = t((G[~back] - gm) / gs), t((G[back] - gm) / gs)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], width), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(width, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    best, state, since = float("inf"), None, 0
    for step in range(8000):
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
        return net(xhh).squeeze(-1).numpy() * gs + gm, step


def run(name: str, x: np.ndarray, xh: np.ndarray, **kw: float) -> None:
    start = time.time()
    p, step = train(x, xh, **kw)
    print(f"{name} {kw}: EV {ev(Gh, p):.3f} (stopped {step}, {time.time() - start:.0f}s)",
          flush=True)


if sys.argv[2] == "1":
    for name, (x, xh) in {"robust": (robust(X), robust(Xh)),
                          "quantile": (qt.transform(X), qt.transform(Xh))}.items():
        for kw in ({}, {"width": 256}, {"width": 256, "dropout": 0.2}):
            run(name, x, xh, **kw)
        preds = [train(x, xh, seed=s)[0] for s in range(5)]
        print(f"{name} ensemble of 5 (width 64, dropout 0.1): EV {ev(Gh, np.mean(preds, 0)):.3f}; "
              "members " + " ".join(f"{ev(Gh, p):.3f}" for p in preds), flush=True)
elif sys.argv[2] == "3":
    for bins in (8, 32):
        x, xh = ple(X, bins), ple(Xh, bins)
        for kw in ({}, {"dropout": 0.3}, {"wd": 0.1, "lr": 1e-3}):
            run(f"ple{bins}", x, xh, **kw)
    x, xh = ple(X, 8), ple(Xh, 8)
    preds = [train(x, xh, seed=s, wd=0.1, lr=1e-3)[0] for s in range(5)]
    print(f"ple8 ensemble of 5 (wd 0.1, lr 1e-3): EV {ev(Gh, np.mean(preds, 0)):.3f}; members "
          + " ".join(f"{ev(Gh, p):.3f}" for p in preds), flush=True)
    x, xh = ple(X, 8, robust), ple(Xh, 8, robust)
    run("ple8 of the robust features", x, xh, wd=0.1, lr=1e-3)
elif sys.argv[2] == "4":
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, xh = ple(X, 8), ple(Xh, 8)
    preds = [train(x, xh, seed=s)[0] for s in range(5)]
    print("ple8 (width 64, dropout 0.1, lr 3e-4), seeds 0-4: EV "
          + " ".join(f"{ev(Gh, p):.3f}" for p in preds)
          + f"; ensemble of 5 {ev(Gh, np.mean(preds, 0)):.3f}", flush=True)
    # The data law's trees (reference.fit_reference), on the whole training pool.
    trees = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, min_samples_leaf=40,
                                          early_stopping=False, random_state=0).fit(X, G)
    pt = trees.predict(Xh)
    print(f"trees: EV {ev(Gh, pt):.3f}", flush=True)
    # Paired bootstrap over held-out episodes: the same resampled episodes score both.
    rng = np.random.default_rng(0)
    rows_of = [np.flatnonzero(EPh == e) for e in range(int(EPh.max()) + 1)]
    for name, p in {"seed 0": preds[0], "ensemble of 5": np.mean(preds, 0)}.items():
        diffs = []
        for _ in range(2000):
            i = np.concatenate([rows_of[e] for e in rng.integers(0, len(rows_of), len(rows_of))])
            diffs.append(ev(Gh[i], p[i]) - ev(Gh[i], pt[i]))
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"{name} - trees: {ev(Gh, p) - ev(Gh, pt):+.3f} [{lo:+.3f}, {hi:+.3f}] "
              "(95% bootstrap over held-out episodes)", flush=True)
else:
    share = np.sort((np.abs(robust_unclipped(fit)) > 5).mean(0))[-5:]
    print("clipped share per column (robust, |x|>5):", np.round(share, 3))
    mixes = {"robust clip 20": (robust(X, 20), robust(Xh, 20)),
             "robust + z": (np.hstack([robust(X), zscore(X)]), np.hstack([robust(Xh), zscore(Xh)])),
             "robust + quantile": (np.hstack([robust(X), qt.transform(X)]),
                                   np.hstack([robust(Xh), qt.transform(Xh)]))}
    for name, (x, xh) in mixes.items():
        for kw in ({}, {"lr": 1e-3}):
            run(name, x, xh, **kw)
