"""Reference learners of ``esper-rllib critic-fit`` (``--reference``): scikit-learn regressors of
the discounted return-to-go from each step's observation, fitted on exactly the critics'
training episodes and scored on the same held-out episodes with the project's one explained
variance. They say how much of the return the observation tells a plain tabular learner, so a
critic's held-out EV is read against them, not alone.

Families (``FAMILIES``), each fitted in two variants (``reference_names``):
- ``trees``: ``HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05,
  min_samples_leaf=40, random_state=seed)``, early stopping off (always 300 iterations: its
  validation split would be of steps, which share episodes with the training steps);
- ``ridge``: the features standardised, then ``Ridge``; alpha from ``RIDGE_ALPHAS``
  (1e-2 .. 1e6) by the lowest squared error of an episode-grouped K-fold cross-validation on the
  training episodes alone (``RIDGE_FOLDS`` folds, fewer when there are fewer episodes), then
  refitted on all of them;
- ``<family>`` reads the current step's features (``step_features``) plus t;
  ``<family>_k4`` the last ``STACK`` = 4 steps' features stacked (current first, zeros before
  the episode's start) plus t.

The target is ``ppo.telemetry.returns_to_go`` of the recorded rewards with the fit's gamma (what
the critics regress); every row is a real step (a recording has no padding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.contract import N_BLUEPRINTS
from esper_rllib.offline.dataset import EpisodeRecord
from esper_rllib.ppo import telemetry

FAMILIES = ("trees", "ridge")
NONE = "none"
DEFAULT = ",".join(FAMILIES)
STACK = 4
RIDGE_ALPHAS = tuple(10.0 ** k for k in range(-2, 7))
RIDGE_FOLDS = 5
# The observation keys the features are built from, in this order (the critic's inputs).
FEATURE_KEYS = ("features", "blueprints")


def step_features(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(T, F) float64: one row per step of an episode's observations ``obs`` (``dataset``'s
    ``EpisodeRecord.obs``: key -> (T, ...)), in this order:

    1. ``features``: the env's float features as they are (``envs.observation``: the base
       features, then each slot's);
    2. ``blueprints``: each slot's blueprint index one-hot over N_BLUEPRINTS + 1 values (the
       last is the empty slot), slot by slot.

    These are exactly what the critic reads (its feature net takes ``features`` and the
    blueprint embeddings). ``action_mask`` is left out: the critic does not read it (only the
    policy heads do, to mask their logits), and it follows from the lifecycle state that the
    features carry. The step index t is not here: ``design_matrix`` appends it.
    """
    features = np.asarray(obs["features"], np.float64)
    ids = np.asarray(obs["blueprints"], np.int64)
    onehot = np.eye(N_BLUEPRINTS + 1)[ids].reshape(len(ids), -1)
    return np.concatenate([features.reshape(len(features), -1), onehot], axis=1)


def design_matrix(record: EpisodeRecord, stack: int = 1) -> np.ndarray:
    """(T, stack x F + 1): ``step_features`` of steps t, t-1, ..., t-stack+1 (zeros before the
    episode's first step), then t."""
    x = step_features(record.obs)
    parts = [np.concatenate([np.zeros((min(lag, len(x)), x.shape[1])), x[:max(len(x) - lag, 0)]])
             for lag in range(stack)]
    t = np.arange(len(x), dtype=np.float64)[:, None]
    return np.concatenate([*parts, t], axis=1)


def reference_names(families: Sequence[str]) -> list[str]:
    """The reference cells of ``families``: each on the current step, then stacked."""
    return [*families, *(f"{f}_k{STACK}" for f in families)]


def parse_references(text: str) -> list[str]:
    """``--reference``: comma-separated families, or ``none``; the reference cells.
    ValueError for anything else (the caller words it)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts == [NONE]:
        return []
    if not parts or any(p not in FAMILIES for p in parts) or len(set(parts)) < len(parts):
        raise ValueError(text)
    return reference_names(parts)


def family_and_stack(name: str) -> tuple[str, int]:
    """(family, how many steps' features) of a reference cell's name."""
    for family in FAMILIES:
        if name in (family, f"{family}_k{STACK}"):
            return family, 1 if name == family else STACK
    raise ValueError(f"reference {name!r}: not one of {reference_names(FAMILIES)}")


@dataclass(frozen=True)
class ReferenceFit:
    name: str
    heldout_ev: float
    train_ev: float
    value_loss: float  # 0.5 x mean squared error on the training steps, the critics' loss form
    detail: str  # e.g. the ridge's alpha


def _rows(records: Sequence[EpisodeRecord], gamma: float, stack: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, G, episode index of each row)."""
    x = np.concatenate([design_matrix(r, stack) for r in records])
    g = np.concatenate([telemetry.returns_to_go(r.rewards, gamma) for r in records])
    groups = np.concatenate([np.full(len(r), i) for i, r in enumerate(records)])
    return x, g, groups


def _ev(targets: np.ndarray, predictions: np.ndarray) -> float:
    g = torch.from_numpy(np.asarray(targets, np.float64))
    ev, _ = telemetry.explained_variance(g, torch.from_numpy(np.asarray(predictions,
                                                                        np.float64)),
                                         torch.ones_like(g, dtype=torch.bool))
    return ev


def _ridge(alpha: float) -> Any:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def ridge_alpha(x: np.ndarray, g: np.ndarray, groups: np.ndarray) -> float:
    """The alpha of ``RIDGE_ALPHAS`` with the lowest out-of-fold squared error, folds of whole
    episodes (ties: the larger alpha)."""
    from sklearn.model_selection import GroupKFold

    folds = min(RIDGE_FOLDS, len(np.unique(groups)))
    splits = list(GroupKFold(n_splits=folds).split(x, g, groups))
    errors = []
    for alpha in RIDGE_ALPHAS:
        sq = 0.0
        for train, test in splits:
            model = _ridge(alpha).fit(x[train], g[train])
            sq += float(((model.predict(x[test]) - g[test]) ** 2).sum())
        errors.append(sq)
    best = min(errors)
    return max(a for a, e in zip(RIDGE_ALPHAS, errors, strict=True) if e <= best * (1 + 1e-12))


def fit_reference(name: str, train: Sequence[EpisodeRecord], heldout: Sequence[EpisodeRecord],
                  *, gamma: float, seed: int) -> ReferenceFit:
    """The reference ``name`` (e.g. ``trees``, ``ridge_k4``) fitted on ``train``'s steps,
    scored on ``heldout``'s and ``train``'s (EV over every real step)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    family, stack = family_and_stack(name)
    x, g, groups = _rows(train, gamma, stack)
    x_held, g_held, _ = _rows(heldout, gamma, stack)
    with threadpool_limits(1):  # one CPU per trial, as the critics
        if family == "trees":
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05,
                                                  min_samples_leaf=40, early_stopping=False,
                                                  random_state=seed)
            detail = ""
        else:
            alpha = ridge_alpha(x, g, groups)
            model, detail = _ridge(alpha), f"alpha {alpha:g}"
        model.fit(x, g)
        fitted, predicted = model.predict(x), model.predict(x_held)
    return ReferenceFit(name, _ev(g_held, predicted), _ev(g, fitted),
                        0.5 * float(np.mean((fitted - g) ** 2)), detail)
