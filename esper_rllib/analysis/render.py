"""The ablation report: ``report.md`` plus PNG plots, from a sweep's
experiment folder.

Per cell (the swept axes but the seed), over seeds: IQM and 95% stratified-bootstrap interval of
each summary metric (rliable), verdict counts, final EV against the EV ceiling that `esper-rllib
signal` measured; the probability that the seed document's fix and the best cell beat the broken
run; the main effect of each axis on final EV and final accuracy; the final checkpoints of the
best, broken and fixed cells evaluated next to WAIT, the heuristic and the oracle (`esper-rllib
evaluate`); heuristic and WAIT-only episode accuracy as reference rows; small multiples of EV, value
loss and clip ratio against iteration. With ``signal_seeds`` it measures the EV ceiling of the
sweep's own env when no signal.json applies (`esper-rllib signal`).

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esper_rllib.analysis.cells import (
    BEST_CELL,
    CELL_METRICS,
    Analysis,
    analyse,
    cell_note,
)
from esper_rllib.analysis.defaults import EVALUATE_EPISODES, REFERENCE_EPISODES, check_counts
from esper_rllib.analysis.evaluation import (
    EVALUATION_REFERENCES,
    REFERENCE_FILE,
    TRAINED,
    CellEvaluation,
    evaluate_cells,
    reference_accuracies,
    sweep_evaluate_episodes,
)
from esper_rllib.analysis.outputs import markdown_table, write_atomic
from esper_rllib.analysis.plots import plot_report
from esper_rllib.analysis.stats import N_BOOTSTRAP, bootstrap_iqm, crossed_mean
from esper_rllib.analysis.sweep import Sweep, ceiling_applies, load_sweep, measure_signal
from esper_rllib.ppo.collapse import DEFAULT_WINDOW, VERDICT_ITERATIONS, WARMUP_ITERATIONS
from tuning.plan import SEED

REPORT_FILE = "report.md"


PLOTS_DIR = "plots"


def cell_table(sweep: Sweep, analysis: Analysis) -> list[str]:
    header = [*sweep.axes, "seeds", *(title for _, title in CELL_METRICS), "verdicts", "note"]
    rows = []
    for cell, estimates in zip(sweep.cells, analysis.estimates, strict=True):
        counts = cell.verdicts()
        verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        rows.append([*map(str, cell.values), str(len(cell.trials)),
                     *(estimates[m].format() for m, _ in CELL_METRICS), verdicts,
                     cell_note(sweep, cell, analysis)])
    return markdown_table(header, rows)


def ceiling_lines(sweep: Sweep, analysis: Analysis) -> list[str]:
    ceiling = analysis.ceiling
    if ceiling is None:
        return [analysis.ceiling_note]
    possible = f"{ceiling['estimate']:.3g} [{ceiling['low']:.3g}, {ceiling['high']:.3g}]"
    what = f"EV ceiling under the {ceiling['policy']} policy"
    shared = ceiling.get("shared_stream")
    beside = ("" if not shared else
              f"; the shared-stream figure, which credits a critic with knowing the env's future "
              f"random stream, is {shared['estimate']:.3g} [{shared['low']:.3g}, "
              f"{shared['high']:.3g}]")
    applies = [ceiling_applies(ceiling, i) for i in range(len(sweep.cells))]
    # The best final EV among the cells the ceiling applies to (every cell, usually).
    best = analysis.best(sweep, among=[i for i, a in enumerate(applies) if a])
    best_ev = analysis.final_ev(sweep, best)
    which = (f"The cell with {BEST_CELL}" if best is analysis.best(sweep)
             else "Of the cells it applies to, the one with the best final EV")

    def fraction(value: float, applies: bool) -> str:
        if not applies:
            return "n/a (another env)"
        if math.isnan(value) or ceiling["estimate"] <= 0:
            return "n/a"
        return f"{value / ceiling['estimate']:.1%}"

    # The ceiling is on the return-to-go's scale: final_ev_return is the like-for-like number.
    rows = [[*map(str, cell.values),
             *(part for metric in ("final_ev", "final_ev_return")
               for part in (estimates[metric].format(),
                            fraction(estimates[metric].value, applies_here)))]
            for cell, estimates, applies_here in zip(sweep.cells, analysis.estimates, applies,
                                                     strict=True)]
    return [
        *([analysis.ceiling_note, ""] if analysis.ceiling_note else []),
        f"The {what}: {possible}, from {ceiling['states']} states x {ceiling['continuations']} "
        f"continuations with the env's random stream drawn afresh, the Markov-state "
        f"ceiling{beside} (`{ceiling['path']}`, reward {ceiling['reward']}, profile "
        f"{ceiling['profile']}); a trained policy's returns may be more or less predictable "
        f"than the {ceiling['policy']} policy's. {which} "
        f"({best.label(sweep.axes)}): EV {best_ev.value:.3g} of a possible {possible} ({what}), "
        f"{fraction(best_ev.value, True)} of it.",
        "",
        *markdown_table([*sweep.axes, f"final EV (IQM [95% CI]) of a possible {possible}",
                         "fraction of the ceiling", "final EV vs return-to-go",
                         "fraction of the ceiling"], rows),
        "",
        "Final EV is against the GAE targets (the verdict's metric), which carry the critic's own "
        "values; the ceiling, like final EV vs return-to-go, is against the return the env pays "
        "(n/a for runs that did not log it).",
    ]


def comparison_lines(sweep: Sweep, analysis: Analysis) -> list[str]:
    lines = [analysis.baseline_note]
    if analysis.comparisons:
        rows = [[f"{c.name} ({c.cell.label(sweep.axes)})",
                 *(c.estimates[m].format(".2f") for m, _ in analysis.outcomes)]
                for c in analysis.comparisons]
        header = ["cell", *(f"P({title} higher) [95% CI]" for _, title in analysis.outcomes)]
        lines += ["", *markdown_table(header, rows),
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
            *markdown_table(["policy", "episodes (trials x env seeds)",
                             "final accuracy % [95% CI]", "- WAIT [95% CI]",
                             "- heuristic [95% CI]"], _evaluation_rows(sweep, done, reps)),
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
            label = evaluation.cell.label(sweep.axes)
            name = label if evaluation.name == label else f"{evaluation.name} ({label})"
            rows.append(_evaluation_row(
                f"trained: {name}", TRAINED,
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


def _listed(words: Sequence[str]) -> str:
    """"a, b and c"."""
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def main_effect_table(sweep: Sweep, analysis: Analysis) -> list[str]:
    if not analysis.effects:
        return ["(one cell only: no axis to compare)"]
    rows = [[e.axis, f"{e.level} vs {e.first}", *(e.estimates[m].format("+.3g") for m, _ in
                                                   analysis.outcomes)]
            for e in analysis.effects]
    return markdown_table(["axis", "levels",
                           *(f"difference of mean {title} [95% CI]"
                             for _, title in analysis.outcomes)],
                          rows)


def _reference_lines(accuracy: Mapping[str, list[float]] | None, reps: int) -> list[str]:
    if accuracy is None:
        return ["(not run: the sweep is not on the real env, or references were turned off)"]
    rows = [[name, bootstrap_iqm(values, reps).format(".4g"),
             ", ".join(f"{v:.2f}" for v in values)] for name, values in accuracy.items()]
    return markdown_table(["policy", "final episode accuracy % (IQM [95% CI])", "per seed"], rows)


def render(sweep: Sweep, analysis: Analysis, accuracy: Mapping[str, list[float]] | None,
           plots: Sequence[Path], evaluations: Sequence[CellEvaluation] | None = None) -> str:
    """report.md; ``evaluations`` None: none were run."""
    plan = sweep.plan
    iterations = max((t.iterations[-1] for t in sweep.trials if t.iterations), default=0)
    seeds = sorted({t.params.get(SEED) for t in sweep.trials}, key=str)
    # A folder without sweep.json is a `train` run (or a sweep from before sweep.json).
    title = (f"Ablation report: sweep `{plan.sweep}`, profile `{plan.profile}`" if plan
             else f"Run report: `{sweep.path.name}`")
    lines = [
        f"# {title}",
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
        "collapse monitor's trailing-window EV at the last iteration (the median of the EVs "
        f"after the {WARMUP_ITERATIONS} warm-up iterations, at most {DEFAULT_WINDOW}), or the "
        "last iteration's EV in a run too short for that window; verdicts use the seed "
        "document's thresholds (failure EV < 0, weak 0..0.2, strong > 0.2) and need "
        f"{VERDICT_ITERATIONS} iterations (before that: undetermined).",
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
        f"## Main effects on {_listed([title for _, title in analysis.outcomes])}",
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


def panel_labels(sweep: Sweep, analysis: Analysis) -> list[str]:
    """Each cell's plot panel title: what tells the cells apart (an axis with one value in every
    cell, as in a slice of a sweep or a fixed preset, is left out), and its note."""
    varying = [a for i, a in enumerate(sweep.axes) if len({c.values[i] for c in sweep.cells}) > 1]
    return [cell.label(sweep.axes, varying) + (f" ({note})" if note else "")
            for cell in sweep.cells for note in [cell_note(sweep, cell, analysis)]]


def write_report(experiment_dir: str | Path, reference_episodes: int = REFERENCE_EPISODES,
                 reps: int = N_BOOTSTRAP, evaluate_episodes: int = EVALUATE_EPISODES,
                 signal_seeds: int = 0) -> list[Path]:
    """Write report.md and plots/*.png into the experiment folder (and signal.json, signal.md
    with ``signal_seeds``, see ``measure_signal``; and the evaluations of ``evaluate_cells``
    with ``evaluate_episodes`` > 0); returns the written files, report.md first."""
    check_counts(reference_episodes, evaluate_episodes, signal_seeds)
    sweep = load_sweep(experiment_dir)
    measured = measure_signal(sweep, signal_seeds)  # it says its estimate when it starts
    analysis = analyse(sweep, reps)
    # Said before the wait; each step that plays episodes says its own estimate when it starts.
    print(f"report: {len(sweep.trials)} trials in {sweep.path}: statistics and plots (seconds)"
          f"{', reference episodes' if reference_episodes else ''}"
          f"{', evaluations' if evaluate_episodes or sweep_evaluate_episodes(sweep) else ''}",
          file=sys.stderr, flush=True)
    accuracy = reference_accuracies(sweep, reference_episodes)
    # A sweep that is about its trained policies (learn) evaluates every cell on its own count.
    evaluate_episodes = max(evaluate_episodes, sweep_evaluate_episodes(sweep))
    evaluations = evaluate_cells(sweep, analysis, evaluate_episodes) if evaluate_episodes \
        else None
    plots = plot_report(sweep, analysis, panel_labels(sweep, analysis), analysis.outcomes,
                        sweep.path / PLOTS_DIR)
    report = sweep.path / REPORT_FILE
    write_atomic(report, render(sweep, analysis, accuracy, plots, evaluations))
    written = [report, *plots, *measured]
    if accuracy is not None:
        written.append(sweep.path / REFERENCE_FILE)
    return written + [p for e in evaluations or () for p in e.written]
