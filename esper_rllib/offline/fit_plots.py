"""The critic-fit learning curves: one panel per cell, held-out EV against gradient steps (log
x), one line per training-set size (IQM over seeds, its 95% interval shaded; train EV dotted),
each reference learner's held-out EV at that size as a horizontal line in the size's colour (one
line style per reference), the EV ceiling drawn as the sweeps' reports draw it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.analysis.plots import PANEL_COLUMNS, _ceiling_band, _pyplot
from esper_rllib.offline.fit_summary import CurveSummary
from tuning.storage import atomic_path

LEARNING_CURVES_PNG = "learning_curves.png"
REFERENCE_STYLES = ("--", "-.", (0, (1, 1)), (0, (5, 1, 1, 1, 1, 1)), (0, (3, 3)))


def plot_curves(summary: CurveSummary, ceiling: dict[str, Any] | None, out: Path) -> Path:
    """``out``/learning_curves.png."""
    plt = _pyplot()
    n = len(summary.cells)
    cols = min(PANEL_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.6), sharex=True,
                             sharey=True, squeeze=False)
    steps = [s for s in summary.steps if s > 0]  # log axis: step 0 is the first point's left
    colors = plt.get_cmap("viridis")
    for ax, cell in zip(axes.flat, summary.cells, strict=False):
        sizes = summary.sizes[cell]
        for i, size in enumerate(sizes):
            color = colors(i / max(len(sizes) - 1, 1) * 0.85)
            held = [summary.get(cell, size, s) for s in steps]
            train = [summary.get(cell, size, s, "train_ev") for s in steps]
            ax.plot(steps, [e.value for e in held], color=color, lw=1.8,
                    label=f"{size} episodes, held out")
            ax.fill_between(steps, [e.low for e in held], [e.high for e in held], color=color,
                            alpha=0.15, lw=0)
            ax.plot(steps, [e.value for e in train], color=color, lw=1, ls=":",
                    label=f"{size} episodes, train")
            for j, name in enumerate(summary.references):
                if size in summary.reference_sizes[name]:
                    ax.axhline(summary.reference(name, size).value, color=color, lw=1.1,
                               alpha=0.8, ls=REFERENCE_STYLES[j % len(REFERENCE_STYLES)])
        _ceiling_band(ax, ceiling, vertical=False)
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(cell, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    low = min((summary.get(c, s, st).low for c in summary.cells for s in summary.sizes[c]
               for st in steps), default=-1.0)
    for ax in axes[:, 0]:
        ax.set_ylabel("explained variance")
        ax.set_ylim(max(np.nan_to_num(low, nan=-1.0), -1.0) - 0.05, 1.05)
    for ax in axes[-1]:
        ax.set_xlabel("gradient steps")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for j, name in enumerate(summary.references):  # one legend entry per reference, in grey
        handles.append(plt.Line2D([], [], color="dimgrey", lw=1.1,
                                  ls=REFERENCE_STYLES[j % len(REFERENCE_STYLES)]))
        labels.append(f"{name} (reference), held out")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle("Critic fit on recorded episodes: held-out EV (solid, 95% interval) and train "
                 "EV (dotted), IQM over seeds"
                 + ("\nreference learners' held-out EV: flat, in the colour of their training "
                    "episodes" if summary.references else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.025 * math.ceil(len(labels) / 4), 1,
                           0.91 if summary.references else 0.95))
    path = out / LEARNING_CURVES_PNG
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
