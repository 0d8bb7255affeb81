"""Statistics for the ablation report: interquartile mean, percentile bootstrap intervals, and
main effects (experiments.md section 4).

A handful of seeds per cell is the norm, so the statistics are robust ones (IQM rather than the
mean) and every number comes with a 95% bootstrap interval over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000


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


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def _iqm_rows(x: np.ndarray) -> np.ndarray:
    """IQM of each row: the mean of the middle 50% (25% cut from each end, rounded down)."""
    n = x.shape[-1]
    cut = n // 4
    return np.sort(x, axis=-1)[..., cut:n - cut].mean(axis=-1)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% of the finite values (25% cut from each
    end, rounded down, so fewer than 4 values give the plain mean). NaN for no finite value."""
    x = _finite(values)
    return float(_iqm_rows(x)) if x.size else math.nan


def bootstrap_iqm(values: Sequence[float], n_boot: int = N_BOOTSTRAP,
                  confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """IQM of the finite values with a percentile bootstrap interval (resampling the values
    with replacement). Seeded, so a report is reproducible."""
    x = _finite(values)
    if not x.size:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(_iqm_rows(x))
    if x.size == 1:
        return Estimate(value, value, value, 1)
    rng = np.random.default_rng(seed)
    stats = _iqm_rows(rng.choice(x, size=(n_boot, x.size), replace=True))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return Estimate(value, float(low), float(high), int(x.size))


def mean_difference(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOTSTRAP,
                    confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """mean(b) - mean(a) with a percentile bootstrap interval (each group resampled on its own).
    ``n`` is the smaller group's size."""
    x, y = _finite(a), _finite(b)
    if not x.size or not y.size:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(y.mean() - x.mean())
    rng = np.random.default_rng(seed)
    diffs = (rng.choice(y, size=(n_boot, y.size)).mean(axis=1)
             - rng.choice(x, size=(n_boot, x.size)).mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return Estimate(value, float(low), float(high), int(min(x.size, y.size)))


def main_effects(levels: Sequence[object], outcomes: Sequence[float],
                 seed: int = 0) -> dict[object, Estimate]:
    """The main effect of one axis: for each level after the first (in order of appearance),
    the mean outcome at that level minus the mean at the first level, over all trials (the
    other axes averaged over, as in a full factorial grid)."""
    groups: dict[object, list[float]] = {}
    for level, outcome in zip(levels, outcomes, strict=True):
        groups.setdefault(level, []).append(outcome)
    reference, *others = groups
    return {level: mean_difference(groups[reference], groups[level], seed=seed)
            for level in others}
