"""The statistics of a sweep's cells and effects, computed once (tables and plots read them):
IQM with a 95% stratified-bootstrap interval per cell and metric, the main effect of each axis,
the probability that the fix and the best cell beat the baseline.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from esper_rllib.analysis.stats import (
    N_BOOTSTRAP,
    Estimate,
    bootstrap_iqms,
    main_effects,
    probability_of_improvement,
)
from esper_rllib.analysis.sweep import (
    BROKEN_RUN,
    NAMED_AXES,
    NAMED_CELLS,
    SEED_FIX,
    Cell,
    Sweep,
    ceiling_for,
    named_cell,
)
from esper_rllib.ppo.metric_names import EV_RETURN
from tuning.results import summarize

# (summary metric, column title): the cell table's columns, in tuning.results.SUMMARY_METRICS'
# order.
CELL_METRICS = (
    ("initial_value_loss", "initial value loss"),
    ("ev_iter5", "EV @ iter 5"),
    ("best_ev", "best EV"),
    ("final_ev", "final EV (trailing)"),
    ("final_ev_return", "final EV vs return-to-go"),
    ("median_clip_ratio", "median clip ratio"),
    ("final_q_spread", "final Q-spread"),
    ("median_kl", "median KL"),
    ("final_accuracy", "final accuracy %"),
)


# The outcomes the main effects and the cell comparisons are judged on: the online EV (against
# the critic's own targets), the EV against the return the env paid where the runs logged it
# (a critic can agree with its own targets and drift off the return), and final accuracy.
OUTCOMES = (("final_ev", "final EV"), ("final_ev_return", "final EV vs return-to-go"),
            ("final_accuracy", "final accuracy"))


def outcomes_of(sweep: Sweep) -> tuple[tuple[str, str], ...]:
    """``OUTCOMES`` less the EV against the return-to-go where no trial logged it."""
    return tuple(o for o in OUTCOMES
                 if o[0] != "final_ev_return" or sweep.reports(EV_RETURN))


BEST_CELL = "the best final EV"


BASELINE_CELL = "the baseline"  # a sweep without the broken run compares with its first cell


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
    outcomes: tuple[tuple[str, str], ...] = OUTCOMES  # (summary metric, title): outcomes_of

    def best(self, sweep: Sweep, among: Sequence[int] | None = None) -> Cell:
        return _best(sweep, self.estimates, among)

    def final_ev(self, sweep: Sweep, cell: Cell) -> Estimate:
        return self.estimates[sweep.cells.index(cell)]["final_ev"]


def _best(sweep: Sweep, estimates: Sequence[Mapping[str, Estimate]],
          among: Sequence[int] | None = None) -> Cell:
    """The cell with the highest IQM final EV (the first one on a tie), of the cells at the
    indices ``among`` (default: every cell)."""
    def key(i: int) -> float:
        value = estimates[i]["final_ev"].value
        return -math.inf if math.isnan(value) else value
    return sweep.cells[max(range(len(sweep.cells)) if among is None else among, key=key)]


def _levels(sweep: Sweep, axis: str) -> list[Any]:
    """The axis's levels present in the trials, in the plan's order (else first seen)."""
    distinct = list(dict.fromkeys(t.params.get(axis) for t in sweep.trials))
    if sweep.plan:
        order = sweep.plan.axes[axis]
        distinct.sort(key=lambda v: order.index(v) if v in order else len(order))
    return distinct


def axis_effects(sweep: Sweep, reps: int = N_BOOTSTRAP,
                 outcomes: Sequence[tuple[str, str]] = OUTCOMES) -> list[Effect]:
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
                      for metric, _ in outcomes}
        effects += [Effect(axis, level, distinct[0], {m: by_outcome[m][level] for m in by_outcome})
                    for level in distinct[1:]]
    return effects


def _baseline(sweep: Sweep, best: Cell) -> tuple[Cell | None, str, list[tuple[str, Cell]]]:
    """What the comparisons are against, a line saying so, and the (name, cell) contenders."""
    if len(sweep.cells) < 2:
        return None, "One cell only: nothing to compare.", []
    broken, fix = named_cell(sweep, BROKEN_RUN), named_cell(sweep, SEED_FIX)
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
    outcomes = outcomes_of(sweep)
    comparisons = [Comparison(name, cell, {m: probability_of_improvement(
        cell.scores(m), baseline.scores(m), reps) for m, _ in outcomes})
        for name, cell in contenders if baseline is not None]
    return Analysis(estimates, axis_effects(sweep, reps, outcomes), baseline_note, comparisons,
                    *ceiling_for(sweep), reps, baseline, outcomes)


def cell_note(sweep: Sweep, cell: Cell, analysis: Analysis) -> str:
    """The seed document's name of the cell, and whether it has the best final EV."""
    notes = [name for knobs, name in NAMED_CELLS.items() if named_cell(sweep, knobs) is cell]
    if cell is analysis.baseline and not notes:
        notes.append(BASELINE_CELL)
    if len(sweep.cells) > 1 and analysis.best(sweep) is cell:
        notes.append(BEST_CELL)
    return "; ".join(notes)
