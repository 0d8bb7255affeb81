"""The ablation report (experiments.md section 4): ``report.md`` plus PNG plots, from a sweep's
experiment folder.

Per cell (the swept axes but the seed), over seeds: IQM and 95% stratified-bootstrap interval of
each summary metric (rliable), verdict counts, final EV against the EV ceiling that `esper-rllib
signal` measured; the probability that the seed document's fix and the best cell beat the broken
run; the main effect of each axis on final EV and final accuracy; heuristic and WAIT-only episode
accuracy as reference rows; small multiples of EV, value loss and clip ratio against iteration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib.metric_names import VERDICT, VERDICTS
from esper_rllib.report_plots import plot_report
from esper_rllib.stats import (
    N_BOOTSTRAP,
    Estimate,
    bootstrap_iqm,
    bootstrap_iqms,
    main_effects,
    probability_of_improvement,
)
from tuning.plan import SEED, SweepPlan
from tuning.results import TrialRecord, load_experiment, summarize

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
REFERENCE_FILE = "reference.json"
REFERENCE_EPISODES = 2
UNDETERMINED = "undetermined"
SIGNAL_FILE = "signal.json"
CEILING_POLICY = "random"

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
# The outcomes the main effects and the cell comparisons are judged on.
OUTCOMES = (("final_ev", "final EV"), ("final_accuracy", "final accuracy"))
# The seed document's two runs: (gain, depth, value_coef) -> name.
NAMED_AXES = ("value_head_gain", "value_head_depth", "value_coef")
BROKEN_RUN = (1.0, 2, 0.5)
SEED_FIX = (0.01, 4, 1.0)
NAMED_CELLS = {BROKEN_RUN: "the broken run", SEED_FIX: "the seed document's fix"}
BEST_CELL = "the best final EV"


@dataclass
class Cell:
    values: tuple  # one value per cell axis
    trials: list[TrialRecord]
    summaries: list[dict[str, Any]]

    def label(self, axes: Sequence[str]) -> str:
        return ", ".join(f"{a}={v}" for a, v in zip(axes, self.values, strict=True)) or "all"

    def knob(self, name: str) -> Any:
        """The cell's value of any knob, swept or fixed (its trials differ only in the seed)."""
        return self.trials[0].params.get(name)

    def scores(self, metric: str) -> list[float]:
        return [s[metric] for s in self.summaries]

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


def _check(path: Path, field: str, value: Any, allowed: str, ok: bool) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{path}: {field}: {value!r}; allowed: {allowed}")


