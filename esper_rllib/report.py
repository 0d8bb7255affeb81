"""The ablation report (experiments.md section 4): ``report.md`` plus PNG plots, from a sweep's
experiment folder.

Per cell (the swept axes but the seed), over seeds: IQM and 95% stratified-bootstrap interval of
each summary metric (rliable), verdict counts, final EV against the EV ceiling that `esper-rllib
signal` measured; the probability that the seed document's fix and the best cell beat the broken
run; the main effect of each axis on final EV and final accuracy; the final checkpoints of the
best, broken and fixed cells evaluated next to WAIT, the heuristic and the oracle (`esper-rllib
evaluate`); heuristic and WAIT-only episode accuracy as reference rows; small multiples of EV, value
loss and clip ratio against iteration. With ``signal_seeds`` it measures the EV ceiling of the
sweep's own env when no signal.json applies (`esper-rllib signal`).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.commands.evaluate import (
    EVALUATION_JSON,
    EVALUATION_MD,
    HELD_OUT_SEED,
    TRAINED,
    ScriptedEpisodes,
    default_out,
    evaluate,
    write_evaluation,
)
from esper_rllib.commands.signal import SIGNAL_JSON, SIGNAL_MD
from esper_rllib.config import ConfigError
from esper_rllib.metric_names import VERDICT, VERDICTS
from esper_rllib.report_plots import plot_report
from esper_rllib.stats import (
    N_BOOTSTRAP,
    Estimate,
    bootstrap_iqm,
    bootstrap_iqms,
    crossed_mean,
    main_effects,
    probability_of_improvement,
)
from tuning.naming import label
from tuning.plan import SEED, SweepPlan
from tuning.results import TrialRecord, load_experiment, summarize

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
REFERENCE_FILE = "reference.json"
REFERENCE_EPISODES = 2
UNDETERMINED = "undetermined"
CEILING_POLICY = "random"
SIGNAL_SEEDS_HINT = 6  # the episodes per policy the notes suggest (signal's default)
EVALUATE_EPISODES = 4  # per trial and policy; each costs max_epochs env steps
CHECKPOINT_PREFIX = "checkpoint_"
# The scripted policies shown next to the trained ones, with their row names.
EVALUATION_REFERENCES = (("wait", "WAIT"), ("heuristic", "heuristic"), ("oracle", "oracle"))

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
BASELINE_CELL = "the baseline"  # a sweep without the broken run compares with its first cell


@dataclass
class Cell:
    values: tuple  # one value per cell axis
    trials: list[TrialRecord]
    summaries: list[dict[str, Any]]

    def label(self, axes: Sequence[str]) -> str:
        # The cell part of its trials' names (folders, console, TensorBoard runs).
        return label(dict(zip(axes, self.values, strict=True))) or "all"

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
    path = next((d / SIGNAL_JSON for d in (folder, folder.parent) if (d / SIGNAL_JSON).is_file()),
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
    return (f"`esper-rllib signal --profile {profile} {' '.join(knobs)} --out {sweep.path}`, "
            f"or let the report measure it: `esper-rllib report {sweep.path} --signal-seeds "
            f"{SIGNAL_SEEDS_HINT}`")


def _mismatch(sweep: Sweep, ceiling: dict[str, Any]) -> str:
    """What differs between the audit and this sweep's profile, reward and episode length
    ("" when nothing does: the ceiling applies)."""
    ours = {"profile": {sweep.plan.profile if sweep.plan else ceiling["profile"]},
            **{k: {t.params.get(k) for t in sweep.trials} for k in CEILING_KNOBS}}
    if all(values == {ceiling[k]} for k, values in ours.items()):
        return ""
    theirs = ", ".join(f"{k} {ceiling[k]}" for k in ours)
    mine = ", ".join(f"{k} {'/'.join(sorted(map(str, v)))}" for k, v in ours.items())
    return f"`{ceiling['path']}` was measured with {theirs}; this sweep runs {mine}"


def ceiling_for(sweep: Sweep) -> tuple[dict[str, Any] | None, str]:
    """The EV ceiling that applies to this sweep, or None with a one-line reason."""
    ceiling = load_ev_ceiling(sweep.path)
    if ceiling is None:
        return None, (f"No EV ceiling: no {SIGNAL_JSON} in or beside the experiment folder. "
                      f"Measure one with {_signal_hint(sweep)}.")
    mismatch = _mismatch(sweep, ceiling)
    if mismatch:
        return None, f"No EV ceiling: {mismatch}. Measure one with {_signal_hint(sweep)}."
    if math.isnan(ceiling["estimate"]):
        return None, (f"No EV ceiling: `{ceiling['path']}` has none under the "
                      f"{ceiling['policy']} policy (measured with --ev-states 0, or its returns "
                      "did not vary).")
    return ceiling, ""


def trial_knobs(plan: SweepPlan, params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved knobs a trial ran with: its params (the flat knobs and the axes) with the
    sweep's labels dropped and its derived knobs set, as the trial built them."""
    from esper_rllib.config import resolve_knobs

    return resolve_knobs(plan.profile, overrides=plan.cell_knobs(params))


