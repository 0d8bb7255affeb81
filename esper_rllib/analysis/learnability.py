"""What there is to learn on an env and reward, before any critic is judged: scripted episodes,
their statistics, and how much of the return a critic could explain at all.

- ``play`` runs one episode of a policy and records every step (received and raw reward, reward
  components, effective op, observation features) and, at chosen steps, a branch point.
- ``ev_ceiling``: from branch points (a deep copy of the env and the policy before acting),
  continuations give Var(G | s); the most explained variance any critic can reach under that
  policy is 1 - E[Var(G | s)] / Var(G). The state here is the whole env (host weights, optimiser,
  slots, seeds, epoch), more than any observation history. Two figures:
  - the **Markov-state ceiling** (``ev_ceiling``): each continuation draws the env's future
    random stream afresh (minibatch order, augmentation, new seeds' initialisation;
    ``redraw_stream``) and the policy's action samples: the most a critic that knows the whole
    state, but not the future's dice, can explain. The upper bound for every critic.
  - the **shared-stream figure** (``ev_ceiling_shared_stream``): continuations are plain deep
    copies, which share the env's future random stream (the env is deterministic given its
    stream and the actions), so only the policy's samples differ. It credits a critic with
    knowing the future's dice and overstates the ceiling; kept to show by how much.
- ``ridge_r2``: what a linear critic on the observation explains, held out by episode.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from envs.contract import BLUEPRINT_NAMES, Op, Stage
from envs.lifecycle import SEED_STAGES
from esper_rllib.ppo.telemetry import returns_to_go

BOOTSTRAP_SAMPLES = 2000
ENV_STREAM = 1  # mixed into a continuation's seed for its env's stream (the policy's is bare)
RIDGE_ALPHA = 1.0  # on standardised features


@dataclass
class Branch:
    """The env and policy just before the action at step ``t`` of an episode."""

    t: int
    env: Any
    policy: Any
    obs: dict[str, np.ndarray]
    info: dict[str, Any]


@dataclass
class Episode:
    policy: str
    seed: int
    final_acc: float
    rewards: np.ndarray  # as received (after normalisation, rollback penalty included)
    raw_rewards: np.ndarray
    components: dict[str, float]  # each term summed over the episode
    ops: list[int]  # effective ops
    features: np.ndarray  # (steps, features + 1): the observation each action saw, and t
    branches: list[Branch] = field(default_factory=list, repr=False)
    # blueprint@slot -> steps that ended with that seed in the host's forward pass
    seed_epochs: dict[str, int] = field(default_factory=dict)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())

    @property
    def raw_return(self) -> float:
        return float(self.raw_rewards.sum())


def _run(env: Any, policy: Any, obs: dict, info: dict, t: int,
         branch_at: frozenset[int] = frozenset()) -> tuple[dict, list, list[Branch]]:
    """Step to the end of the episode from (obs, info) at step t."""
    steps, branches, done = [], [], False
    while not done:
        if t in branch_at:
            branches.append(Branch(t, copy.deepcopy(env), copy.deepcopy(policy),
                                   copy.deepcopy(obs), copy.deepcopy(info)))
        features = np.append(obs["features"], t)
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        steps.append((features, reward, info))
        done, t = terminated or truncated, t + 1
    return info, steps, branches


def play(env: Any, policy: Any, seed: int, name: str,
         branch_at: Sequence[int] = ()) -> Episode:
    """One episode of ``policy`` on ``env`` (unwrapped), reset with ``seed``. Any env with the
    real env's spaces works; accuracy, raw reward and components come from the real env's info
    (NaN, the reward, and nothing where an env such as a probe does not report them)."""
    policy.reset()
    obs, info = env.reset(seed=seed)
    info, steps, branches = _run(env, policy, obs, info, 0, frozenset(branch_at))
    components: dict[str, float] = {}
    for _, _, step_info in steps:
        for key, value in step_info.get("reward_components", {}).items():
            components[key] = components.get(key, 0.0) + value
    return Episode(
        policy=name, seed=seed, final_acc=float(info.get("val_acc", math.nan)),
        rewards=np.array([r for _, r, _ in steps]),
        raw_rewards=np.array([i.get("raw_reward", r) for _, r, i in steps]),
        components=components, ops=[i["effective_op"] for _, _, i in steps],
        features=np.stack([f for f, _, _ in steps]), branches=branches,
        seed_epochs=_seed_epochs(i for _, _, i in steps))


# A seed in these stages sits in the host's forward pass (and costs its epoch).
_IN_FORWARD = SEED_STAGES - {Stage.GERMINATED}


def _seed_epochs(infos: Iterable[dict[str, Any]]) -> dict[str, int]:
    """blueprint@slot -> how many of these steps' infos show that seed in the forward pass
    (none where an env, such as a probe, reports no slots)."""
    counts: dict[str, int] = {}
    for info in infos:
        for slot, (stage, blueprint) in enumerate(zip(info.get("slot_stages", ()),
                                                      info.get("blueprints", ()), strict=True)):
            if stage in _IN_FORWARD:
                key = f"{BLUEPRINT_NAMES[blueprint]}@r0c{slot}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def continuation_returns(branch: Branch, n: int, gamma: float,
                         reseed: Callable[[Any, int], None], seed: int,
                         redraw: Callable[[Any, int], None] | None = None) -> list[float]:
    """Discounted returns from ``branch`` of ``n`` continuations whose policies draw different
    action samples (``reseed(policy, seed + k)`` gives the k-th copy its own random stream).
    With ``redraw`` (``redraw_stream``), each continuation's env draws its future random stream
    afresh too, from a seed of its own (not the policy's); without, the copies share the env's."""
    out = []
    for k in range(n):
        env, policy = copy.deepcopy(branch.env), copy.deepcopy(branch.policy)
        reseed(policy, seed + k)
        if redraw is not None:
            redraw(env, int(np.random.SeedSequence((seed + k, ENV_STREAM)).generate_state(1)[0]))
        _, steps, _ = _run(env, policy, copy.deepcopy(branch.obs), copy.deepcopy(branch.info),
                           branch.t)
        out.append(float(returns_to_go(np.array([r for _, r, _ in steps]), gamma)[0]))
    return out


def reseed_rng(policy: Any, seed: int) -> None:
    """Give a policy with an ``rng`` attribute (numpy Generator) a new random stream."""
    policy.rng = np.random.default_rng(seed)


def redraw_stream(env: Any, seed: int) -> None:
    """Draw an env's future random stream afresh, its state untouched: the real env's
    ``redraw_future`` (np_random and its torch generator); an env without one (a probe) has only
    Gymnasium's ``np_random``."""
    if hasattr(env, "redraw_future"):
        env.redraw_future(seed)
    else:
        env.np_random, _ = seeding.np_random(seed)


# ---- statistics -------------------------------------------------------------------------
def _ceiling_estimate(sample: Sequence[np.ndarray]) -> float:
    total = np.concatenate(sample).var(ddof=1)
    within = np.mean([g.var(ddof=1) for g in sample])
    return float(1.0 - within / total) if total > 0 else math.nan


def _groups(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    arr = [np.asarray(g, dtype=float) for g in groups]
    if len(arr) < 2 or any(len(g) < 2 for g in arr):
        raise ValueError("ev_ceiling needs >= 2 states with >= 2 returns each")
    return arr


def ev_ceiling(groups: Sequence[Sequence[float]],
               shared_stream: Sequence[Sequence[float]] | None = None,
               seed: int = 0) -> dict[str, dict[str, Any] | None]:
    """1 - E[Var(G | s)] / Var(G) from groups of returns that share a state, with a 95%
    bootstrap interval over states. Var(G) pools every return: states are sampled uniformly
    over the policy's time steps, as a PPO batch's explained variance weighs them.

    ``groups``: continuations that drew the env's random stream afresh (the Markov-state
    ceiling, ``ev_ceiling``); ``shared_stream``: the same states' continuations that shared it
    (``ev_ceiling_shared_stream``, None when not measured), resampled with the same states, so
    its ``minus_fresh`` (shared - fresh) has a paired interval. Each figure: {estimate, low,
    high, states, continuations, stream, returns}."""
    fresh = _groups(groups)
    shared = None if shared_stream is None else _groups(shared_stream)
    if shared is not None and len(shared) != len(fresh):
        raise ValueError(f"ev_ceiling: {len(shared)} shared-stream states for {len(fresh)}")
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(fresh), len(fresh)) for _ in range(BOOTSTRAP_SAMPLES)]

    def boots(arr: list[np.ndarray]) -> np.ndarray:
        return np.array([_ceiling_estimate([arr[i] for i in pick]) for pick in picks])

    def interval(estimate: float, sample: np.ndarray) -> dict[str, float]:
        low, high = np.nanpercentile(sample, [2.5, 97.5])
        return {"estimate": estimate, "low": float(low), "high": float(high)}

    def figure(arr: list[np.ndarray], sample: np.ndarray, stream: str) -> dict[str, Any]:
        return {**interval(_ceiling_estimate(arr), sample), "states": len(arr),
                "continuations": len(arr[0]), "stream": stream,
                "returns": [g.tolist() for g in arr]}

    fresh_boots = boots(fresh)
    out: dict[str, dict[str, Any] | None] = {
        "ev_ceiling": figure(fresh, fresh_boots, "fresh"), "ev_ceiling_shared_stream": None}
    if shared is not None:
        shared_boots = boots(shared)
        out["ev_ceiling_shared_stream"] = {
            **figure(shared, shared_boots, "shared"),
            "minus_fresh": interval(_ceiling_estimate(shared) - _ceiling_estimate(fresh),
                                    shared_boots - fresh_boots)}
    return out


