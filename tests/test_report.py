"""The report's statistics (rliable: IQM, stratified-bootstrap intervals, probability of
improvement; main effects), per-trial summaries, the EV ceiling loader and the rendered report with
its plots, on hand-made data."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rliable import metrics

from esper_rllib.cli import main
from esper_rllib.config import resolve_knobs
from esper_rllib.postmortem import nearest_iterations, postmortem
from esper_rllib.report import (
    analyse,
    ceiling_for,
    load_ev_ceiling,
    load_sweep,
    render,
    write_report,
)
from esper_rllib.report_plots import PANEL_METRICS, panel_figure
from esper_rllib.stats import (
    bootstrap_iqm,
    column_iqm,
    improvement,
    iqm,
    main_effects,
    mean_difference,
    probability_of_improvement,
)
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


def fake_sweep(root: Path, seeds: int = 2, grid: dict | None = None) -> Path:
    """A seed-sweep folder with hand-made results: final EV is set by the gain alone, final
    accuracy by the depth alone (+5 points at depth 4); seeds add 0.01 EV and 1 point."""
    plan = plan_sweep("seed", "quick", resolve_knobs, seeds=seeds, grid=grid)
    plan.save(root)
    for i, values in enumerate(itertools.product(*plan.axes.values())):
        params = {**plan.param_space(), **dict(zip(plan.axes, values, strict=True))}
        ev = (0.5 if params["value_head_gain"] == 0.01 else -0.2) + 0.01 * params["seed"]
        accuracy = 60.0 + 5 * (params["value_head_depth"] == 4) + params["seed"]
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
            lines.append(json.dumps({"training_iteration": it, "timesteps_total": 8 * it,
                                     "done": it == 6, "esper": esper}))
        (trial / "result.json").write_text("\n".join(lines) + "\n")
    write_ablation_csv(root, plan.columns)
    return root


CEILING = {"estimate": 0.4, "low": 0.33, "high": 0.47, "states": 32, "continuations": 8}


def write_signal(folder: Path, reward: str = QUICK_REWARD, max_epochs: int = QUICK_EPOCHS,
                 **random: object) -> Path:
    """signal.json as `esper-rllib signal` writes it (the parts the report reads)."""
    path = folder / "signal.json"
    path.write_text(json.dumps({"ev_ceiling": {"random": {**CEILING, **random}},
                                "policies": {}, "meta": {"profile": "quick", "reward": reward,
                                                         "max_epochs": max_epochs}}))
    return path


def section(report: str, title: str) -> str:
    return report.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_on_a_hand_made_sweep(tmp_path):
    root = fake_sweep(tmp_path / "seed-quick")
    sweep = load_sweep(root)
    assert len(sweep.cells) == 8 and all(len(c.trials) == 2 for c in sweep.cells)
    write_signal(tmp_path)  # beside the experiment folder
    written = write_report(root, reference_episodes=0, reps=REPS)
    report = (root / "report.md").read_text()
    names = ["final_ev", "main_effects", "explained_variance", "value_loss", "clip_ratio"]
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
    assert ("The cell with the best final EV (value_head_gain=0.01, value_head_depth=2, "
            "value_coef=0.5): EV 0.505 of a possible 0.4 [0.33, 0.47] (EV ceiling under the "
            "random policy), 126.2% of it.") in ceiling
    assert f"`{tmp_path / 'signal.json'}`, reward {QUICK_REWARD}, profile quick" in ceiling
    assert "| 1.0 | 2 | 0.5 | -0.195 [-0.2, -0.19] | -48.8% |" in ceiling

    compared = section(report, "Does a cell beat the baseline?")
    assert "Against the broken run (value_head_gain 1.0, value_head_depth 2, value_coef 0.5)." \
        in compared
    # The fix has the gain (final EV) and the depth (accuracy); the best cell the gain only.
    assert ("| the seed document's fix (value_head_gain=0.01, value_head_depth=4, "
            "value_coef=1.0) | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |") in compared
    assert ("| the cell with the best final EV (value_head_gain=0.01, value_head_depth=2, "
            "value_coef=0.5) | 1.00 [1.00, 1.00] | 0.50 [") in compared

    effects = {line.split(" | ")[0][2:]: line.split(" | ")[1:]
               for line in section(report, "Main effects on final EV and final accuracy")
               .splitlines() if line.startswith("| value_")}
    assert effects["value_head_gain"][:2] == ["0.01 vs 1.0", "+0.7 [+0.695, +0.705]"]
    assert effects["value_head_gain"][2].startswith("+0 [")
    assert effects["value_head_depth"][1].startswith("+0 [")  # depth leaves EV alone...
    assert effects["value_head_depth"][2].startswith("+5 [")  # ...and moves accuracy
    csv_rows = read_ablation_csv(root / "ablation.csv")
    assert len(csv_rows) == 16 and {r["verdict"] for r in csv_rows} == {"strong", "failure"}
    # Seeded: the same folder gives the same report.
    assert render(sweep, analyse(sweep, REPS), None, written[1:]) == report


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
    root = fake_sweep(tmp_path, grid={"value_coef": [1.0]})
    write_report(root, reference_episodes=0, reps=REPS)
    report = (root / "report.md").read_text()
    compared = section(report, "Does a cell beat the baseline?")
    assert ("This sweep has no broken run (value_head_gain 1.0, value_head_depth 2, value_coef "
            "0.5): the baseline is its first cell, every axis at its first value "
            "(value_head_gain=1.0, value_head_depth=2, value_coef=1.0).") in compared
    assert "| the seed document's fix (value_head_gain=0.01, value_head_depth=4," in compared
    assert "| the cell with the best final EV (value_head_gain=0.01, value_head_depth=2," \
        in compared
    assert "No EV ceiling: no signal.json in or beside the experiment folder. Measure one with " \
        f"`esper-rllib signal --profile quick --set reward={QUICK_REWARD} --set " \
        f"max_epochs={QUICK_EPOCHS} --out {root}`." in report
    assert "](plots/final_ev.png)" in report


def test_ev_ceiling_loader(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    assert load_ev_ceiling(sweep_dir) is None
    beside = write_signal(tmp_path)
    assert load_ev_ceiling(sweep_dir) == {"policy": "random", **CEILING, "profile": "quick",
                                          "reward": QUICK_REWARD, "max_epochs": QUICK_EPOCHS,
                                          "path": beside}
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


def test_ceiling_that_does_not_apply_is_named_and_a_malformed_one_stops_the_report(tmp_path,
                                                                                   capsys):
    root = fake_sweep(tmp_path / "sweep", seeds=1)
    signal = write_signal(tmp_path, reward=OTHER_REWARD, max_epochs=3)
    hint = (f"Measure one with `esper-rllib signal --profile quick --set reward={QUICK_REWARD} "
            f"--set max_epochs={QUICK_EPOCHS} --out {root}`.")
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
