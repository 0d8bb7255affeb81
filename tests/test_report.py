"""The report's statistics (IQM, bootstrap intervals, main effects), per-trial summaries and the
rendered report, on hand-made data."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from esper_rllib.config import resolve_knobs
from esper_rllib.postmortem import nearest_iterations, postmortem
from esper_rllib.report import load_sweep, write_report
from esper_rllib.stats import bootstrap_iqm, iqm, main_effects, mean_difference
from tuning.plan import plan_sweep
from tuning.results import TrialRecord, read_ablation_csv, summarize, write_ablation_csv


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
    assert bootstrap_iqm(data) == est  # seeded
    assert bootstrap_iqm([3.0] * 5).low == bootstrap_iqm([3.0] * 5).high == 3.0
    single = bootstrap_iqm([0.7])
    assert (single.value, single.n) == (0.7, 1) and single.format() == "0.7 (n=1)"
    assert bootstrap_iqm([math.nan]).format() == "n/a"


def test_mean_difference_and_main_effects():
    exact = mean_difference([1, 1, 1], [3, 3, 3])
    assert (exact.value, exact.low, exact.high) == (2.0, 2.0, 2.0)
    noisy = mean_difference([0, 1, 2], [10, 11, 12])
    assert noisy.value == pytest.approx(10.0) and 8 <= noisy.low < 10 < noisy.high <= 12
    effects = main_effects(["a", "b", "a", "b", "c"], [1, 3, 2, 4, 0])
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


def fake_sweep(root: Path, seeds: int = 2) -> Path:
    """A seed-sweep folder with hand-made results: final EV is set by the gain alone."""
    plan = plan_sweep("seed", "quick", resolve_knobs, seeds=seeds)
    plan.save(root)
    for i, values in enumerate(itertools.product(*plan.axes.values())):
        params = {**plan.param_space(), **dict(zip(plan.axes, values, strict=True))}
        ev = (0.5 if params["value_head_gain"] == 0.01 else -0.2) + 0.01 * params["seed"]
        trial = root / f"EsperPPO_x_{i:05d}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps(params))
        lines = []
        for it in range(1, 7):
            verdict = ("strong" if ev > 0.2 else "failure") if it > 5 else "undetermined"
            esper = {"explained_variance": ev, "ev_trailing": ev, "value_loss": 10 / it,
                     "clip_ratio": 2.0, "kl": 0.01, "q_spread": 0.1, "episode_val_acc": 60.0,
                     "verdict": verdict, "verdict_code": {"strong": 2, "failure": 0}.get(
                         verdict, -1), "op_count_WAIT": 3, "op_count_GERMINATE": 1,
                     "flag_ev_negative": ev < 0 and it > 5}
            lines.append(json.dumps({"training_iteration": it, "timesteps_total": 8 * it,
                                     "done": it == 6, "esper": esper}))
        (trial / "result.json").write_text("\n".join(lines) + "\n")
    write_ablation_csv(root, plan.columns)
    return root


def test_report_on_a_hand_made_sweep(tmp_path):
    root = fake_sweep(tmp_path)
    sweep = load_sweep(root)
    assert len(sweep.cells) == 8 and all(len(c.trials) == 2 for c in sweep.cells)
    written = write_report(root, reference_episodes=0)
    report = (root / "report.md").read_text()
    assert written[0] == root / "report.md" and len(written) == 4
    rows = [line for line in report.splitlines() if line.startswith("| 1.0 |")
            or line.startswith("| 0.01 |")]
    assert len(rows) == 8
    fix = next(r for r in rows if r.startswith("| 0.01 | 4 | 1.0 | 2 |"))
    assert "0.505 [0.5, 0.51]" in fix and "2 strong" in fix and "the seed document's fix" in fix
    broken = next(r for r in rows if r.startswith("| 1.0 | 2 | 0.5 | 2 |"))
    assert "2 failure" in broken and "the broken run" in broken
    # Gain sets final EV (+0.7; seeds differ by 0.01); depth does nothing, and its interval
    # spans the gain's spread because the other axes are averaged over.
    assert "| value_head_gain | 0.01 vs 1.0 | +0.7 [+0.695, +0.705] |" in report
    assert "| value_head_depth | 4 vs 2 | +0 [-0.349, +0.35] |" in report
    csv_rows = read_ablation_csv(root / "ablation.csv")
    assert len(csv_rows) == 16 and {r["verdict"] for r in csv_rows} == {"strong", "failure"}


def test_postmortem_tables(tmp_path):
    root = fake_sweep(tmp_path, seeds=1)
    text = postmortem(next(root.glob("EsperPPO_x_00000")))
    assert "| 1 | 10 |" in text and "| 5 | 2 |" in text and "| 6 | 1.667 |" in text
    assert "| WAIT | 18 | 75.0% |" in text  # op counts summed over all iterations
    assert "| ev_negative | 1 | 6 | 6 |" in text
    assert "Final verdict: **failure**" in text
    assert nearest_iterations(list(range(1, 13))) == [1, 5, 10, 12]
    assert nearest_iterations(list(range(1, 40))) == [1, 5, 10, 14, 20, 27, 32]
