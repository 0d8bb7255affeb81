"""The data law: how a learner's held-out EV grows with the episodes it is trained on.

For each critic cell (its held-out EV IQM at the LAST step: no step picked on held-out data)
and each reference learner with at least ``MIN_SIZES`` training-set sizes, a least-squares line
EV = a + b ln(n) through the (n, EV) points; ``episodes_for`` inverts it to the episodes at
which the line reaches a given EV (a fraction of the EV ceiling). A line on a log axis is the
simplest law the points can test; beyond the largest size it is an extrapolation, said so in
the report, and a flat or falling line never reaches the target (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.analysis.outputs import markdown_table
from esper_rllib.analysis.plots import _ceiling_band, _pyplot
from esper_rllib.offline.fit_summary import CurveSummary
from tuning.storage import atomic_path

MIN_SIZES = 3
CEILING_FRACTIONS = (0.25, 0.5)
DATA_LAW_PNG = "data_law.png"


@dataclass(frozen=True)
class DataLaw:
    learner: str
    reference: bool
    sizes: list[int]
    evs: list[float]  # IQM over seeds at each size
    intercept: float
    slope: float  # EV per unit of ln(episodes)

    def episodes_for(self, ev: float) -> float | None:
        """Episodes at which the fitted line reaches ``ev`` (None: it never does)."""
        if self.slope <= 0:
            return None
        return math.exp((ev - self.intercept) / self.slope)

    @property
    def per_doubling(self) -> float:
        return self.slope * math.log(2)


def fit_law(learner: str, reference: bool, sizes: list[int], evs: list[float]) -> DataLaw:
    slope, intercept = np.polyfit(np.log(sizes), evs, 1)
    return DataLaw(learner, reference, sizes, evs, float(intercept), float(slope))


def data_laws(summary: CurveSummary) -> list[DataLaw]:
    """One law per critic cell and reference learner measured at >= MIN_SIZES sizes."""
    laws = []
    for cell in summary.cells:
        sizes = summary.sizes[cell]
        if len(sizes) >= MIN_SIZES:
            evs = [summary.get(cell, n, summary.last_step).value for n in sizes]
            laws.append(fit_law(cell, False, sizes, evs))
    for name in summary.references:
        sizes = summary.reference_sizes[name]
        if len(sizes) >= MIN_SIZES:
            laws.append(fit_law(name, True, sizes, [summary.reference(name, n).value
                                                    for n in sizes]))
    return laws


def plot_data_law(laws: list[DataLaw], ceiling: dict[str, Any] | None, out: Path) -> Path:
    """``out``/data_law.png: held-out EV against training episodes (log x), points and lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("tab10")
    top = max(n for law in laws for n in law.sizes)
    for i, law in enumerate(laws):
        color = colors(i % 10)
        ax.plot(law.sizes, law.evs, "o", color=color, ms=5)
        xs = np.geomspace(min(law.sizes), top * 4, 50)
        ax.plot(xs, law.intercept + law.slope * np.log(xs), color=color,
                ls="--" if law.reference else "-", lw=1.3,
                label=f"{law.learner}{' (reference)' if law.reference else ''}")
    _ceiling_band(ax, ceiling, vertical=False)
    if ceiling is not None:
        for fraction in CEILING_FRACTIONS:
            ax.axhline(fraction * ceiling["estimate"], color="grey", lw=0.8, ls=":")
    ax.axvline(top, color="grey", lw=0.6)  # right of it: extrapolation
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training episodes (log); right of the grey line the lines extrapolate")
    ax.set_ylabel("held-out EV (last step; IQM over seeds)")
    ax.set_title("Data law: held-out EV = a + b ln(episodes); dotted: 25% and 50% of the "
                 "ceiling", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = out / DATA_LAW_PNG
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def data_law_lines(laws: list[DataLaw], ceiling: dict[str, Any] | None,
                   plots_dir: str) -> list[str]:
    """The report's data-law section (nothing without a law)."""
    if not laws:
        return []
    targets = [(f, f * ceiling["estimate"]) for f in CEILING_FRACTIONS] if ceiling else []
    sizes = sorted({n for law in laws for n in law.sizes})
    header = ["learner", *[f"EV @ {n}" for n in sizes], "EV per doubling",
              *[f"episodes for {f:.0%} of the ceiling ({ev:.3f})" for f, ev in targets]]
    rows = []
    for law in laws:
        reach = [law.episodes_for(ev) for _, ev in targets]
        rows.append([law.learner + (" (reference)" if law.reference else ""),
                     *[f"{dict(zip(law.sizes, law.evs, strict=True))[n]:.3f}"
                       if n in law.sizes else "" for n in sizes],
                     f"{law.per_doubling:+.4f}",
                     *["never (flat or falling)" if r is None else f"{r:,.0f}" for r in reach]])
    return ["## Data law", "",
            "Held-out EV at the last step (critics) or of the fit (references) against the "
            "training episodes, a least-squares line EV = a + b ln(n) through the IQMs. Beyond "
            "the largest size the episodes are the line's extrapolation, not a measurement."
            + ("" if ceiling else " No EV ceiling: no targets."), "",
            *markdown_table(header, rows, right_from=1), "",
            f"![data law]({plots_dir}/{DATA_LAW_PNG})", ""]
