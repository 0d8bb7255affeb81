"""The report's statistics (rliable: IQM, stratified-bootstrap intervals, probability of
improvement; main effects), per-trial summaries, the EV ceiling loader and the rendered report with
its plots, on hand-made data.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from esper_rllib.analysis.cells import analyse
from esper_rllib.analysis.evaluation import last_checkpoint
from esper_rllib.analysis.plots import PANEL_METRICS, _wrap, panel_figure
from esper_rllib.analysis.postmortem import nearest_iterations, postmortem
from esper_rllib.analysis.render import panel_labels, render, write_report
from esper_rllib.analysis.stats import (
    bootstrap_iqm,
    column_iqm,
    crossed_mean,
    improvement,
    iqm,
    main_effects,
    mean_difference,
    probability_of_improvement,
)
from esper_rllib.analysis.sweep import (
    CEILING_CELLS,
    CEILING_ENV_KNOBS,
    ceiling_for,
    load_ev_ceiling,
    load_sweep,
    measure_signal,
    signal_cost,
)
from esper_rllib.cli import main
from esper_rllib.run.config import resolve_knobs
from tests.helpers import REPO
from tuning.plan import plan_sweep
from tuning.results import TrialRecord, read_ablation_csv, summarize, write_ablation_csv

REPS = 300  # bootstrap replicates in these tests: enough for the intervals they check
QUICK = resolve_knobs("quick")  # the fake sweeps' profile
QUICK_EPOCHS, QUICK_REWARD = QUICK["max_epochs"], QUICK["reward"]
OTHER_REWARD = "sparse" if QUICK_REWARD != "sparse" else "shaped"


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)  # [3, 4, 5, 6]
    assert iqm([100, 1, 3, 2]) == pytest.approx(2.5)  # [2, 3]
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # fewer than 4: the plain mean
    assert iqm([1.0, math.nan, 3.0]) == pytest.approx(2.0)  # NaN (not reported) ignored
    assert math.isnan(iqm([]))


def test_bootstrap_interval_brackets_the_iqm_and_is_reproducible():
    data = [0, 0, 0, 0, 10, 10, 10, 10]
    est = bootstrap_iqm(data)
    assert est.value == pytest.approx(5.0) and est.n == 8
    assert 0 <= est.low < 5 < est.high <= 10
    noisy = [0.3, -0.1, 0.25, 0.8, 0.05, 0.4, -0.2]
    np.random.seed(7)
    first = bootstrap_iqm(noisy)
    caller_draw = np.random.rand()
    assert first.low < first.value < first.high
    assert bootstrap_iqm(noisy) == first  # seeded
    assert bootstrap_iqm(noisy, seed=1) != first
    np.random.seed(7)
    assert np.random.rand() == caller_draw  # the caller's global NumPy stream is left alone
    assert bootstrap_iqm([3.0] * 5).low == bootstrap_iqm([3.0] * 5).high == 3.0
    single = bootstrap_iqm([0.7])
    assert (single.value, single.n) == (0.7, 1) and single.format() == "0.7 (n=1)"
    assert bootstrap_iqm([math.nan]).format() == "n/a"


def test_vectorised_statistics_equal_rliables():
    rng = np.random.default_rng(0)
    for n in range(1, 10):
        scores = rng.normal(size=(n, 3)).round(1)  # rounded: ties happen
        expected = [metrics.aggregate_iqm(scores[:, [j]]) for j in range(3)]
        assert column_iqm(scores) == pytest.approx(expected)
        x, y = scores[:, [0]], rng.normal(size=(n + 2, 1)).round(1)
        assert improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
        assert improvement(x, x) == metrics.probability_of_improvement(x, x) == 0.5


def test_probability_of_improvement():
    low, high = [0.0, 0.1, 0.2, 0.3, 0.4], [1.0, 1.1, 1.2, 1.3, 1.4]
    beats = probability_of_improvement(high, low, REPS)
    assert (beats.value, beats.low, beats.high, beats.n) == (1.0, 1.0, 1.0, 5)
    assert probability_of_improvement(low, high, REPS).value == 0.0
    same = probability_of_improvement(low, low, REPS)
    assert same.value == 0.5 and same.low < 0.5 < same.high
    # x > y in 10 of the 25 pairs, no ties.
    mixed = probability_of_improvement([0, 1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5, 4.5], REPS)
    assert mixed.value == pytest.approx(0.4) and mixed.low < 0.4 < mixed.high
    assert probability_of_improvement([1.0, 1.0], [1.0, math.nan], REPS).value == 0.5
    assert math.isnan(probability_of_improvement([1.0], [math.nan], REPS).value)
    assert probability_of_improvement(high, low, REPS) == probability_of_improvement(
        high, low, REPS)


def test_mean_difference_and_main_effects():
    exact = mean_difference([1, 1, 1], [3, 3, 3])
    assert (exact.value, exact.low, exact.high) == (2.0, 2.0, 2.0)
    noisy = mean_difference([0, 1, 2], [10, 11, 12])
    assert noisy.value == pytest.approx(10.0) and 8 <= noisy.low < 10 < noisy.high <= 12
    effects = main_effects(["a", "b", "a", "b", "c"], [1, 3, 2, 4, 0], REPS)
    assert list(effects) == ["b", "c"]  # each level against the first one
    assert effects["b"].value == pytest.approx(2.0)
    assert effects["c"].value == pytest.approx(-1.5)


def record(evs, **series) -> TrialRecord:
    n = len(evs)
    metrics = [{"explained_variance": ev, **{k: v[i] for k, v in series.items()}}
               for i, ev in enumerate(evs)]
    return TrialRecord(Path("t"), {}, list(range(1, n + 1)), [10 * i for i in range(1, n + 1)],
                       metrics)


def test_summary_of_one_trial():
    trial = record(
        [-0.5, -0.2, 0.1, 0.4, 0.3, 0.2, 0.35],
        value_loss=[87.2, 40, 30, 20, 10, 5, 3.2],
        clip_ratio=[72.8, 15, 12, 11, 13, 30, 36],
        ev_trailing=[math.nan] * 5 + [0.3, 0.3],
        episode_val_acc=[50, 55, math.nan, 60, 61, 62, math.nan],
        verdict=["undetermined"] * 5 + ["strong", "strong"],
        verdict_code=[-1] * 5 + [2, 2],
        kl=[1e-5] * 7, q_spread=[0.1] * 6 + [0.0],
    )
    s = summarize(trial)
    assert s["initial_value_loss"] == 87.2 and s["final_value_loss"] == 3.2
    assert s["ev_iter5"] == 0.3 and s["best_ev"] == 0.4
    assert s["final_ev"] == 0.3  # the monitor's trailing EV, not the last raw EV
    assert s["median_clip_ratio"] == 15
    assert s["final_accuracy"] == 62  # last finished episode
    assert s["final_q_spread"] == 0.0 and s["median_kl"] == 1e-5
    assert (s["verdict"], s["verdict_code"]) == ("strong", 2)
    short = summarize(record([0.1, 0.2]))
    assert short["ev_iter5"] == 0.2  # nearest iteration to 5
    assert short["final_ev"] == 0.2 and short["verdict"] == "undetermined"


def fake_sweep(root: Path, seeds: int = 2, grid: dict | None = None,
               overrides: dict | None = None, sweep: str = "value_head",
               return_ev: bool = True) -> Path:
    """A sweep folder (the value_head sweep unless named) with hand-made results: final EV is set by
    the gain alone, final accuracy by the depth alone (+5 points at depth 4); seeds add 0.01 EV
    and 1 point; the EV against the return-to-go is 0.3 lower (absent with ``return_ev`` off,
    as in runs from before it was logged)."""
    plan = plan_sweep(sweep, "quick", resolve_knobs, seeds=seeds, grid=grid,
                      overrides=overrides)
    plan.save(root)
    for i, values in enumerate(itertools.product(*plan.axes.values())):
        params = {**plan.param_space(), **dict(zip(plan.axes, values, strict=True))}
        ev = (0.5 if params["value_head_gain"] == 0.01 else -0.2) + 0.01 * params["rng_seed"]
        accuracy = 60.0 + 5 * (params["value_head_depth"] == 4) + params["rng_seed"]
        trial = root / f"EsperPPO_x_{i:05d}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps(params))
        lines = []
        for it in range(1, 7):
            verdict = ("strong" if ev > 0.2 else "failure") if it > 5 else "undetermined"
            esper = {"explained_variance": ev, "ev_trailing": ev, "value_loss": 10 / it,
                     "clip_ratio": 2.0, "kl": 0.01, "q_spread": 0.1, "episode_val_acc": accuracy,
                     "verdict": verdict, "verdict_code": {"strong": 2, "failure": 0}.get(
                         verdict, -1), "op_count_WAIT": 3, "op_count_GERMINATE": 1,
                     "flag_ev_negative": ev < 0 and it > 5}
            if return_ev:
                esper |= {"explained_variance_return": ev - 0.3, "ev_return_trailing": ev - 0.3}
            lines.append(json.dumps({"training_iteration": it, "timesteps_total": 8 * it,
                                     "done": it == 6, "esper": esper}))
        (trial / "result.json").write_text("\n".join(lines) + "\n")
    write_ablation_csv(root, plan.columns)
    return root


CEILING = {"estimate": 0.4, "low": 0.33, "high": 0.47, "states": 32, "continuations": 8}
SHARED = {"estimate": 0.55, "low": 0.4, "high": 0.7, "states": 32, "continuations": 8}


def write_signal(folder: Path, reward: str = QUICK_REWARD, max_epochs: int = QUICK_EPOCHS,
                 **random: object) -> Path:
    """signal.json as `esper-rllib signal` writes it (the parts the report reads)."""
    path = folder / "signal.json"
    path.write_text(json.dumps({"ev_ceiling": {"random": {**CEILING, "stream": "fresh",
                                                          **random}},
                                "ev_ceiling_shared_stream": {"random": {**SHARED,
                                                                        "stream": "shared"}},
                                "policies": {}, "meta": {"profile": "quick", "reward": reward,
                                                         "max_epochs": max_epochs}}))
    return path


def section(report: str, title: str) -> str:
    return report.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_on_a_hand_made_sweep(tmp_path):
    root = fake_sweep(tmp_path / "value_head-quick")
    sweep = load_sweep(root)
    assert len(sweep.cells) == 8 and all(len(c.trials) == 2 for c in sweep.cells)
    write_signal(tmp_path)  # beside the experiment folder
    written = write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    report = (root / "report.md").read_text()
    names = ["final_ev", "main_effects", "explained_variance", "explained_variance_return",
             "value_loss", "clip_ratio"]
    assert written == [root / "report.md", *(root / "plots" / f"{n}.png" for n in names)]
    for png in written[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{png.name})" in report
    rows = [line for line in section(report, "Cells").splitlines()
            if line.startswith(("| 1.0 |", "| 0.01 |"))]
    assert len(rows) == 8
    fix = next(r for r in rows if r.startswith("| 0.01 | 4 | 1.0 | 2 |"))
    assert "0.505 [0.5, 0.51]" in fix and "2 strong" in fix and "the seed document's fix" in fix
    broken = next(r for r in rows if r.startswith("| 1.0 | 2 | 0.5 | 2 |"))
    assert "2 failure" in broken and "the broken run" in broken
    # Four gain-0.01 cells tie on final EV: the first of them counts as the best.
    assert rows[4].startswith("| 0.01 | 2 | 0.5 |") and rows[4].endswith("the best final EV |")

    ceiling = section(report, "Final EV against the EV ceiling")
    assert ("The cell with the best final EV (gain=0.01,depth=2,coef=0.5): "
            "EV 0.505 of a possible 0.4 [0.33, 0.47] (EV ceiling under the "
            "random policy), 126.2% of it.") in ceiling
    assert f"`{tmp_path / 'signal.json'}`, reward {QUICK_REWARD}, profile quick" in ceiling
    # Beside it the like-for-like number: the critic against the return, the ceiling's target.
    assert "| 1.0 | 2 | 0.5 | -0.195 [-0.2, -0.19] | -48.8% | -0.495 [-0.5, -0.49] | -123.7% |" \
        in ceiling
    fix_row = next(r for r in section(report, "Cells").splitlines()
                   if r.startswith("| 0.01 | 4 | 1.0 | 2 |"))
    assert "| 0.505 [0.5, 0.51] | 0.205 [0.2, 0.21] |" in fix_row  # final EV, then vs return

    compared = section(report, "Does a cell beat the baseline?")
    assert "Against the broken run (value_head_gain 1.0, value_head_depth 2, value_coef 0.5)." \
        in compared
    # The fix has the gain (final EV) and the depth (accuracy); the best cell the gain only.
    # Judged on final EV, the EV against the return-to-go, and accuracy.
    assert "| cell | P(final EV higher) [95% CI] | P(final EV vs return-to-go higher) [95% CI] " \
        "| P(final accuracy higher) [95% CI] |" in compared
    assert ("| the seed document's fix (gain=0.01,depth=4,"
            "coef=1.0) | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |") in compared
    assert ("| the cell with the best final EV (gain=0.01,depth=2,"
            "coef=0.5) | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] | 0.50 [") in compared

    effects = {line.split(" | ")[0][2:]: line.split(" | ")[1:]
               for line in section(report, "Main effects on final EV, final EV vs return-to-go "
                                   "and final accuracy").splitlines()
               if line.startswith("| value_")}
    assert effects["value_head_gain"][:3] == ["0.01 vs 1.0", "+0.7 [+0.695, +0.705]",
                                              "+0.7 [+0.695, +0.705]"]  # vs return: 0.3 lower
    assert effects["value_head_gain"][3].startswith("+0 [")
    assert effects["value_head_depth"][1].startswith("+0 [")  # depth leaves EV alone...
    assert effects["value_head_depth"][3].startswith("+5 [")  # ...and moves accuracy
    csv_rows = read_ablation_csv(root / "ablation.csv")
    assert len(csv_rows) == 16 and {r["verdict"] for r in csv_rows} == {"strong", "failure"}
    # Seeded: the same folder gives the same report.
    assert render(sweep, analyse(sweep, REPS), None, written[1:]) == report


def test_panels_name_what_tells_cells_apart_and_wrap_between_knobs(tmp_path):
    root = fake_sweep(tmp_path, seeds=2, grid={"value_head_gain": [1.0, 0.01],
                                               "value_coef": [1.0]})
    sweep = load_sweep(root)
    labels = panel_labels(sweep, analyse(sweep, REPS))
    assert [lb.split(" (")[0] for lb in labels] == [  # coef is 1.0 in every cell
        "gain=1.0,depth=2", "gain=1.0,depth=4", "gain=0.01,depth=2", "gain=0.01,depth=4"]
    title = "preset=critic_fix,without=nothing,bootstrap=True,value_target=return_to_go"
    lines = _wrap(title).split("\n")
    assert len(lines) > 1 and ",".join(line.rstrip(",") for line in lines) == title


def test_small_multiples_have_one_panel_per_cell_with_each_seed_and_the_mean(tmp_path):
    root = fake_sweep(tmp_path, seeds=3, grid={"value_head_gain": [1.0, 0.1, 0.01],
                                               "value_coef": [1.0]})
    sweep = load_sweep(root)
    analysis = analyse(sweep, REPS)
    labels = [cell.label(sweep.axes) for cell in sweep.cells]
    metric, title, reference = PANEL_METRICS[0]
    fig = panel_figure(sweep, analysis, labels, metric, title, reference)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().replace("\n", " ") for ax in panels] == labels  # 6 cells, 6 panels
    for ax, cell in zip(panels, sweep.cells, strict=True):
        widths = sorted(line.get_linewidth() for line in ax.get_lines()
                        if len(line.get_xdata()) == 6)  # the iteration series
        assert widths == [0.8, 0.8, 0.8, 2.2]  # three thin seeds, one bold mean
        mean = next(line for line in ax.get_lines() if line.get_linewidth() == 2.2)
        assert mean.get_ydata()[-1] == pytest.approx(
            np.mean([t.series(metric)[-1] for t in cell.trials]))
    # Panels below an empty slot still show their iterations.
    assert all(ax.xaxis.get_label_text() == "iteration" for ax in panels[-4:])


def test_sweep_without_the_broken_run_compares_with_its_first_cell(tmp_path):
    # (and one from before explained_variance_return was logged: n/a, no empty plot of it)
    root = fake_sweep(tmp_path, grid={"value_coef": [1.0]}, return_ev=False)
    written = write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    assert root / "plots" / "explained_variance_return.png" not in written
    report = (root / "report.md").read_text()
    fix_row = next(r for r in section(report, "Cells").splitlines()
                   if r.startswith("| 0.01 | 4 | 1.0 | 2 |"))
    assert "| 0.505 [0.5, 0.51] | n/a |" in fix_row
    compared = section(report, "Does a cell beat the baseline?")
    assert ("This sweep has no broken run (value_head_gain 1.0, value_head_depth 2, value_coef "
            "0.5): the baseline is its first cell, every axis at its first value "
            "(gain=1.0,depth=2,coef=1.0).") in compared
    assert "| the seed document's fix (gain=0.01,depth=4," in compared
    assert "| the cell with the best final EV (gain=0.01,depth=2," \
        in compared
    assert "P(final EV vs return-to-go higher)" not in compared  # not logged: not judged on
    assert section(report, "Main effects on final EV and final accuracy")
    assert "No EV ceiling: no signal.json in or beside the experiment folder. Measure one with " \
        f"`esper-rllib signal --profile quick --set reward={QUICK_REWARD} --set " \
        f"max_epochs={QUICK_EPOCHS} --out {root}`, or let the report measure it: " \
        f"`esper-rllib report {root} --signal-seeds 6` ({signal_cost(QUICK_EPOCHS)})." \
        in report
    assert "](plots/final_ev.png)" in report
    assert section(report, "Trained policies against WAIT, the heuristic and the oracle") == (
        f"\nNot run (--evaluate-episodes 0). `esper-rllib report {root} --evaluate-episodes 4` "
        "evaluates the final checkpoints of the baseline (the broken run, else the first cell), "
        "the seed document's fix and the best cell.\n")


def test_a_sweep_on_the_fix_does_not_name_its_cell_the_fix(tmp_path):
    # The long run: one cell of `budget` (the fix's value head is its fixed base, the recipe its
    # axes). Its cell is the recipe, not "the seed document's fix".
    root = fake_sweep(tmp_path, sweep="budget",
                      grid={"critic_trunk": ["separate"], "critic_steps": [128]})
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    cells = section((root / "report.md").read_text(), "Cells")
    (row,) = [line for line in cells.splitlines() if line.startswith("| separate | 128 |")]
    assert "seed document" not in row


def test_ev_ceiling_loader(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    assert load_ev_ceiling(sweep_dir) is None
    beside = write_signal(tmp_path)
    assert load_ev_ceiling(sweep_dir) == {"policy": "random", **CEILING, "shared_stream": SHARED,
                                          "shared_stream_only": False, "profile": "quick",
                                          "reward": QUICK_REWARD, "max_epochs": QUICK_EPOCHS,
                                          "path": beside, "env_config": None}
    inside = write_signal(sweep_dir, estimate=0.1)
    assert load_ev_ceiling(sweep_dir)["path"] == inside  # the folder's own comes first
    none = load_ev_ceiling(sweep_dir, policy="heuristic")  # the audit measured none for it
    assert math.isnan(none["estimate"]) and none["states"] == 0
    meta = '"meta": {"profile": "quick", "reward": "shaped", "max_epochs": 9}'
    for text, error in (
            ("{not json", "not JSON"),
            ('{"ev_ceiling": {}}', "meta: missing; expected the audit's profile, reward and "
             "max_epochs"),
            ('{"meta": {"profile": "quick", "reward": "shaped", "max_epochs": "40"}}',
             "meta.max_epochs: '40'; allowed: an int"),
            ('{"ev_ceiling": [], ' + meta + "}", "ev_ceiling: expected an object of policy"),
            ('{"ev_ceiling": {"random": {"estimate": "high"}}, ' + meta + "}",
             "ev_ceiling.random.estimate: 'high'; allowed: a finite number or null"),
            ('{"ev_ceiling": {"random": {"estimate": 0.4, "states": 2.5}}, ' + meta + "}",
             "ev_ceiling.random.states: 2.5; allowed: an int >= 0")):
        inside.write_text(text)
        with pytest.raises(ValueError, match="^" + re.escape(f"{inside}: {error}")):
            load_ev_ceiling(sweep_dir)




def test_signal_json_from_before_the_markov_state_ceiling_loads_without_a_ceiling(tmp_path):
    # Written before the Markov-state ceiling: ev_ceiling holds the shared-stream figure and has
    # no "stream". It loads, as the shared-stream figure only, never as the ceiling.
    old = REPO / "docs" / "results" / "signal-quick-aligned"
    ceiling = load_ev_ceiling(old)
    assert math.isnan(ceiling["estimate"]) and ceiling["states"] == 0
    assert ceiling["shared_stream_only"]
    assert ceiling["shared_stream"]["estimate"] == pytest.approx(0.4254, abs=1e-4)
    assert ceiling["shared_stream"]["states"] == 60
    root = fake_sweep(tmp_path / "sweep", seeds=1)
    signal = tmp_path / "signal.json"
    signal.write_text(json.dumps({"ev_ceiling": {"random": CEILING}, "policies": {},
                                  "meta": {"profile": "quick", "reward": QUICK_REWARD,
                                           "max_epochs": QUICK_EPOCHS}}))
    ceiling, note = ceiling_for(load_sweep(root))
    assert ceiling is None
    assert note.startswith(f"No EV ceiling: `{signal}` predates the Markov-state ceiling: it has "
                           "only the shared-stream figure 0.4 [0.33, 0.47], whose continuations "
                           "shared the env's future random stream")
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    text = section((root / "report.md").read_text(), "Final EV against the EV ceiling")
    assert "predates the Markov-state ceiling" in text and "of a possible" not in text


def test_critic_fit_reads_the_markov_state_ceiling_and_no_ceiling_from_an_older_audit(tmp_path):
    from esper_rllib.offline.fit_report import ceiling_for_recording

    recorded = {"profile": "quick", "reward": "aligned", "max_epochs": 40}
    ceiling, note = ceiling_for_recording([REPO / "docs" / "results" / "signal-quick-aligned"],
                                          recorded)
    assert ceiling is None and "predates the Markov-state ceiling" in note
    write_signal(tmp_path)
    ceiling, note = ceiling_for_recording([tmp_path], {"profile": "quick",
                                                       "reward": QUICK_REWARD,
                                                       "max_epochs": QUICK_EPOCHS})
    assert note == "" and ceiling["estimate"] == 0.4 and ceiling["shared_stream"] == SHARED


def test_the_report_reads_the_markov_state_ceiling_and_names_the_shared_stream_one(tmp_path):
    root = fake_sweep(tmp_path / "sweep", seeds=1)
    write_signal(tmp_path)
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    text = section((root / "report.md").read_text(), "Final EV against the EV ceiling")
    assert "of a possible 0.4 [0.33, 0.47]" in text
    assert "drawn afresh, the Markov-state ceiling; the shared-stream figure" in text
    assert "0.55 [0.4, 0.7]" in text and "of a possible 0.55" not in text


def test_a_ceiling_that_records_its_env_applies_to_a_profile_of_the_same_env(tmp_path):
    # batch64 runs quick's env: an audit on quick that recorded its env applies to it; one on
    # another training-set size does not, and the note names the env knob that differs.
    root = fake_sweep(tmp_path / "sweep", seeds=1)
    signal = write_signal(tmp_path)
    env = {k: load_sweep(root).trials[0].params[k] for k in CEILING_ENV_KNOBS}
    data = json.loads(signal.read_text())
    data["meta"] |= {"profile": "batch64", "env_config": env}
    signal.write_text(json.dumps(data))
    ceiling, note = ceiling_for(load_sweep(root))
    assert ceiling is not None and note == ""
    data["meta"]["env_config"] = {**env, "n_train": env["n_train"] * 2}
    signal.write_text(json.dumps(data))
    ceiling, note = ceiling_for(load_sweep(root))
    assert ceiling is None and f"n_train {env['n_train'] * 2}" in note
    assert f"this sweep runs task {env['task']}, n_train {env['n_train']}," in note


def test_a_ceiling_applies_to_the_cells_of_its_reward_only(tmp_path):
    # A sweep with a reward axis: the audit's reward's cells get the ceiling, the others n/a.
    root = fake_sweep(tmp_path / "sweep", seeds=1, grid={
        "value_head_gain": [1.0], "value_head_depth": [2],
        "reward": [QUICK_REWARD, OTHER_REWARD]})
    signal = write_signal(tmp_path)
    sweep = load_sweep(root)
    ceiling, note = ceiling_for(sweep)
    matching = [i for i, c in enumerate(sweep.cells) if c.knob("reward") == QUICK_REWARD]
    assert ceiling is not None and ceiling[CEILING_CELLS] == matching and len(matching) == 2
    assert note.startswith(f"The EV ceiling applies only to the 2 of 4 cells that run its env: "
                           f"`{signal}` was measured with profile quick, reward {QUICK_REWARD}")
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=0)
    text = section((root / "report.md").read_text(), "Final EV against the EV ceiling")
    assert note in text and "of a possible 0.4 [0.33, 0.47]" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    other = [r for r in rows if f"| {OTHER_REWARD} |" in r]
    assert len(other) == 2 and all(r.count("n/a (another env)") == 2 for r in other)
    assert not any("another env" in r for r in rows if f"| {QUICK_REWARD} |" in r)


def test_ceiling_that_does_not_apply_is_named_and_a_malformed_one_stops_the_report(tmp_path,
                                                                                   capsys):
    root = fake_sweep(tmp_path / "sweep", seeds=1)
    signal = write_signal(tmp_path, reward=OTHER_REWARD, max_epochs=3)
    hint = (f"Measure one with `esper-rllib signal --profile quick --set reward={QUICK_REWARD} "
            f"--set max_epochs={QUICK_EPOCHS} --out {root}`, or let the report measure it: "
            f"`esper-rllib report {root} --signal-seeds 6` ({signal_cost(QUICK_EPOCHS)}).")
    sweep = load_sweep(root)
    assert ceiling_for(sweep) == (None, (
        f"No EV ceiling: `{signal}` was measured with profile quick, reward {OTHER_REWARD}, "
        f"max_epochs 3; this sweep runs profile quick, reward {QUICK_REWARD}, max_epochs "
        f"{QUICK_EPOCHS}. {hint}"))
    write_signal(tmp_path, estimate=None, low=None, high=None)
    assert ceiling_for(sweep) == (None, f"No EV ceiling: `{signal}` has none under the random "
                                  "policy (measured with --ev-states 0, or its returns did not "
                                  "vary).")
    signal.write_text('{"meta": []}')
    capsys.readouterr()
    assert main(["report", str(root), "--reference-episodes", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"esper-rllib report: error: {signal}: meta: missing; expected the audit's " \
        "profile, reward and max_epochs"


def test_postmortem_tables(tmp_path):
    root = fake_sweep(tmp_path, seeds=1)
    text = postmortem(next(root.glob("EsperPPO_x_00000")))
    assert "| 1 | 10 |" in text and "| 5 | 2 |" in text and "| 6 | 1.667 |" in text
    assert "| WAIT | 18 | 75.0% |" in text  # op counts summed over all iterations
    assert "| ev_negative | 1 | 6 | 6 |" in text
    assert "Final verdict: **failure**" in text
    assert nearest_iterations(list(range(1, 13))) == [1, 5, 10, 12]
    assert nearest_iterations(list(range(1, 40))) == [1, 5, 10, 14, 20, 27, 32]


def test_crossed_mean_resamples_trials_and_env_seeds():
    same = crossed_mean([[1.0, 1.0], [1.0, 1.0]], REPS)
    assert (same.value, same.low, same.high, same.n) == (1.0, 1.0, 1.0, 4)
    # Trials apart, env seeds alike: the interval spans the trials.
    trials = crossed_mean([[0.0, 0.0], [2.0, 2.0]], REPS)
    assert (trials.value, trials.low, trials.high) == (1.0, 0.0, 2.0)
    # One trial: over its env seeds.
    seeds = crossed_mean([[10.0, 12.0]], REPS)
    assert (seeds.value, seeds.low, seeds.high) == (11.0, 10.0, 12.0)
    assert crossed_mean([[0.7]], REPS).format() == "0.7 (n=1)"
    noisy = np.random.default_rng(0).normal(size=(3, 5))
    assert crossed_mean(noisy, REPS) == crossed_mean(noisy, REPS)  # seeded
    assert crossed_mean(noisy, REPS).low < noisy.mean() < crossed_mean(noisy, REPS).high


SCRIPTED = {"wait": [10.0, 12.0], "heuristic": [11.0, 15.0], "oracle": [20.0, 14.0]}
HELD_OUT = [500_000, 500_001]


def fake_evaluation(trial: Path, checkpoint: str, trained: list[float],
                    seeds: list[int] = HELD_OUT, scripted: dict | None = None) -> None:
    """<trial>/evaluation/evaluation.json as `esper-rllib evaluate` writes it (the parts the
    report reads), for an empty checkpoint folder: any attempt to evaluate it again fails."""
    (trial / checkpoint).mkdir(exist_ok=True)
    policies = {name: {"episodes": [{"seed": s, "final_acc": a}
                                    for s, a in zip(seeds, accs, strict=True)]}
                for name, accs in {"trained": trained, **(scripted or SCRIPTED)}.items()}
    meta = {"checkpoint": str(trial / checkpoint), "seeds": seeds, "greedy": False,
            "oracle": "conv_heavy@r0c1", "env_config": {"max_epochs": 3}}
    (trial / "evaluation").mkdir(exist_ok=True)
    (trial / "evaluation" / "evaluation.json").write_text(
        json.dumps({"policies": policies, "meta": meta}))


def test_last_checkpoint_is_the_highest_numbered_folder(tmp_path):
    assert last_checkpoint(tmp_path) is None
    for name in ("checkpoint_000009", "checkpoint_000010", "checkpoint_tmp"):
        (tmp_path / name).mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint_000010"


def test_evaluations_of_the_broken_fixed_and_best_cells_are_reused_and_tabled(tmp_path):
    root = fake_sweep(tmp_path)
    sweep = load_sweep(root)

    def trials(gain, depth, coef):
        cell = next(c for c in sweep.cells if c.values == (gain, depth, coef))
        return [t.path for t in cell.trials]

    broken, fix, best = trials(1.0, 2, 0.5), trials(0.01, 4, 1.0), trials(0.01, 2, 0.5)
    fake_evaluation(broken[0], "checkpoint_000006", [10.0, 12.0])
    (broken[0] / "checkpoint_000003").mkdir()  # an older checkpoint: not the one evaluated
    fake_evaluation(broken[1], "checkpoint_000006", [12.0, 14.0])
    fake_evaluation(fix[0], "checkpoint_000006", [30.0, 30.0])
    fake_evaluation(fix[1], "checkpoint_000006", [30.0, 30.0], seeds=[7, 8])  # other seeds
    # The best cell's trials have no checkpoint; the other cells' trials are not evaluated.
    fake_evaluation(trials(1.0, 4, 0.5)[0], "checkpoint_000006", [99.0, 99.0])
    written = write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=2)
    assert not [p for p in written if "evaluation" in p.parts]  # reused, none written
    text = section((root / "report.md").read_text(),
                   "Trained policies against WAIT, the heuristic and the oracle")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| trained: the broken run (gain=1.0,depth=2,coef=0.5) "
        "| 2 x 2 | 12.00 [10.00, 14.00] | +1.00 [+0.00, +2.00] | -1.00 [-3.00, +1.00] |",
        "| trained: the seed document's fix (gain=0.01,depth=4,"
        "coef=1.0) | 1 x 2 | 30.00 [30.00, 30.00] | +19.00 [+18.00, +20.00] "
        "| +17.00 [+15.00, +19.00] |",
        "| WAIT | 2 | 11.00 [10.00, 12.00] |  | -2.00 [-3.00, -1.00] |",
        "| heuristic | 2 | 13.00 [11.00, 15.00] | +2.00 [+1.00, +3.00] |  |",
        "| oracle (conv_heavy@r0c1) | 2 | 17.00 [14.00, 20.00] | +6.00 [+2.00, +10.00] "
        "| +4.00 [-1.00, +9.00] |",
    ]
    assert "on held-out env seeds 500000..500001" in text
    # The fix's second trial was evaluated on other seeds: evaluated again (its checkpoint is
    # an empty folder, so that fails and says why); the best cell has no checkpoints.
    skipped = text.split("Not evaluated: ", 1)[1]
    assert f"{fix[1].name}: checkpoint {fix[1] / 'checkpoint_000006'}: not a complete RLlib " \
        "checkpoint" in skipped
    assert f"{best[0].name}: no checkpoint; {best[1].name}: no checkpoint." in skipped


def test_each_trained_trial_is_paired_with_the_scripted_episodes_of_its_own_evaluation(
        tmp_path):
    # One trial evaluated on another machine: its host trained to other accuracies, WAIT's too.
    root = fake_sweep(tmp_path, grid={"value_head_gain": [1.0], "value_head_depth": [2]})
    broken = [t.path for t in load_sweep(root).cells[0].trials]
    fake_evaluation(broken[0], "checkpoint_000006", [10.0, 12.0])
    fake_evaluation(broken[1], "checkpoint_000006", [12.0, 14.0],
                    scripted={**SCRIPTED, "wait": [11.0, 13.0]})
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=2)
    text = section((root / "report.md").read_text(),
                   "Trained policies against WAIT, the heuristic and the oracle")
    trained = next(line for line in text.splitlines() if line.startswith("| trained: "))
    # Paired within each evaluation: 10-10, 12-12 and 12-11, 14-13 (not 12-10, 14-12).
    assert " | +0.50 [+0.00, +1.00] | " in trained
    assert f"episodes differ between these evaluations (made on another machine or with other " \
        f"code: host training is not bit-reproducible across CPUs) in {broken[1].name}." in \
        " ".join(text.split())
    assert "| WAIT | 2 | 11.00 [10.00, 12.00] |" in text  # the first evaluation's


def test_a_sweep_without_the_broken_run_evaluates_its_baseline(tmp_path):
    root = fake_sweep(tmp_path, grid={"value_coef": [1.0]})
    sweep = load_sweep(root)
    baseline = next(c for c in sweep.cells if c.values == (1.0, 2, 1.0))
    evaluated = [c for c in sweep.cells if c.values[0] == 0.01]  # the fix and the best cell
    for trial in [t.path for c in (baseline, *evaluated) for t in c.trials]:
        fake_evaluation(trial, "checkpoint_000006", [10.0, 12.0])
    write_report(root, reference_episodes=0, reps=REPS, evaluate_episodes=2)
    report = (root / "report.md").read_text()
    evaluation = section(report, "Trained policies against WAIT, the heuristic and the oracle")
    trained = [line.split(" | ")[0] for line in evaluation.splitlines()
               if line.startswith("| trained: ")]
    assert trained == ["| trained: the baseline (gain=1.0,depth=2,coef=1.0)",
                       "| trained: the seed document's fix (gain=0.01,depth=4,coef=1.0)",
                       "| trained: the best final EV (gain=0.01,depth=2,coef=1.0)"]
    assert "Not evaluated" not in evaluation
    cells = section(report, "Cells")
    assert "| 1.0 | 2 | 1.0 | 2 |" in cells and "| the baseline |" in cells


TINY_ENV = {"n_train": 128, "n_val": 64, "max_epochs": 3}  # env steps of milliseconds


def test_signal_seeds_measure_the_ceiling_of_the_sweeps_own_env_once(tmp_path):
    root = fake_sweep(tmp_path / "sweep", seeds=1, overrides=TINY_ENV)
    write_signal(tmp_path, reward=OTHER_REWARD, max_epochs=3)  # beside it, for another reward
    sweep = load_sweep(root)
    assert measure_signal(sweep, 0) == [] and not (root / "signal.json").exists()
    assert measure_signal(sweep, 2) == [root / "signal.json", root / "signal.md"]
    meta = json.loads((root / "signal.json").read_text())["meta"]
    assert (meta["profile"], meta["reward"], meta["max_epochs"]) == ("quick", QUICK_REWARD, 3)
    assert meta["seeds"] == [0, 1] and meta["env_config"]["n_train"] == 128
    ceiling, note = ceiling_for(sweep)  # what the report shows now
    assert note == "" and ceiling["path"] == root / "signal.json"
    assert ceiling["states"] == 6  # the random policy's 2 episodes x 3 steps
    stamp = (root / "signal.json").stat().st_mtime_ns
    assert measure_signal(sweep, 2) == []  # it applies now: not measured again
    assert (root / "signal.json").stat().st_mtime_ns == stamp
    mixed = fake_sweep(tmp_path / "mixed", seeds=1, grid={"value_coef": [1.0],
                                                          "n_train": [128, 256]},
                       overrides={"n_val": 64, "max_epochs": 3})
    with pytest.raises(ValueError, match="^--signal-seeds: the trials run 2 different env "
                       "settings; one signal.json cannot serve them"):
        measure_signal(load_sweep(mixed), 2)
    (mixed / "sweep.json").unlink()
    with pytest.raises(ValueError, match=f"^--signal-seeds: {mixed} has no sweep.json"):
        measure_signal(load_sweep(mixed), 2)


@pytest.mark.parametrize("flag", ["--evaluate-episodes", "--signal-seeds"])
def test_report_episode_counts_are_checked(tmp_path, capsys, flag):
    assert main(["report", str(tmp_path), flag, "1"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"esper-rllib report: error: {flag} 1: allowed: 0 (off) or an int >= 2"
