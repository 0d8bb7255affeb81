"""The ablation report (experiments.md section 4): ``report.md`` plus PNG plots, from a sweep's
experiment folder.

Per cell (the swept axes but the seed), over seeds: IQM and 95% bootstrap interval of each
summary metric, verdict counts; the main effect of each axis on final EV; heuristic and
WAIT-only episode accuracy as reference rows; EV, value loss and clip ratio against iteration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib.metric_names import VERDICT, VERDICTS
from esper_rllib.stats import Estimate, bootstrap_iqm, main_effects
from tuning.naming import label
from tuning.plan import SEED, SweepPlan
from tuning.results import TrialRecord, load_experiment, summarize

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
REFERENCE_FILE = "reference.json"
REFERENCE_EPISODES = 2
UNDETERMINED = "undetermined"

# (summary metric, column title): the cell table's columns, in experiments.md's order.
CELL_METRICS = (
    ("initial_value_loss", "initial value loss"),
    ("ev_iter5", "EV @ iter 5"),
    ("best_ev", "best EV"),
    ("final_ev", "final EV (trailing)"),
    ("median_clip_ratio", "median clip ratio"),
    ("final_q_spread", "final Q-spread"),
    ("median_kl", "median KL"),
    ("final_accuracy", "final accuracy %"),
)
PLOT_METRICS = (("explained_variance", "explained variance"), ("value_loss", "value loss"),
                ("clip_ratio", "clip ratio (pre-clip grad norm / max)"))
# The seed document's two runs, when a sweep has them: (gain, depth, value_coef).
NAMED_CELLS = {(1.0, 2, 0.5): "the broken run", (0.01, 4, 1.0): "the seed document's fix"}
NAMED_AXES = ("value_head_gain", "value_head_depth", "value_coef")


@dataclass
class Cell:
    values: tuple  # one value per cell axis
    trials: list[TrialRecord]
    summaries: list[dict[str, Any]]

    def label(self, axes: Sequence[str]) -> str:
        # The cell part of its trials' names (folders, console, TensorBoard runs).
        return label(dict(zip(axes, self.values, strict=True))) or "all"

    def estimate(self, metric: str) -> Estimate:
        return bootstrap_iqm([s[metric] for s in self.summaries])

    def verdicts(self) -> dict[str, int]:
        counts = {v: 0 for v in (*VERDICTS, UNDETERMINED)}
        for s in self.summaries:
            counts[s[VERDICT] if s[VERDICT] in counts else UNDETERMINED] += 1
        return counts


@dataclass
class Sweep:
    """An experiment folder as the report sees it."""

    path: Path
    plan: SweepPlan | None
    axes: list[str]  # cell axes (the seed excluded)
    trials: list[TrialRecord]
    cells: list[Cell]


def _varying_axes(trials: Sequence[TrialRecord]) -> list[str]:
    """Without sweep.json: the params that differ between trials are the axes."""
    keys = sorted({k for t in trials for k in t.params})
    return [k for k in keys if k != SEED
            and len({json.dumps(t.params.get(k), sort_keys=True, default=str)
                     for t in trials}) > 1]


def load_sweep(experiment_dir: str | Path) -> Sweep:
    path = Path(experiment_dir)
    trials = load_experiment(path)
    if not trials:
        raise ValueError(f"{experiment_dir}: no trial folders (params.json) found")
    try:
        plan: SweepPlan | None = SweepPlan.load(path)
    except ValueError:
        plan = None
    axes = plan.cell_axes if plan else _varying_axes(trials)
    order = {a: (plan.axes[a] if plan else []) for a in axes}

    def sort_key(values: tuple) -> tuple:
        return tuple(order[a].index(v) if v in order[a] else str(v)
                     for a, v in zip(axes, values, strict=True))

    groups: dict[tuple, list[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault(tuple(trial.params.get(a) for a in axes), []).append(trial)
    cells = [Cell(values, group, [summarize(t) for t in group])
             for values, group in sorted(groups.items(), key=lambda kv: sort_key(kv[0]))]
    return Sweep(path, plan, axes, trials, cells)


def _cell_note(sweep: Sweep, cell: Cell) -> str:
    if not set(NAMED_AXES) <= set(sweep.axes):
        return ""
    key = tuple(cell.values[sweep.axes.index(a)] for a in NAMED_AXES)
    return NAMED_CELLS.get(key, "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def cell_table(sweep: Sweep) -> list[str]:
    header = [*sweep.axes, "seeds", *(title for _, title in CELL_METRICS), "verdicts", "note"]
    rows = []
    for cell in sweep.cells:
        counts = cell.verdicts()
        verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        rows.append([*map(str, cell.values), str(len(cell.trials)),
                     *(cell.estimate(m).format() for m, _ in CELL_METRICS), verdicts,
                     _cell_note(sweep, cell)])
    return _table(header, rows)


def main_effect_table(sweep: Sweep) -> list[str]:
    rows = []
    final_ev = [summarize(t)["final_ev"] for t in sweep.trials]
    for axis in sweep.axes:
        levels = [t.params.get(axis) for t in sweep.trials]
        distinct = list(dict.fromkeys(levels))
        if sweep.plan:
            distinct.sort(key=lambda v: sweep.plan.axes[axis].index(v)
                          if v in sweep.plan.axes[axis] else len(distinct))
        if len(distinct) < 2:
            continue
        ordered = sorted(range(len(levels)), key=lambda i: distinct.index(levels[i]))
        effects = main_effects([levels[i] for i in ordered], [final_ev[i] for i in ordered])
        for level, estimate in effects.items():
            rows.append([axis, f"{level} vs {distinct[0]}", estimate.format("+.3g")])
    if not rows:
        return ["(one cell only: no axis to compare)"]
    return _table(["axis", "levels", "difference of mean final EV [95% CI]"], rows)


def _reference_knobs(sweep: Sweep) -> dict[str, Any] | None:
    if sweep.plan is None:
        return None
    import envs

    knobs = dict(sweep.plan.base)
    return knobs if knobs.get("env") == envs.ENV_ID else None


def reference_accuracies(sweep: Sweep, episodes: int = REFERENCE_EPISODES
                         ) -> dict[str, list[float]] | None:
    """Final episode accuracy of the heuristic and WAIT-only policies on the sweep's task,
    ``episodes`` seeds each; cached in the experiment folder (keyed by the env settings)."""
    knobs = _reference_knobs(sweep)
    if knobs is None or episodes < 1:
        return None
    from esper_rllib.config import env_config

    # The references are cheap baselines: the host trains wherever a GPU is, else on CPU.
    kwargs = {**env_config(knobs), "device": "auto"}
    seeds = [int(knobs[SEED]) + i for i in range(episodes)]
    key = json.dumps({"env": kwargs, "seeds": seeds}, sort_keys=True, default=str)
    cache = sweep.path / REFERENCE_FILE
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["accuracy"]
    import gymnasium as gym

    from envs.heuristic import HeuristicPolicy, WaitPolicy, run_episode

    env = gym.make(f"envs:{knobs['env']}", **kwargs)
    try:
        accuracy = {name: [float(run_episode(env, policy(), seed)["val_acc"]) for seed in seeds]
                    for name, policy in (("heuristic", HeuristicPolicy),
                                         ("WAIT-only", WaitPolicy))}
    finally:
        env.close()
    cache.write_text(json.dumps({"key": key, "accuracy": accuracy}, indent=2))
    return accuracy


def plot_cells(sweep: Sweep, out_dir: Path) -> list[Path]:
    """One PNG per metric: its value against iteration, one line per cell (mean over seeds)
    with a band from the lowest to the highest seed."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, title in PLOT_METRICS:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for cell in sweep.cells:
            n = max(len(t.iterations) for t in cell.trials)
            if not n:
                continue
            grid = np.full((len(cell.trials), n), np.nan)
            for row, trial in enumerate(cell.trials):
                values = trial.series(metric)
                grid[row, :len(values)] = values
            iterations = np.arange(1, n + 1)
            with warnings.catch_warnings():  # all-NaN columns (a metric not reported yet)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(grid, axis=0)
                low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
            (line,) = ax.plot(iterations, mean, marker="o", ms=3, label=cell.label(sweep.axes))
            ax.fill_between(iterations, low, high, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("iteration")
        ax.set_ylabel(title)
        ax.set_title(f"{title}: seed mean, band = min..max over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _reference_lines(accuracy: Mapping[str, list[float]] | None) -> list[str]:
    if accuracy is None:
        return ["(not run: the sweep is not on the real env, or references were turned off)"]
    rows = [[name, bootstrap_iqm(values).format(".4g"), ", ".join(f"{v:.2f}" for v in values)]
            for name, values in accuracy.items()]
    return _table(["policy", "final episode accuracy % (IQM [95% CI])", "per seed"], rows)


def render(sweep: Sweep, accuracy: Mapping[str, list[float]] | None,
           plots: Sequence[Path]) -> str:
    plan = sweep.plan
    iterations = max((t.iterations[-1] for t in sweep.trials if t.iterations), default=0)
    seeds = sorted({t.params.get(SEED) for t in sweep.trials}, key=str)
    title = f"sweep `{plan.sweep}`, profile `{plan.profile}`" if plan else sweep.path.name
    lines = [
        f"# Ablation report: {title}",
        "",
        f"Experiment folder: `{sweep.path}`; {len(sweep.trials)} trials in "
        f"{len(sweep.cells)} cells; seeds {', '.join(map(str, seeds))}; up to {iterations} "
        "iterations.",
        "",
        "## Cells",
        "",
        "Interquartile mean over seeds with a 95% bootstrap interval (n=1: a single seed, no "
        "interval). Final EV is the collapse monitor's trailing-window EV at the last "
        "iteration; verdicts use the seed document's thresholds (failure EV < 0 after "
        "iteration 5, weak 0..0.2, strong > 0.2).",
        "",
        *cell_table(sweep),
        "",
        "## Main effects on final EV",
        "",
        "Mean final EV at a level minus the mean at the axis's first level, over all trials "
        "(the other axes averaged over); 95% bootstrap interval.",
        "",
        *main_effect_table(sweep),
        "",
        "## Reference policies",
        "",
        *_reference_lines(accuracy),
        "",
        "## Plots",
        "",
        *(f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots),
        "",
    ]
    return "\n".join(lines)


def write_report(experiment_dir: str | Path,
                 reference_episodes: int = REFERENCE_EPISODES) -> list[Path]:
    """Write report.md and plots/*.png into the experiment folder; returns the written files."""
    sweep = load_sweep(experiment_dir)
    accuracy = reference_accuracies(sweep, reference_episodes)
    plots = plot_cells(sweep, sweep.path / PLOTS_DIR)
    report = sweep.path / REPORT_FILE
    report.write_text(render(sweep, accuracy, plots))
    written = [report, *plots]
    if accuracy is not None:
        written.append(sweep.path / REFERENCE_FILE)
    return written
