"""The statistics of a critic-fit learning curve (curve.csv): per cell, training-set size and
gradient step, the IQM over seeds of held-out EV, train EV and value loss with 95%
stratified-bootstrap intervals (rliable, ``esper_rllib.analysis.stats``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from esper_rllib.analysis.stats import Estimate, bootstrap_iqms

METRICS = ("heldout_ev", "train_ev", "value_loss")
# The steps the report and the decomposition read (and the budget's last step).
KEY_STEPS = (8, 64, 512)


@dataclass(frozen=True)
class CurveSummary:
    cells: list[str]  # in the order of curve.csv
    sizes: dict[str, list[int]]  # cell -> training-set sizes, ascending
    steps: list[int]  # every measured step, ascending
    estimates: dict[tuple[str, int, int, str], Estimate]  # (cell, size, step, metric)

    def get(self, cell: str, size: int, step: int, metric: str = "heldout_ev") -> Estimate:
        return self.estimates[(cell, size, step, metric)]

    def best_step(self, cell: str, size: int) -> int:
        """The step of the highest held-out EV IQM (ties: the earliest)."""
        return max(self.steps, key=lambda s: (self.get(cell, size, s).value, -s))

    @property
    def last_step(self) -> int:
        return self.steps[-1]


def summarize_curve(rows: Sequence[dict[str, Any]], seed: int = 0) -> CurveSummary:
    cells: list[str] = []
    values: dict[tuple[str, int, int, str], list[float]] = {}
    for r in rows:
        if r["cell"] not in cells:
            cells.append(r["cell"])
        for metric in METRICS:
            values.setdefault((r["cell"], r["train_episodes"], r["step"], metric),
                              []).append(r[metric])
    keys = list(values)
    estimates = dict(zip(keys, bootstrap_iqms([values[k] for k in keys], seed=seed),
                         strict=True))
    sizes = {c: sorted({k[1] for k in keys if k[0] == c}) for c in cells}
    steps = sorted({k[2] for k in keys})
    return CurveSummary(cells, sizes, steps, estimates)
