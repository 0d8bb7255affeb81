"""critic-fit's report.md: per cell and training-set size, held-out EV at 8, 64, 512 and the last
gradient step and at its best step, train EV and value loss at the last step, each the IQM over
seeds with its 95% interval; the reference learners (``--reference``) beside them; the EV ceiling;
the learning-curve panels."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from esper_rllib.analysis.outputs import markdown_table, write_atomic, write_json
from esper_rllib.analysis.sweep import load_ev_ceiling, shared_stream_note
from esper_rllib.offline.data_law import data_law_lines, data_laws, plot_data_law
from esper_rllib.offline.fit_plots import LEARNING_CURVES_PNG, plot_curves
from esper_rllib.offline.fit_run import CURVE_CSV, read_curve
from esper_rllib.offline.fit_summary import KEY_STEPS, CurveSummary, summarize_curve
from esper_rllib.offline.reference import RIDGE_ALPHAS, RIDGE_FOLDS, STACK

REPORT_MD = "report.md"
FIT_JSON = "fit.json"
PLOTS_DIR = "plots"
# What the recording and the audit must share for the ceiling to apply.
CEILING_KEYS = ("profile", "reward", "max_epochs")


def ceiling_for_recording(folders: list[Path], recorded: dict[str, Any]
                          ) -> tuple[dict[str, Any] | None, str]:
    """The EV ceiling of the first signal.json in (or beside) ``folders`` whose profile,
    reward and episode length are the recording's; else None and why."""
    seen = []
    for folder in folders:
        ceiling = load_ev_ceiling(folder)
        if ceiling is None:
            continue
        matches = all(ceiling[k] == recorded[k] for k in CEILING_KEYS)
        if matches and not math.isnan(ceiling["estimate"]):
            return ceiling, ""
        if matches and shared_stream_note(ceiling):
            return None, (f"No EV ceiling: {shared_stream_note(ceiling)}. `esper-rllib signal` "
                          "measures the Markov-state ceiling; pass its folder as --signal.")
        seen.append(f"`{ceiling['path']}` ({', '.join(f'{k} {ceiling[k]}' for k in CEILING_KEYS)})")
    wanted = ", ".join(f"{k} {recorded[k]}" for k in CEILING_KEYS)
    if seen:
        return None, f"No EV ceiling: {'; '.join(seen)} does not match the recording ({wanted})."
    return None, (f"No EV ceiling: no signal.json in or beside {', '.join(map(str, folders))}; "
                  f"`esper-rllib signal` measures one ({wanted}); pass its folder as --signal.")


def _fmt(estimate: Any) -> str:
    return estimate.format(".3f")


def cell_table(summary: CurveSummary) -> list[str]:
    last = summary.last_step
    steps = [s for s in KEY_STEPS if s in summary.steps and s < last] + [last]
    head = (["cell", "train episodes"] + [f"held-out EV @ {s}" for s in steps]
            + ["best held-out EV (step)", f"train EV @ {last}", f"value loss @ {last}"])
    rows = []
    for cell in summary.cells:
        for size in summary.sizes[cell]:
            best = summary.best_step(cell, size)
            rows.append([cell, str(size)] + [_fmt(summary.get(cell, size, s)) for s in steps] + [
                f"{_fmt(summary.get(cell, size, best))} ({best})",
                _fmt(summary.get(cell, size, last, "train_ev")),
                summary.get(cell, size, last, "value_loss").format(".3g")])
    return markdown_table(head, rows)


def reference_table(summary: CurveSummary) -> list[str]:
    """The reference learners' held-out and train EV per training-set size, beside the best
    critic cell's held-out EV at its last and best step."""
    if not summary.references:
        return []
    last = summary.last_step if summary.cells else None
    head = ["learner", "train episodes", "held-out EV", "train EV", "value loss"]
    rows = []
    sizes = sorted({n for r in summary.references for n in summary.reference_sizes[r]})
    for size in sizes:
        for name in summary.references:
            if size not in summary.reference_sizes[name]:
                continue
            rows.append([f"{name} (reference)", str(size), _fmt(summary.reference(name, size)),
                         _fmt(summary.reference(name, size, "train_ev")),
                         summary.reference(name, size, "value_loss").format(".3g")])
        cells = [c for c in summary.cells if size in summary.sizes[c]]
        if cells and last is not None:
            best = max(cells, key=lambda c: summary.get(c, size, last).value)
            rows.append([f"best critic `{best}` @ {last}", str(size),
                         _fmt(summary.get(best, size, last)),
                         _fmt(summary.get(best, size, last, "train_ev")),
                         summary.get(best, size, last, "value_loss").format(".3g")])
    return ["## Reference learners", "",
            "scikit-learn regressors of the same return-to-go on the same training episodes "
            "(each seed's, each size's) and held-out episodes as the critics: "
            f"`trees` (HistGradientBoostingRegressor, 300 iterations, learning rate 0.05, "
            f"min_samples_leaf 40, no early stopping), `ridge` (standardised features, Ridge "
            f"with alpha from {RIDGE_ALPHAS[0]:g}..{RIDGE_ALPHAS[-1]:g} by {RIDGE_FOLDS}-fold "
            "cross-validation over training episodes), from the current step's observation "
            f"features (the float features and one-hot blueprints, no action mask) plus t; "
            f"`_k{STACK}`: the last {STACK} steps' features stacked. No gradient steps and no "
            "step picked on held-out data. Beside them the critic cell with the best held-out "
            "EV at the last step.", "", *markdown_table(head, rows), ""]


