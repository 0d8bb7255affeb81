"""The report's PNG plots, made to be read at a glance: small multiples (one panel per cell, each
seed a thin line, the seed mean bold) of EV, value loss and clip ratio against iteration; the main
effect of each axis with its interval; each cell's final EV against the EV ceiling."""

from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.ticker import LogFormatter, MaxNLocator

from esper_rllib.analysis.sweep import CEILING_CELLS, ceiling_applies
from esper_rllib.ppo import metric_names as mn
from esper_rllib.ppo.collapse import EXTREME_CLIP_RATIO, STRONG_EV
from tuning.storage import atomic_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

    from esper_rllib.analysis.cells import Analysis
    from esper_rllib.analysis.sweep import Cell, Sweep

# (per-iteration metric, axis title, reference line and its label or None)
PANEL_METRICS = (
    ("explained_variance", "explained variance", (STRONG_EV, f"strong (EV > {STRONG_EV})")),
    (mn.EV_RETURN, "explained variance vs the return-to-go", None),
    ("value_loss", "value loss", None),
    ("clip_ratio", "clip ratio (pre-clip grad norm / max)",
     (EXTREME_CLIP_RATIO, f"extreme clipping ({EXTREME_CLIP_RATIO:g}x)")),
)
EV_METRICS = (mn.EV, mn.EV_RETURN)
PANEL_COLUMNS = 4
SEED_COLOR, MEAN_COLOR, CEILING_COLOR, REF_COLOR = "tab:blue", "navy", "tab:green", "tab:red"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _wrap(text: str, width: int = 40) -> str:
    """Lines of about ``width`` characters, broken after a label's commas, never in a word."""
    lines = textwrap.wrap(text.replace(",", ", "), width, break_long_words=False)
    return "\n".join(line.replace(", ", ",") for line in lines) or text


def _series(cell: Cell, metric: str) -> tuple[list[int], np.ndarray]:
    """The iterations any seed reached, and a seeds x iterations grid (NaN = not reported)."""
    iterations = sorted({i for t in cell.trials for i in t.iterations})
    column = {it: j for j, it in enumerate(iterations)}
    grid = np.full((len(cell.trials), len(iterations)), np.nan)
    for row, trial in enumerate(cell.trials):
        for it, value in zip(trial.iterations, trial.series(metric), strict=True):
            grid[row, column[it]] = value
    return iterations, grid


def _ceiling_band(ax: Any, ceiling: dict[str, Any] | None, vertical: bool) -> None:
    if ceiling is None:
        return
    label = f"EV ceiling, {ceiling['policy']} policy"
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    span(ceiling["low"], ceiling["high"], color=CEILING_COLOR, alpha=0.18, lw=0, label=label)
    line(ceiling["estimate"], color=CEILING_COLOR, lw=1)


