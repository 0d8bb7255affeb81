"""The data law of critic-fit's report: a line EV = a + b ln(n) through the last-step IQMs."""

import math

import pytest

from esper_rllib.offline.data_law import data_law_lines, data_laws, fit_law
from esper_rllib.offline.fit_summary import summarize_curve


def test_the_line_goes_through_exact_log_points_and_inverts():
    sizes = [32, 128, 512]
    law = fit_law("x", False, sizes, [0.01 + 0.02 * math.log(n) for n in sizes])
    assert law.slope == pytest.approx(0.02) and law.intercept == pytest.approx(0.01)
    assert law.per_doubling == pytest.approx(0.02 * math.log(2))
    assert law.episodes_for(0.01 + 0.02 * math.log(2048)) == pytest.approx(2048)
    # A flat or falling line never reaches a higher EV.
    assert fit_law("y", True, sizes, [0.05, 0.04, 0.03]).episodes_for(0.2) is None


def _rows(cell, kind, ev_of):
    rows = []
    for n in (32, 128, 512):
        for seed in range(3):
            steps = (None,) if kind == "reference" else (0, 8, 64)
            rows += [{"cell": cell, "seed": seed, "train_episodes": n, "step": s,
                      # Only the last step counts: earlier steps are better, and ignored.
                      "heldout_ev": ev_of(n) + (0.5 if s in (0, 8) else 0.0), "train_ev": 0.5,
                      "value_loss": 0.1, "kind": kind} for s in steps]
    return rows


def test_laws_use_the_last_step_and_the_references_and_say_when_a_target_is_never_reached():
    rows = (_rows("critic_fix", "critic", lambda n: 0.03 * math.log(n / 16))
            + _rows("trees", "reference", lambda n: 0.05))
    laws = {law.learner: law for law in data_laws(summarize_curve(rows))}
    assert laws["critic_fix"].slope == pytest.approx(0.03, abs=1e-9)
    assert laws["critic_fix"].evs[0] == pytest.approx(0.03 * math.log(2))
    assert laws["trees"].reference and laws["trees"].episodes_for(0.1) is None
    ceiling = {"estimate": 0.4, "low": 0.35, "high": 0.45, "policy": "random"}
    text = "\n".join(data_law_lines(list(laws.values()), ceiling, "plots"))
    # 25% of 0.4 = 0.1 = 0.03 ln(n / 16) at n = 16 e^(10/3).
    assert f"{16 * math.exp(0.1 / 0.03):,.0f}" in text
    assert "trees (reference)" in text and "never (flat or falling)" in text


def test_fewer_than_three_sizes_make_no_law():
    rows = [r for r in _rows("c", "critic", lambda n: 0.1) if r["train_episodes"] != 512]
    assert data_laws(summarize_curve(rows)) == []
    assert data_law_lines([], None, "plots") == []


def test_the_plot_is_written(tmp_path):
    from esper_rllib.offline.data_law import plot_data_law

    rows = _rows("critic_fix", "critic", lambda n: 0.03 * math.log(n / 16))
    ceiling = {"estimate": 0.4, "low": 0.35, "high": 0.45, "policy": "random"}
    path = plot_data_law(data_laws(summarize_curve(rows)), ceiling, tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
