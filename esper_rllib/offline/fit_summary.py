"""The statistics of a critic-fit learning curve (curve.csv): per cell, training-set size and
gradient step, the IQM over seeds of held-out EV, train EV and value loss with 95%
stratified-bootstrap intervals (rliable, ``esper_rllib.analysis.stats``); per reference learner
(curve.csv's ``kind`` ``reference`` rows, no step) and training-set size, the same over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    references: list[str] = field(default_factory=list)  # in the order of curve.csv
    reference_sizes: dict[str, list[int]] = field(default_factory=dict)
    reference_estimates: dict[tuple[str, int, str], Estimate] = field(
        default_factory=dict)  # (reference, size, metric)

    def get(self, cell: str, size: int, step: int, metric: str = "heldout_ev") -> Estimate:
        return self.estimates[(cell, size, step, metric)]

    def reference(self, name: str, size: int, metric: str = "heldout_ev") -> Estimate:
        return self.reference_estimates[(name, size, metric)]

    def best_step(self, cell: str, size: int) -> int:
        """The step of the highest held-out EV IQM (ties: the earliest)."""
        return max(self.steps, key=lambda s: (self.get(cell, size, s).value, -s))

    @property
    def last_step(self) -> int:
        return self.steps[-1]


def summarize_curve(rows: Sequence[dict[str, Any]], seed: int = 0) -> CurveSummary:
    cells: list[str] = []
    values: dict[tuple[str, int, int, str], list[float]] = {}
    references: list[str] = []
    ref_values: dict[tuple[str, int, str], list[float]] = {}
    for r in rows:
        if r.get("kind", "critic") == "reference":
            if r["cell"] not in references:
                references.append(r["cell"])
            for metric in METRICS:
                ref_values.setdefault((r["cell"], r["train_episodes"], metric),
                                      []).append(r[metric])
            continue
        if r["cell"] not in cells:
            cells.append(r["cell"])
        for metric in METRICS:
            values.setdefault((r["cell"], r["train_episodes"], r["step"], metric),
                              []).append(r[metric])
    keys = list(values)
    ref_keys = list(ref_values)
    estimates = dict(zip(keys, bootstrap_iqms([values[k] for k in keys], seed=seed),
                         strict=True))
    ref_estimates = bootstrap_iqms([ref_values[k] for k in ref_keys], seed=seed)
    sizes = {c: sorted({k[1] for k in keys if k[0] == c}) for c in cells}
    steps = sorted({k[2] for k in keys})
    return CurveSummary(cells, sizes, steps, estimates, references,
                        {n: sorted({k[1] for k in ref_keys if k[0] == n}) for n in references},
                        dict(zip(ref_keys, ref_estimates, strict=True)))