def panel_figure(sweep: Sweep, analysis: Analysis, labels: Sequence[str], metric: str,
                 title: str, reference: tuple[float, str] | None) -> Figure:
    """One panel per cell, shared axes: each seed a thin line, the seed mean bold."""
    plt = _pyplot()
    n = len(sweep.cells)
    cols = min(PANEL_COLUMNS, n)
    rows = math.ceil(n / cols)
    width, height = max(3.4 * cols, 8.0), 2.5 * rows + 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), sharex=True, sharey=True,
                             squeeze=False)
    positive = True
    for index, (ax, cell, label) in enumerate(zip(axes.flat, sweep.cells, labels,
                                                  strict=False)):
        iterations, grid = _series(cell, metric)
        finite = grid[np.isfinite(grid)]
        positive = positive and bool(finite.size) and bool((finite > 0).all())
        # A run of one or two iterations draws no line: its points need markers to be seen.
        dots = {"marker": "o", "ms": 4} if len(iterations) < 3 else {}
        for k, row in enumerate(grid):
            ax.plot(iterations, row, color=SEED_COLOR, lw=0.8, alpha=0.55,
                    label="a seed" if k == 0 else None, **dots)
        with warnings.catch_warnings():  # an all-NaN column: no seed reported it there
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(grid, axis=0) if grid.size else grid
        ax.plot(iterations, mean, color=MEAN_COLOR, lw=2.2, label="seed mean", **dots)
        if metric in EV_METRICS:
            if ceiling_applies(analysis.ceiling, index):
                _ceiling_band(ax, analysis.ceiling, vertical=False)
            ax.axhline(0.0, color="gray", lw=0.8)
        if reference is not None:
            ax.axhline(reference[0], color=REF_COLOR, lw=0.9, ls="--", label=reference[1])
        ax.set_title(_wrap(label), fontsize=7.5)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if positive and metric not in EV_METRICS:
        _log_scale(axes[0, 0])  # losses and ratios span decades; shared by every panel
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel(title, fontsize=8)
    for column in range(cols):  # the lowest panel of each column carries the iteration axis
        bottom = axes[(n - 1 - column) // cols, column]
        bottom.xaxis.set_tick_params(labelbottom=True)
        bottom.set_xlabel("iteration", fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", fontsize=7, ncols=len(names), frameon=False)
    fig.suptitle(f"{title}: one panel per cell; thin = a seed, bold = the seed mean",
                 fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - 0.1 / height))
    return fig


def _log_scale(ax: Any) -> None:
    """A log axis labelled in plain numbers (20, not 2 x 10^1)."""
    ax.set_yscale("log")
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _interval(ax: Any, y: float, estimate: Any, **style: Any) -> None:
    if math.isnan(estimate.value):
        return
    xerr = [[estimate.value - estimate.low], [estimate.high - estimate.value]]
    ax.errorbar(estimate.value, y, xerr=xerr, fmt="o", capsize=3, **style)


def main_effects_figure(analysis: Analysis, outcomes: Sequence[tuple[str, str]]
                        ) -> Figure | None:
    """Each axis level against the axis's first level, on each (metric, title) outcome, with its
    interval."""
    effects = analysis.effects
    if not effects:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(outcomes), figsize=(5 * len(outcomes),
                                                        0.45 * len(effects) + 1.6),
                             sharey=True, squeeze=False)
    for ax, (metric, title) in zip(axes[0], outcomes, strict=True):
        for y, effect in enumerate(effects):
            _interval(ax, y, effect.estimates[metric], color=MEAN_COLOR)
        ax.axvline(0.0, color="gray", lw=0.9)
        ax.set_title(f"effect on {title} (difference of means, 95% CI)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.tick_params(labelsize=8)
    axes[0, 0].set_yticks(range(len(effects)),
                          [f"{e.axis}: {e.level} vs {e.first}" for e in effects])
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig


def final_ev_figure(sweep: Sweep, analysis: Analysis, labels: Sequence[str]) -> Figure:
    """Each cell's final EV (its seeds as dots, the IQM with its interval) against the EV
    ceiling's band."""
    plt = _pyplot()
    n = len(sweep.cells)
    fig, ax = plt.subplots(figsize=(10, 0.42 * n + 1.8))
    ceiling = analysis.ceiling
    if ceiling is not None and ceiling.get(CEILING_CELLS) is None:
        _ceiling_band(ax, ceiling, vertical=True)
    elif ceiling is not None:  # a band across the rows of the cells it applies to only
        for k, y in enumerate(ceiling[CEILING_CELLS]):
            ax.fill_betweenx([y - 0.45, y + 0.45], ceiling["low"], ceiling["high"],
                             color=CEILING_COLOR, alpha=0.18, lw=0,
                             label=f"EV ceiling, {ceiling['policy']} policy" if k == 0 else None)
            ax.vlines(ceiling["estimate"], y - 0.45, y + 0.45, color=CEILING_COLOR, lw=1)
    ax.axvline(0.0, color="gray", lw=0.9)
    ax.axvline(STRONG_EV, color=REF_COLOR, lw=0.9, ls="--", label=f"strong (EV > {STRONG_EV})")
    for y, cell in enumerate(sweep.cells):
        seeds = np.asarray(cell.scores("final_ev"), dtype=float)
        # Seeds just under their cell's interval, so the IQM marker does not hide them.
        ax.plot(seeds, np.full(seeds.shape, y + 0.22), "o", ms=3.5, color=SEED_COLOR, alpha=0.6,
                label="a seed" if y == 0 else None)
        _interval(ax, y, analysis.estimates[y]["final_ev"], color=MEAN_COLOR, lw=2,
                  label="IQM, 95% CI" if y == 0 else None)
    ax.set_yticks(range(n), labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("final EV (trailing window)")
    fig.suptitle("final EV per cell" + ("" if analysis.ceiling else " (no EV ceiling measured)"),
                 fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_report(sweep: Sweep, analysis: Analysis, labels: Sequence[str],
                outcomes: Sequence[tuple[str, str]], out_dir: Path) -> list[Path]:
    """Every plot of the report into ``out_dir`` (``labels``: one per cell, as the report names
    it); returns their paths."""
    figures = {"final_ev": final_ev_figure(sweep, analysis, labels),
               "main_effects": main_effects_figure(analysis, outcomes),
               **{metric: panel_figure(sweep, analysis, labels, metric, title, reference)
                  for metric, title, reference in PANEL_METRICS if sweep.reports(metric)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = []
    for name, fig in figures.items():
        if fig is not None:
            written.append(out_dir / f"{name}.png")
            with atomic_path(written[-1]) as tmp:
                fig.savefig(tmp, dpi=100, format="png")
            plt.close(fig)
    return written