def ridge_r2(episodes: Sequence[Episode], gamma: float, folds: int = 5) -> dict[str, float]:
    """R^2 of a ridge regression from the observation (+ t / T) to the discounted return-to-go:
    held out (folds by episode, predictions pooled) and in-sample. Ours, not a library's: scipy
    has no ridge, and folds by episode with clipped, standardised features are the point."""
    xs = [e.features for e in episodes]
    ys = [returns_to_go(e.rewards, gamma) for e in episodes]
    folds = min(folds, len(episodes))
    if folds < 2:
        raise ValueError("ridge_r2 needs >= 2 episodes")

    def fit(train: list[int]) -> Callable[[np.ndarray], np.ndarray]:
        x, y = np.concatenate([xs[i] for i in train]), np.concatenate([ys[i] for i in train])
        # Features (nearly) constant in the training folds carry nothing to learn from, and
        # standardising them would blow up on a held-out episode where they move.
        # Held-out features are clipped to the range seen in training: no extrapolation.
        keep = x.std(0) > 1e-6
        x = x[:, keep]
        lo, hi, mu, sd = x.min(0), x.max(0), x.mean(0), x.std(0)
        z = (x - mu) / sd
        w = np.linalg.solve(z.T @ z + RIDGE_ALPHA * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return lambda xn: ((np.clip(xn[:, keep], lo, hi) - mu) / sd) @ w + y.mean()

    def r2(y: np.ndarray, pred: np.ndarray) -> float:
        sst = ((y - y.mean()) ** 2).sum()
        return float(1.0 - ((y - pred) ** 2).sum() / sst) if sst > 0 else math.nan

    held_y, held_pred = [], []
    for k in range(folds):
        test = list(range(k, len(episodes), folds))
        model = fit([i for i in range(len(episodes)) if i not in test])
        held_y += [ys[i] for i in test]
        held_pred += [model(xs[i]) for i in test]
    everyone = fit(list(range(len(episodes))))
    return {"held_out": r2(np.concatenate(held_y), np.concatenate(held_pred)),
            "in_sample": r2(np.concatenate(ys), everyone(np.concatenate(xs))),
            "steps": int(sum(len(y) for y in ys)), "folds": folds}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """a - b over paired episodes (same env seed): mean with its 95% t interval, paired t,
    wins of a."""
    from scipy.stats import ttest_rel

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low = high = t = math.nan
    if len(d) > 1 and d.std(ddof=1) > 1e-9 * max(1.0, abs(d.mean())):
        test = ttest_rel(a, b)
        t = float(test.statistic)
        low, high = map(float, test.confidence_interval(0.95))
    else:  # one episode, or every difference equal (scipy says NaN): no spread to scale by
        t = 0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean())
        low = high = float(d.mean())
    return {"diff": float(d.mean()), "low": low, "high": high, "t": t,
            "wins": int((d > 0).sum()), "n": len(d)}


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson's r and Spearman's rho (NaN where either side is constant: no correlation is
    defined, and scipy would warn)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return {"pearson": math.nan, "spearman": math.nan, "n": len(x)}
    return {"pearson": float(pearsonr(x, y).statistic),
            "spearman": float(spearmanr(x, y).statistic), "n": len(x)}


def seeds_grown(episodes: Sequence[Episode]) -> dict[str, float]:
    """blueprint@slot -> mean epochs per episode with that seed in the host's forward pass,
    most first: what a policy grows, and so what its seeds cost the env's steps."""
    keys = {k for e in episodes for k in e.seed_epochs}
    mean = {k: float(np.mean([e.seed_epochs.get(k, 0) for e in episodes])) for k in keys}
    return dict(sorted(mean.items(), key=lambda kv: (-kv[1], kv[0])))


def op_mix(episodes: Sequence[Episode]) -> dict[str, float]:
    ops = np.concatenate([e.ops for e in episodes])
    return {op.name: float((ops == op).mean()) for op in Op}
