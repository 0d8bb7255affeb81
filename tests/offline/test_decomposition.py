"""The decomposition of the critic's EV gap: which numbers each level reads, and which online
trials count as the same config."""

import csv

import pytest

from esper_rllib.analysis.stats import bootstrap_iqm
from esper_rllib.offline.decomposition import (
    DATA_EPISODES,
    RECIPE_STEPS,
    cell_knobs,
    decompose,
    load_online,
    online_estimates,
    render_table,
)
from esper_rllib.offline.fit_summary import summarize_curve
from esper_rllib.run.config import ConfigError, resolve_knobs

STEPS = (0, 8, 64)
SIZES = (DATA_EPISODES, 100)


def _curve():
    """held-out EV = step/100 + size/1000 + seed/10000 (so every level is a known number); the
    fix cell's is 0.1 lower; train EV and loss unused here."""
    rows = []
    for cell, offset in (("broken", 0.0), ("fix", -0.1)):
        for size in SIZES:
            for step in STEPS:
                for seed in range(3):
                    ev = step / 100 + size / 1000 + seed / 10000 + offset
                    rows.append({"cell": cell, "seed": seed, "train_episodes": size,
                                 "step": step, "heldout_ev": ev, "train_ev": ev,
                                 "value_loss": 1.0})
    return rows


def _ablation(folder, rows):
    folder.mkdir()
    with open(folder / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["trial", "value_head_gain", "value_head_depth",
                                               "value_coef", "seed", "value_head_layernorm",
                                               "final_ev", "final_ev_return"],
                                restval="")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_levels_read_the_right_curve_points_and_online_trials(tmp_path):
    cells = {"broken": cell_knobs(resolve_knobs("quick", "seed_before")),
             "fix": cell_knobs(resolve_knobs("quick", "seed_after"))}
    online_dir = _ablation(tmp_path / "seed-quick-aligned", [
        {"trial": f"b{s}", "value_head_gain": 1.0, "value_head_depth": 2, "value_coef": 0.5,
         "seed": s, "value_head_layernorm": False, "final_ev": -1.0 - s} for s in range(3)] + [
        {"trial": f"f{s}", "value_head_gain": 0.01, "value_head_depth": 4, "value_coef": 1.0,
         "seed": s, "value_head_layernorm": True, "final_ev": 0.001 * s,
         "final_ev_return": -0.5 - 0.1 * s} for s in range(3)] + [
        # Another config (value_coef 0.5 on the fix's head): matches neither cell.
        {"trial": "x", "value_head_gain": 0.01, "value_head_depth": 4, "value_coef": 0.5,
         "seed": 0, "value_head_layernorm": True, "final_ev": 9.0}])
    online = load_online(str(online_dir), "quick")
    ceiling = {"estimate": 0.4, "low": 0.3, "high": 0.5, "states": 60}
    rows = decompose(summarize_curve(_curve()), cells, ceiling, online, "quick")
    assert [(r.role, r.cell) for r in rows] == [
        ("broken head", "broken"), ("seed document's fix", "fix"), ("best fit cell", "broken")]
    broken, fix = rows[0], rows[1]
    seeds = [s / 10000 for s in range(3)]
    expected = [0.64 + 0.1 + s for s in seeds], [0.64 + 0.032 + s for s in seeds], [
        0.08 + 0.032 + s for s in seeds]
    assert broken.levels[0].value == 0.4
    for level, values in zip(broken.levels[2:5], expected, strict=True):
        assert level.value == pytest.approx(bootstrap_iqm(values).value)
    # What the observation tells: the best learner (here the broken cell itself), for every row.
    assert broken.levels[1] == broken.levels[2] == fix.levels[1]
    assert broken.observation_learner == fix.observation_learner == "critic broken @ 64"
    # The broken trials' sweep predates final_ev_return: that level is missing, not 0.
    assert broken.levels[5].format() == "n/a"
    assert broken.levels[6].value == pytest.approx(-2.0)
    assert fix.levels[2].value == pytest.approx(broken.levels[2].value - 0.1)
    assert fix.levels[5].value == pytest.approx(-0.6)  # vs the return-to-go
    assert fix.levels[6].value == pytest.approx(0.001)  # vs the GAE targets
    assert RECIPE_STEPS == 8
    table = "\n".join(render_table(rows))
    assert ("information -0.340, learner +0.000, data +0.068, optimisation +0.560, online n/a"
            in table)
    assert "learner +0.100, data +0.068" in table  # the fix's critic is 0.1 below the best
    assert "(critic broken @ 64)" in table
    # The online gap runs to the EV against the return-to-go (the offline levels' target).
    fix_eight_steps = fix.levels[4].value
    assert f"online {fix_eight_steps + 0.6:+.3f};" in table


def test_online_folder_without_a_known_sweep_is_refused(tmp_path):
    folder = _ablation(tmp_path / "mystery", [])
    with pytest.raises(ConfigError, match="give DIR@SWEEP"):
        load_online(str(folder), "quick")
    assert load_online(f"{folder}@extended", "quick") == []


def test_a_replay_without_value_steps_matches_the_config_without_one(tmp_path):
    # budget's baseline cell (critic_steps 0, critic_replay 3) trains exactly as the fix: the
    # learner keeps no batches without a value phase. With value steps the replay matters.
    fix = cell_knobs(resolve_knobs("quick", "seed_after"))
    head = {"trial": "t", "value_head_gain": 0.01, "value_head_depth": 4, "value_coef": 1.0,
            "value_head_layernorm": True, "seed": 0, "final_ev": 0.5}
    fields = [*head, "critic_steps", "critic_replay"]
    folder = tmp_path / "budget-quick"
    folder.mkdir()
    with open(folder / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerow({**head, "critic_steps": 0, "critic_replay": 3})
        writer.writerow({**head, "trial": "u", "final_ev": 9.0, "critic_steps": 32,
                         "critic_replay": 3})
    online = load_online(f"{folder}@budget", "quick")
    (estimate, _), source = online_estimates(online, fix)
    assert estimate.format() == "n/a" and str(folder) in source  # matched t only; no return EV
    (_, on_gae), _ = online_estimates(online, fix)
    assert on_gae.value == pytest.approx(0.5)