def measure_signal(sweep: Sweep, seeds: int) -> list[Path]:
    """With ``seeds`` > 0 and no signal.json of this sweep's profile, reward and episode length
    in or beside the folder: `esper-rllib signal`'s audit of the sweep's env (``seeds`` episodes
    per policy, its other settings at their defaults), written into the folder. Returns the
    files written (none when nothing was measured)."""
    if seeds <= 0:
        return []
    found = load_ev_ceiling(sweep.path)
    if found is not None and not _mismatch(sweep, found):
        return []
    from esper_rllib.commands.signal import command_line, signal_audit, write_signal
    from esper_rllib.config import env_config

    if sweep.plan is None:
        raise ValueError(f"--signal-seeds: {sweep.path} has no sweep.json: the profile its "
                         "trials ran is unknown")
    knobs = [trial_knobs(sweep.plan, t.params) for t in sweep.trials]
    settings = {json.dumps(env_config(k), sort_keys=True, default=str) for k in knobs}
    if len(settings) > 1:
        raise ValueError(f"--signal-seeds: the trials run {len(settings)} different env "
                         "settings; one signal.json cannot serve them (run `esper-rllib signal` "
                         "per setting)")
    first = min(knobs, key=lambda k: k[SEED])  # the audit's env seeds count up from it
    result = signal_audit(first, profile=sweep.plan.profile, seeds=seeds)
    result["meta"]["command"] = command_line("report")
    write_signal(sweep.path, result)
    return [sweep.path / SIGNAL_JSON, sweep.path / SIGNAL_MD]


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
    baseline: Cell | None  # the broken run, else the sweep's first cell; None with one cell

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
                    *ceiling_for(sweep), reps, baseline)


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