def load_ev_ceiling(experiment_dir: str | Path, policy: str = CEILING_POLICY
                    ) -> dict[str, Any] | None:
    """The EV ceiling under ``policy`` from the ``signal.json`` that `esper-rllib signal` wrote in
    the experiment folder or its parent: {policy, estimate, low, high, states, continuations,
    profile, reward, max_epochs, path}; estimate, low and high are NaN when the audit measured
    none under ``policy`` (--ev-states 0, or returns without variance). None when there is no
    signal.json; a ValueError naming the file and the field when it is malformed."""
    folder = Path(experiment_dir)
    path = next((d / SIGNAL_FILE for d in (folder, folder.parent) if (d / SIGNAL_FILE).is_file()),
                None)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta: missing; expected the audit's profile, reward and "
                         "max_epochs")
    fields: dict[str, Any] = {}
    for key, kind in (("profile", str), ("reward", str), ("max_epochs", int)):
        _check(path, f"meta.{key}", meta.get(key), "a string" if kind is str else "an int",
                isinstance(meta.get(key), kind))
        fields[key] = meta[key]
    ceilings = data.get("ev_ceiling", {})
    entry = ceilings.get(policy, {}) if isinstance(ceilings, dict) else None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: ev_ceiling: expected an object of policy -> {{estimate, low, "
                         "high, states, continuations}")
    for key in ("estimate", "low", "high"):  # null: the audit's NaN
        value = entry.get(key)
        _check(path, f"ev_ceiling.{policy}.{key}", value, "a finite number or null",
                value is None or (isinstance(value, int | float) and math.isfinite(value)))
        fields[key] = math.nan if value is None else float(value)
    for key in ("states", "continuations"):
        value = entry.get(key, 0)
        _check(path, f"ev_ceiling.{policy}.{key}", value, "an int >= 0",
                isinstance(value, int) and value >= 0)
        fields[key] = value
    return {"policy": policy, **fields, "path": path}


# The knobs a sweep's trials and the audit must share for its ceiling to apply (with the profile).
CEILING_KNOBS = ("reward", "max_epochs")


def _signal_hint(sweep: Sweep) -> str:
    profile = sweep.plan.profile if sweep.plan else "PROFILE"
    knobs = []
    for knob in CEILING_KNOBS:
        values = {str(t.params.get(knob)) for t in sweep.trials}
        knobs.append(f"--set {knob}={values.pop() if len(values) == 1 else knob.upper()}")
    return f"`esper-rllib signal --profile {profile} {' '.join(knobs)} --out {sweep.path}`"


def ceiling_for(sweep: Sweep) -> tuple[dict[str, Any] | None, str]:
    """The EV ceiling that applies to this sweep, or None with a one-line reason."""
    ceiling = load_ev_ceiling(sweep.path)
    if ceiling is None:
        return None, (f"No EV ceiling: no {SIGNAL_FILE} in or beside the experiment folder. "
                      f"Measure one with {_signal_hint(sweep)}.")
    ours = {"profile": {sweep.plan.profile if sweep.plan else ceiling["profile"]},
            **{k: {t.params.get(k) for t in sweep.trials} for k in CEILING_KNOBS}}
    if any(values != {ceiling[k]} for k, values in ours.items()):
        theirs = ", ".join(f"{k} {ceiling[k]}" for k in ours)
        mine = ", ".join(f"{k} {'/'.join(sorted(map(str, v)))}" for k, v in ours.items())
        return None, (f"No EV ceiling: `{ceiling['path']}` was measured with {theirs}; this "
                      f"sweep runs {mine}. Measure one with {_signal_hint(sweep)}.")
    if math.isnan(ceiling["estimate"]):
        return None, (f"No EV ceiling: `{ceiling['path']}` has none under the "
                      f"{ceiling['policy']} policy (measured with --ev-states 0, or its returns "
                      "did not vary).")
    return ceiling, ""


def _named_cell(sweep: Sweep, knobs: tuple) -> Cell | None:
    """The one cell with these (gain, depth, value_coef); None when none or several have them."""
    matches = [c for c in sweep.cells if tuple(c.knob(a) for a in NAMED_AXES) == knobs]
    return matches[0] if len(matches) == 1 else None


@dataclass
class Effect:
    """One level of one axis against the axis's first level, on each outcome."""

    axis: str
    level: Any
    first: Any
    estimates: dict[str, Estimate]  # outcome metric -> difference of means


@dataclass
class Comparison:
    name: str
    cell: Cell
    estimates: dict[str, Estimate]  # outcome metric -> P(cell beats the baseline)


@dataclass
class Analysis:
    """Every statistic the report shows, computed once (tables and plots read it)."""

    estimates: list[dict[str, Estimate]]  # per cell, in sweep.cells order: metric -> IQM
    effects: list[Effect]
    baseline_note: str  # what the comparisons are against, or why there are none
    comparisons: list[Comparison]
    ceiling: dict[str, Any] | None
    ceiling_note: str  # why no ceiling is shown ("" when one is)
    reps: int

    def best(self, sweep: Sweep) -> Cell:
        return _best(sweep, self.estimates)

    def final_ev(self, sweep: Sweep, cell: Cell) -> Estimate:
        return self.estimates[sweep.cells.index(cell)]["final_ev"]


def _best(sweep: Sweep, estimates: Sequence[Mapping[str, Estimate]]) -> Cell:
    """The cell with the highest IQM final EV (the first one on a tie)."""
    def key(i: int) -> float:
        value = estimates[i]["final_ev"].value
        return -math.inf if math.isnan(value) else value
    return sweep.cells[max(range(len(sweep.cells)), key=key)]


def _levels(sweep: Sweep, axis: str) -> list[Any]:
    """The axis's levels present in the trials, in the plan's order (else first seen)."""
    distinct = list(dict.fromkeys(t.params.get(axis) for t in sweep.trials))
    if sweep.plan:
        order = sweep.plan.axes[axis]
        distinct.sort(key=lambda v: order.index(v) if v in order else len(order))
    return distinct


def axis_effects(sweep: Sweep, reps: int = N_BOOTSTRAP) -> list[Effect]:
    summaries = [summarize(t) for t in sweep.trials]
    effects = []
    for axis in sweep.axes:
        distinct = _levels(sweep, axis)
        if len(distinct) < 2:
            continue
        ordered = sorted(range(len(sweep.trials)),
                         key=lambda i: distinct.index(sweep.trials[i].params.get(axis)))
        levels = [sweep.trials[i].params.get(axis) for i in ordered]
        by_outcome = {metric: main_effects(levels, [summaries[i][metric] for i in ordered], reps)
                      for metric, _ in OUTCOMES}
        effects += [Effect(axis, level, distinct[0], {m: by_outcome[m][level] for m in by_outcome})
                    for level in distinct[1:]]
    return effects


def _baseline(sweep: Sweep, best: Cell) -> tuple[Cell | None, str, list[tuple[str, Cell]]]:
    """What the comparisons are against, a line saying so, and the (name, cell) contenders."""
    if len(sweep.cells) < 2:
        return None, "One cell only: nothing to compare.", []
    broken, fix = _named_cell(sweep, BROKEN_RUN), _named_cell(sweep, SEED_FIX)
    named = ", ".join(f"{a} {v}" for a, v in zip(NAMED_AXES, BROKEN_RUN, strict=True))
    if broken is not None:
        baseline = broken
        note = f"Against the broken run ({named})."
    else:
        baseline = sweep.cells[0]
        has_fix = tuple(baseline.knob(a) for a in NAMED_AXES) == SEED_FIX
        note = (f"This sweep has no broken run ({named}): the baseline is its first cell, every "
                f"axis at its first value ({baseline.label(sweep.axes)})"
                + (", with the seed document's fix's value head." if has_fix else "."))
    contenders = [] if fix is None or fix is baseline else [(NAMED_CELLS[SEED_FIX], fix)]
    if best is baseline:
        note += " The baseline has the best final EV itself."
    elif best is fix:
        contenders = [(f"{NAMED_CELLS[SEED_FIX]}, {BEST_CELL}", fix)]
    else:
        contenders.append((f"the cell with {BEST_CELL}", best))
    return baseline, note, contenders


def analyse(sweep: Sweep, reps: int = N_BOOTSTRAP) -> Analysis:
    """All of the report's statistics (seeded: the same folder gives the same numbers)."""
    estimates = [dict(zip((m for m, _ in CELL_METRICS),
                          bootstrap_iqms([cell.scores(m) for m, _ in CELL_METRICS], reps),
                          strict=True))
                 for cell in sweep.cells]
    baseline, baseline_note, contenders = _baseline(sweep, _best(sweep, estimates))
    comparisons = [Comparison(name, cell, {m: probability_of_improvement(
        cell.scores(m), baseline.scores(m), reps) for m, _ in OUTCOMES})
        for name, cell in contenders if baseline is not None]
    return Analysis(estimates, axis_effects(sweep, reps), baseline_note, comparisons,
                    *ceiling_for(sweep), reps)


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


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def cell_note(sweep: Sweep, cell: Cell, analysis: Analysis) -> str:
    """The seed document's name of the cell, and whether it has the best final EV."""
    notes = [name for knobs, name in NAMED_CELLS.items() if _named_cell(sweep, knobs) is cell]
    if len(sweep.cells) > 1 and analysis.best(sweep) is cell:
        notes.append(BEST_CELL)
    return "; ".join(notes)


def cell_table(sweep: Sweep, analysis: Analysis) -> list[str]:
    header = [*sweep.axes, "seeds", *(title for _, title in CELL_METRICS), "verdicts", "note"]
    rows = []
    for cell, estimates in zip(sweep.cells, analysis.estimates, strict=True):
        counts = cell.verdicts()
        verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        rows.append([*map(str, cell.values), str(len(cell.trials)),
                     *(estimates[m].format() for m, _ in CELL_METRICS), verdicts,
                     cell_note(sweep, cell, analysis)])
    return _table(header, rows)


def ceiling_lines(sweep: Sweep, analysis: Analysis) -> list[str]:
    ceiling = analysis.ceiling
    if ceiling is None:
        return [analysis.ceiling_note]
    possible = f"{ceiling['estimate']:.3g} [{ceiling['low']:.3g}, {ceiling['high']:.3g}]"
    what = f"EV ceiling under the {ceiling['policy']} policy"
    best = analysis.best(sweep)
    best_ev = analysis.final_ev(sweep, best)

    def fraction(value: float) -> str:
        return f"{value / ceiling['estimate']:.1%}" if ceiling["estimate"] > 0 else "n/a"

    rows = [[*map(str, cell.values), analysis.final_ev(sweep, cell).format(),
             fraction(analysis.final_ev(sweep, cell).value)] for cell in sweep.cells]
    return [
        f"The {what}: {possible}, from {ceiling['states']} states x {ceiling['continuations']} "
        f"continuations (`{ceiling['path']}`, reward {ceiling['reward']}, profile "
        f"{ceiling['profile']}); a trained policy's returns may be more or less predictable "
        f"than the {ceiling['policy']} policy's. The cell with {BEST_CELL} "
        f"({best.label(sweep.axes)}): EV {best_ev.value:.3g} of a possible {possible} ({what}), "
        f"{fraction(best_ev.value)} of it.",
        "",
        *_table([*sweep.axes, f"final EV (IQM [95% CI]) of a possible {possible}",
                 "fraction of the ceiling"], rows),
    ]


def comparison_lines(sweep: Sweep, analysis: Analysis) -> list[str]:
    lines = [analysis.baseline_note]
    if analysis.comparisons:
        rows = [[f"{c.name} ({c.cell.label(sweep.axes)})",
                 *(c.estimates[m].format(".2f") for m, _ in OUTCOMES)]
                for c in analysis.comparisons]
        lines += ["", *_table(["cell", *(f"P({title} higher) [95% CI]" for _, title in OUTCOMES)],
                              rows),
                  "", "P(X higher) is the chance that a seed of the cell ends above a seed of the "
                  "baseline (ties count half): 0.5 = no difference, 1 = every seed above. The "
                  "best cell is picked on the same final EVs, so its probability on final EV is "
                  "optimistic."]
    return lines


def main_effect_table(sweep: Sweep, analysis: Analysis) -> list[str]:
    if not analysis.effects:
        return ["(one cell only: no axis to compare)"]
    rows = [[e.axis, f"{e.level} vs {e.first}", *(e.estimates[m].format("+.3g") for m, _ in
                                                   OUTCOMES)]
            for e in analysis.effects]
    return _table(["axis", "levels",
                   *(f"difference of mean {title} [95% CI]" for _, title in OUTCOMES)], rows)


def _reference_lines(accuracy: Mapping[str, list[float]] | None, reps: int) -> list[str]:
    if accuracy is None:
        return ["(not run: the sweep is not on the real env, or references were turned off)"]
    rows = [[name, bootstrap_iqm(values, reps).format(".4g"),
             ", ".join(f"{v:.2f}" for v in values)] for name, values in accuracy.items()]
    return _table(["policy", "final episode accuracy % (IQM [95% CI])", "per seed"], rows)


def render(sweep: Sweep, analysis: Analysis, accuracy: Mapping[str, list[float]] | None,
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
        "iterations. Statistics from rliable (Agarwal et al., NeurIPS 2021): interquartile mean "
        f"(IQM) over seeds, 95% stratified-bootstrap intervals ({analysis.reps} replicates, "
        "seeded), probability of improvement.",
        "",
        "## Cells",
        "",
        "IQM over seeds with a 95% interval (n=1: a single seed, no interval). Final EV is the "
        "collapse monitor's trailing-window EV at the last iteration; verdicts use the seed "
        "document's thresholds (failure EV < 0 after iteration 5, weak 0..0.2, strong > 0.2).",
        "",
        *cell_table(sweep, analysis),
        "",
        "## Final EV against the EV ceiling",
        "",
        *ceiling_lines(sweep, analysis),
        "",
        "## Does a cell beat the baseline?",
        "",
        *comparison_lines(sweep, analysis),
        "",
        "## Main effects on final EV and final accuracy",
        "",
        "Mean at a level minus the mean at the axis's first level, over all trials (the other "
        "axes averaged over); 95% stratified-bootstrap interval.",
        "",
        *main_effect_table(sweep, analysis),
        "",
        "## Reference policies",
        "",
        *_reference_lines(accuracy, analysis.reps),
        "",
        "## Plots",
        "",
        *(f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots),
        "",
    ]
    return "\n".join(lines)


def write_report(experiment_dir: str | Path, reference_episodes: int = REFERENCE_EPISODES,
                 reps: int = N_BOOTSTRAP) -> list[Path]:
    """Write report.md and plots/*.png into the experiment folder; returns the written files."""
    sweep = load_sweep(experiment_dir)
    analysis = analyse(sweep, reps)
    accuracy = reference_accuracies(sweep, reference_episodes)
    labels = [cell.label(sweep.axes) + (f" ({note})" if note else "")
              for cell in sweep.cells for note in [cell_note(sweep, cell, analysis)]]
    plots = plot_report(sweep, analysis, labels, OUTCOMES, sweep.path / PLOTS_DIR)
    report = sweep.path / REPORT_FILE
    report.write_text(render(sweep, analysis, accuracy, plots))
    written = [report, *plots]
    if accuracy is not None:
        written.append(sweep.path / REFERENCE_FILE)
    return written
