"""Statistics for the ablation report, from rliable (Agarwal et al., NeurIPS 2021): interquartile
means with stratified-bootstrap intervals, probability of improvement, and main effects.

A handful of seeds per cell is the norm, so the statistics are robust ones (IQM rather than the
mean) and every number comes with a 95% percentile-bootstrap interval over seeds. rliable arranges
scores as (runs x tasks); here the runs are the seeds and a "task" is one summary metric.

rliable's bootstrap calls the statistic once per replicate in a Python loop, and its own
``aggregate_iqm`` and ``probability_of_improvement`` go through scipy, whose per-call overhead
(~0.4 ms and ~2 ms) made a report of 8 cells take ~30 s at 2000 replicates. ``column_iqm`` and
``improvement`` are the same statistics in NumPy (tests hold them equal to rliable's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from rliable import library, metrics

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
IQM_CUT = 0.25  # rliable's aggregate_iqm: scipy.stats.trim_mean(proportiontocut=0.25)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def format(self, fmt: str = ".3g") -> str:
        if math.isnan(self.value):
            return "n/a"
        if self.n < 2:
            return f"{self.value:{fmt}} (n=1)"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


MISSING = Estimate(math.nan, math.nan, math.nan, 0)


def _runs(values: Sequence[float]) -> np.ndarray:
    """The finite values as rliable's (runs x 1 task) score matrix (NaN = not reported)."""
    x = np.asarray(values, dtype=float).reshape(-1)
    return x[np.isfinite(x)][:, None]


def column_iqm(scores: np.ndarray) -> np.ndarray:
    """IQM of each column: rliable's ``metrics.aggregate_iqm`` (the 25% trimmed mean, cutting
    int(n / 4) values from each end) of each task, in one call."""
    n = scores.shape[0]
    cut = int(IQM_CUT * n)
    return np.sort(scores, axis=0)[cut:n - cut].mean(axis=0)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """rliable's bootstraps draw their indices from NumPy's global generator (its
    ``random_state`` argument does not reach them): seed it for reproducible intervals, then put
    the caller's state back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimates(scores: np.ndarray | list[np.ndarray],
                       statistic: Callable[..., np.ndarray], reps: int = N_BOOTSTRAP,
                       confidence: float = CONFIDENCE, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """rliable's stratified-bootstrap point estimates and percentile intervals (2 x tasks) of
    ``statistic`` over one score matrix, or over several resampled independently. Seeded.
    Single runs have nothing to resample: their interval is the point."""
    groups = scores if isinstance(scores, list) else [scores]
    if all(g.shape[0] == 1 for g in groups):
        point = np.asarray(statistic(*groups), dtype=float)
        return point, np.stack([point, point])
    with _seeded(seed):
        points, intervals = library.get_interval_estimates(
            {"x": scores}, statistic, reps=reps, confidence_interval_size=confidence)
    return np.asarray(points["x"], dtype=float), np.asarray(intervals["x"], dtype=float)


def improvement(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's ``probability_of_improvement`` of X over Y on one task: over all pairs of a run
    of X and a run of Y, P(x > y) + P(x = y) / 2 (the Mann-Whitney U over n_x * n_y)."""
    diff = x[:, 0, None] - y[None, :, 0]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean of the finite values (rliable's ``aggregate_iqm``; fewer than 4 values
    give the plain mean). NaN for no finite value."""
    x = _runs(values)
    return float(metrics.aggregate_iqm(x)) if x.size else math.nan


def bootstrap_iqms(columns: Sequence[Sequence[float]], reps: int = N_BOOTSTRAP,
                   confidence: float = CONFIDENCE, seed: int = 0) -> list[Estimate]:
    """IQM of each column of values with its stratified-bootstrap interval (each column resampled
    on its own; NaN values dropped first). Columns with the same count of finite values share one
    bootstrap call."""
    runs = [_runs(c) for c in columns]
    estimates: list[Estimate] = [MISSING] * len(runs)
    for n in sorted({r.shape[0] for r in runs} - {0}):
        index = [i for i, r in enumerate(runs) if r.shape[0] == n]
        point, interval = interval_estimates(np.hstack([runs[i] for i in index]), column_iqm,
                                             reps, confidence, seed)
        for j, i in enumerate(index):
            estimates[i] = Estimate(float(point[j]), float(interval[0, j]),
                                    float(interval[1, j]), n)
    return estimates


def bootstrap_iqm(values: Sequence[float], reps: int = N_BOOTSTRAP,
                  confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """IQM of the finite values with its stratified-bootstrap interval. Seeded."""
    return bootstrap_iqms([values], reps, confidence, seed)[0]


def _two_groups(a: Sequence[float], b: Sequence[float], statistic: Callable[..., float],
                reps: int, confidence: float, seed: int) -> Estimate:
    x, y = _runs(a), _runs(b)
    if not x.size or not y.size:
        return MISSING
    point, interval = interval_estimates(
        [x, y], lambda u, v: np.array([statistic(u, v)]), reps, confidence, seed)
    return Estimate(float(point[0]), float(interval[0, 0]), float(interval[1, 0]),
                    int(min(x.shape[0], y.shape[0])))


def mean_difference(a: Sequence[float], b: Sequence[float], reps: int = N_BOOTSTRAP,
                    confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """mean(b) - mean(a) with a stratified-bootstrap interval (each group resampled on its own).
    ``n`` is the smaller group's size."""
    return _two_groups(a, b, lambda x, y: y.mean() - x.mean(), reps, confidence, seed)


def probability_of_improvement(x: Sequence[float], y: Sequence[float], reps: int = N_BOOTSTRAP,
                               confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """P(X > Y): the chance that a run of X scores higher than a run of Y, ties counting half
    (``improvement``), with a stratified-bootstrap interval. 0.5 = no difference; NaN values are
    dropped."""
    return _two_groups(x, y, improvement, reps, confidence, seed)


def main_effects(levels: Sequence[object], outcomes: Sequence[float], reps: int = N_BOOTSTRAP,
                 seed: int = 0) -> dict[object, Estimate]:
    """The main effect of one axis: for each level after the first (in order of appearance),
    the mean outcome at that level minus the mean at the first level, over all trials (the
    other axes averaged over, as in a full factorial grid)."""
    groups: dict[object, list[float]] = {}
    for level, outcome in zip(levels, outcomes, strict=True):
        groups.setdefault(level, []).append(outcome)
    reference, *others = groups
    return {level: mean_difference(groups[reference], groups[level], reps, seed=seed)
            for level in others}


def crossed_mean(scores: Sequence[Sequence[float]], reps: int = N_BOOTSTRAP,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean of a (trials x env seeds) score matrix in which every trial played the same env
    seeds, with a percentile-bootstrap interval that resamples the trials and the env seeds
    independently: both are samples (a crossed design, outside rliable's runs x tasks). One
    trial: the interval is over env seeds alone. ``n`` counts the scores. Seeded."""
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        return MISSING
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, x.shape[0], size=(reps, x.shape[0], 1))
    cols = rng.integers(0, x.shape[1], size=(reps, 1, x.shape[1]))
    means = x[rows, cols].mean(axis=(1, 2))
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))