def last_checkpoint(trial_dir: Path) -> Path | None:
    """The trial's checkpoint_NNNNNN folder with the highest number (None when it has none)."""
    numbered = [p for p in trial_dir.glob(f"{CHECKPOINT_PREFIX}*")
                if p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return max(numbered, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


@dataclass
class CellEvaluation:
    """One cell's final checkpoints evaluated (`esper-rllib evaluate`), one result per trial."""

    name: str  # what the report calls the cell (the broken run, the fix, the best final EV)
    cell: Cell
    results: list[dict[str, Any]]  # evaluation.json's content, per trial with a checkpoint
    skipped: list[str]  # "<trial>: why it has no evaluation"
    written: list[Path]  # evaluation files this report wrote (the others were cached)

    def accuracies(self, policy: str) -> np.ndarray:
        """Final accuracy per (trial, env seed) of ``policy`` in each trial's evaluation: the
        trained policy's, or a scripted one's as played beside it (the same in every trial when
        they were all evaluated on one machine with one code)."""
        return np.array([[e["final_acc"] for e in r["policies"][policy]["episodes"]]
                         for r in self.results])


def evaluated_cells(sweep: Sweep, analysis: Analysis) -> list[tuple[str, Cell]]:
    """(name, cell) of the baseline (the broken run, else the sweep's first cell), the seed
    document's fix and the cell with the best final EV, those present, each once."""
    chosen: list[Cell] = []
    for cell in (analysis.baseline, _named_cell(sweep, SEED_FIX), analysis.best(sweep)):
        if cell is not None and all(cell is not c for c in chosen):
            chosen.append(cell)
    return [(cell_note(sweep, cell, analysis) or "the only cell", cell) for cell in chosen]


def _cached_evaluation(out: Path, checkpoint: Path, seeds: list[int]) -> dict[str, Any] | None:
    """evaluation.json in ``out`` when it evaluated this checkpoint with sampled actions on
    these env seeds (as the report asks); else None."""
    try:
        result = json.loads((out / EVALUATION_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    meta = result.get("meta", {}) if isinstance(result, dict) else {}
    same = (Path(str(meta.get("checkpoint"))).name == checkpoint.name
            and meta.get("seeds") == seeds and meta.get("greedy") is False)
    return result if same else None


def evaluate_cells(sweep: Sweep, analysis: Analysis, episodes: int) -> list[CellEvaluation]:
    """Every trial of ``evaluated_cells`` evaluated at its last checkpoint on ``episodes``
    held-out env seeds with sampled actions, cached in <trial>/evaluation/ (as `esper-rllib
    evaluate CHECKPOINT` writes it). The scripted policies' episodes are played once for the
    experiment, not once per trial."""
    seeds = [HELD_OUT_SEED + i for i in range(episodes)]
    scripted = ScriptedEpisodes()
    evaluations = []
    for name, cell in evaluated_cells(sweep, analysis):
        evaluation = CellEvaluation(name, cell, [], [], [])
        for trial in cell.trials:
            checkpoint = last_checkpoint(trial.path)
            if checkpoint is None:
                evaluation.skipped.append(f"{trial.name}: no checkpoint")
                continue
            out = default_out(checkpoint)
            result = _cached_evaluation(out, checkpoint, seeds)
            if result is None:
                try:
                    result = evaluate(checkpoint, episodes=episodes, greedy=False,
                                      first_seed=HELD_OUT_SEED, scripted=scripted)
                except ConfigError as err:  # an incomplete checkpoint, a probe env
                    evaluation.skipped.append(f"{trial.name}: {err}")
                    continue
                result["meta"]["command"] = shlex.join(
                    ["esper-rllib", "evaluate", str(checkpoint), "--episodes", str(episodes)])
                write_evaluation(out, result)
                evaluation.written += [out / EVALUATION_JSON, out / EVALUATION_MD]
            evaluation.results.append(result)
        evaluations.append(evaluation)
    return evaluations


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def cell_note(sweep: Sweep, cell: Cell, analysis: Analysis) -> str:
    """The seed document's name of the cell, and whether it has the best final EV."""
    notes = [name for knobs, name in NAMED_CELLS.items() if _named_cell(sweep, knobs) is cell]
    if cell is analysis.baseline and not notes:
        notes.append(BASELINE_CELL)
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


def evaluation_lines(sweep: Sweep, evaluations: Sequence[CellEvaluation] | None,
                     reps: int) -> list[str]:
    if evaluations is None:
        return [f"Not run (--evaluate-episodes 0). `esper-rllib report {sweep.path} "
                f"--evaluate-episodes {EVALUATE_EPISODES}` evaluates the final checkpoints of "
                "the baseline (the broken run, else the first cell), the seed document's fix "
                "and the best cell."]
    done = [e for e in evaluations if e.results]
    skipped = [s for e in evaluations for s in e.skipped]
    lines = []
    if done:
        seeds = done[0].results[0]["meta"]["seeds"]
        lines += [
            f"Each trial's last checkpoint plays {len(seeds)} episodes with sampled actions on "
            f"held-out env seeds {seeds[0]}..{seeds[-1]} of the env it trained on (`esper-rllib "
            "evaluate`, cached in each trial's evaluation/ folder); WAIT, the heuristic and the "
            "oracle play the same seeds. Final accuracy %: mean over trials x env seeds; "
            "differences are paired by env seed. 95% intervals from a bootstrap that resamples "
            "trials and env seeds.",
            "",
            *_table(["policy", "episodes (trials x env seeds)", "final accuracy % [95% CI]",
                     "- WAIT [95% CI]", "- heuristic [95% CI]"],
                    _evaluation_rows(sweep, done, reps)),
        ]
        differing = _differing_references(done)
        if differing:
            lines += ["", "The scripted policies' episodes differ between these evaluations "
                      "(made on another machine or with other code: host training is not "
                      "bit-reproducible across CPUs) in " + ", ".join(differing) + ". Each "
                      "trained policy is paired with the scripted episodes of its own "
                      "evaluation; the WAIT, heuristic and oracle rows are those of the first "
                      "evaluation on each env."]
    else:
        lines.append("No trial of these cells could be evaluated.")
    if skipped:
        lines += ["", "Not evaluated: " + "; ".join(skipped) + "."]
    return lines


def _evaluation_rows(sweep: Sweep, done: Sequence[CellEvaluation], reps: int
                     ) -> list[list[str]]:
    """The trained rows of the cells, each group of cells on one env followed by the scripted
    policies' rows on that env."""
    groups: dict[str, list[CellEvaluation]] = {}
    for evaluation in done:
        env = _env_of(evaluation.results[0])
        groups.setdefault(env, []).append(evaluation)
    rows = []
    for group in groups.values():
        # Each trained trial is paired with the scripted episodes of its own evaluation (played on
        # the same machine); the scripted rows show the group's first evaluation.
        references = {policy: group[0].accuracies(policy)[:1]
                      for policy, _ in EVALUATION_REFERENCES}
        for evaluation in group:
            acc = evaluation.accuracies(TRAINED)
            paired = {policy: evaluation.accuracies(policy) for policy, _ in EVALUATION_REFERENCES}
            rows.append(_evaluation_row(
                f"trained: {evaluation.name} ({evaluation.cell.label(sweep.axes)})", TRAINED,
                acc, f"{acc.shape[0]} x {acc.shape[1]}", paired, reps))
        where = f" (env of {', '.join(e.name for e in group)})" if len(groups) > 1 else ""
        oracle = group[0].results[0]["meta"]["oracle"]
        for policy, title in EVALUATION_REFERENCES:
            name = f"{title} ({oracle})" if policy == "oracle" else title
            rows.append(_evaluation_row(name + where, policy, references[policy],
                                        str(references[policy].shape[1]), references, reps))
    return rows


def _env_of(result: dict[str, Any]) -> str:
    """The env an evaluation played, as a key: evaluations of one env share their references."""
    return json.dumps(result["meta"]["env_config"], sort_keys=True)


def _differing_references(done: Sequence[CellEvaluation]) -> list[str]:
    """Trials whose scripted policies' episodes differ from those of the first evaluation on
    the same env."""
    first: dict[str, dict[str, Any]] = {}
    differing = []
    for evaluation in done:
        for result in evaluation.results:
            env = _env_of(result)
            scripted = {p: result["policies"][p]["episodes"] for p, _ in EVALUATION_REFERENCES}
            if first.setdefault(env, scripted) != scripted:
                differing.append(Path(str(result["meta"]["checkpoint"])).parent.name)
    return differing


def _evaluation_row(title: str, policy: str, acc: np.ndarray, size: str,
                    references: Mapping[str, np.ndarray], reps: int) -> list[str]:
    """Accuracy and its paired differences against WAIT and the heuristic (blank against
    the policy itself)."""
    differences = [crossed_mean(acc - references[p], reps).format("+.2f") if p != policy else ""
                   for p in ("wait", "heuristic")]
    return [title, size, crossed_mean(acc, reps).format(".2f"), *differences]


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
           plots: Sequence[Path], evaluations: Sequence[CellEvaluation] | None = None) -> str:
    """report.md; ``evaluations`` None: none were run."""
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
        "## Trained policies against WAIT, the heuristic and the oracle",
        "",
        *evaluation_lines(sweep, evaluations, analysis.reps),
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


def check_counts(reference_episodes: int, evaluate_episodes: int, signal_seeds: int = 0) -> None:
    """ConfigError naming the flag when a count of the report's episodes is not allowed."""
    if reference_episodes < 0:
        raise ConfigError(f"--reference-episodes {reference_episodes}: allowed: >= 0")
    # evaluate and signal need two episodes per policy for a spread.
    for flag, value in (("--evaluate-episodes", evaluate_episodes),
                        ("--signal-seeds", signal_seeds)):
        if value < 0 or value == 1:
            raise ConfigError(f"{flag} {value}: allowed: 0 (off) or an int >= 2")


def write_report(experiment_dir: str | Path, reference_episodes: int = REFERENCE_EPISODES,
                 reps: int = N_BOOTSTRAP, evaluate_episodes: int = EVALUATE_EPISODES,
                 signal_seeds: int = 0) -> list[Path]:
    """Write report.md and plots/*.png into the experiment folder (and signal.json, signal.md
    with ``signal_seeds``, see ``measure_signal``; and the evaluations of ``evaluate_cells``
    with ``evaluate_episodes`` > 0); returns the written files, report.md first."""
    check_counts(reference_episodes, evaluate_episodes, signal_seeds)
    sweep = load_sweep(experiment_dir)
    measured = measure_signal(sweep, signal_seeds)
    analysis = analyse(sweep, reps)
    accuracy = reference_accuracies(sweep, reference_episodes)
    evaluations = evaluate_cells(sweep, analysis, evaluate_episodes) if evaluate_episodes \
        else None
    labels = [cell.label(sweep.axes) + (f" ({note})" if note else "")
              for cell in sweep.cells for note in [cell_note(sweep, cell, analysis)]]
    plots = plot_report(sweep, analysis, labels, OUTCOMES, sweep.path / PLOTS_DIR)
    report = sweep.path / REPORT_FILE
    report.write_text(render(sweep, analysis, accuracy, plots, evaluations))
    written = [report, *plots, *measured]
    if accuracy is not None:
        written.append(sweep.path / REFERENCE_FILE)
    return written + [p for e in evaluations or () for p in e.written]