def decomposition_lines(fit: dict[str, Any], summary: CurveSummary,
                        ceiling: dict[str, Any] | None) -> list[str]:
    """The decomposition section (``fit["online"]``: the sweeps to read online EVs from)."""
    from esper_rllib.offline.decomposition import decompose, load_online, render_table

    profile = fit["recording"]["profile"]
    online = [t for spec in fit.get("online", []) for t in load_online(spec, profile)]
    rows = decompose(summary, fit["cells"], ceiling, online, profile,
                     frozen=[c for c, t in fit.get("cell_trunks", {}).items() if t == "frozen"])
    return ["## Where the explained variance goes", "",
            "From the EV ceiling (Markov state) to what the observation tells (the best "
            "held-out EV on all training episodes of any learner here, reference or critic, "
            "named beside it), to this config's critic on all training episodes (best step), "
            "with one quick trial's data "
            "(32 episodes), with its optimisation too (8 gradient steps), to the final EV of "
            "the same config trained online by PPO (its sweep's trials) against the same "
            "target, the return-to-go; beside it the online final EV against the GAE targets "
            "(the verdict's, which carry the critic's own values; n/a where a sweep predates "
            "the return-to-go metric). IQM [95% interval].",
            "", *render_table(rows), ""]


def render(fit: dict[str, Any], summary: CurveSummary, ceiling: dict[str, Any] | None,
           ceiling_note: str) -> str:
    meta = fit["recording"]
    lines = [
        f"# Critic fit on `{fit['data']}`", "",
        f"- Command: `{fit['command']}`",
        f"- Recording: {meta['episodes']} episodes of the `{meta['policy']}` policy (seed "
        f"{meta['seed']}) on profile `{meta['profile']}` (--set {meta['overrides'] or 'none'}), "
        f"recorded at commit {meta['commit']}",
        f"- Split by env seed: {fit['heldout']} episodes held out, a training pool of "
        f"{fit['pool']}; {len(fit['seeds'])} seeds per cell (each its own initialisation and "
        f"training subset), up to {fit['steps']} gradient steps, trunk {fit['trunk']}",
        f"- Fit knobs (--set): {fit['overrides'] or 'none'}; grid: {fit['axes'] or 'none'}",
        f"- Commit {fit['commit']}, wall time {fit['wall_s']:.0f} s", "",
        "Each number is the IQM over seeds with its 95% stratified-bootstrap interval (rliable). "
        "EV is 1 - Var(G - V) / Var(G) over real steps, unclamped, against the discounted "
        "return-to-go G of the recorded episode (for `q_op`, V is Q(s, op taken)). The best "
        "step is chosen on the held-out IQM itself, so it is an optimistic reading.", "",
    ]
    if ceiling is not None:
        shared = ceiling.get("shared_stream")
        lines += [f"EV ceiling (Markov state: the whole env state, each continuation with the "
                  f"env's random stream drawn afresh; {ceiling['policy']} policy): "
                  f"{ceiling['estimate']:.3f} [{ceiling['low']:.3f}, {ceiling['high']:.3f}] "
                  + ("" if not shared else
                     f"(the shared-stream figure, which credits a critic with the future's "
                     f"dice: {shared['estimate']:.3f} [{shared['low']:.3f}, "
                     f"{shared['high']:.3f}]) ")
                  + f"from `{ceiling['path']}`; the recording's policy is "
                  f"`{meta['policy']}`, so the ceiling is a reference, not this data's bound.",
                  ""]
    else:
        lines += [ceiling_note, ""]
    if not summary.cells:
        return "\n".join([*lines, "No critic trial finished.", "", *reference_table(summary)])
    lines += cell_table(summary)
    lines += ["", f"![learning curves]({PLOTS_DIR}/{LEARNING_CURVES_PNG})", ""]
    lines += reference_table(summary)
    lines += data_law_lines(data_laws(summary), ceiling, PLOTS_DIR)
    if fit.get("online"):
        lines += decomposition_lines(fit, summary, ceiling)
    return "\n".join(lines)


def write_report(out: Path, fit: dict[str, Any], signal_folders: list[Path]) -> Path:
    """report.md and plots/ in ``out`` from its curve.csv and fit.json's ``fit``."""
    summary = summarize_curve(read_curve(out / CURVE_CSV))
    ceiling, note = ceiling_for_recording(signal_folders, fit["recorded_env"])
    plots = out / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    if summary.cells:
        plot_curves(summary, ceiling, plots)
    laws = data_laws(summary)
    if laws:
        plot_data_law(laws, ceiling, plots)
    write_atomic(out / REPORT_MD, render(fit, summary, ceiling, note))
    return out / REPORT_MD


def save_fit(out: Path, fit: dict[str, Any]) -> None:
    write_json(out / FIT_JSON, fit)


def load_fit(out: Path) -> dict[str, Any]:
    """The fit's settings; ConfigError when the folder has none (a fit started before they
    were written first)."""
    from esper_rllib.run.config import ConfigError

    if not (out / FIT_JSON).is_file():
        raise ConfigError(f"--out {out}: no {FIT_JSON}; this folder's fit cannot be reported")
    return json.loads((out / FIT_JSON).read_text())
