"""critic-fit's reference learners: what they explain on probes, their curve.csv rows, the
features they read, and the decomposition's "what the observation tells"."""

import math

import gymnasium as gym
import numpy as np
import pytest

from envs.contract import N_BLUEPRINTS
from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import make_behaviour
from esper_rllib.offline.decomposition import (
    cell_knobs,
    decompose,
    observation_level,
    render_table,
)
from esper_rllib.offline.fit_plan import plan_fit
from esper_rllib.offline.fit_run import (
    CURVE_COLUMNS,
    read_curve,
    split_records,
    training_set,
    write_curve,
)
from esper_rllib.offline.fit_summary import summarize_curve
from esper_rllib.offline.record import plan_recording, play_episode
from esper_rllib.offline.reference import (
    design_matrix,
    fit_reference,
    parse_references,
    step_features,
)
from esper_rllib.run.config import ConfigError, resolve_knobs

# Trees need rows: min_samples_leaf 40 leaves a 36-episode one-step probe unsplit.
EPISODES = 200
NAMES = ["trees", "ridge", "trees_k4", "ridge_k4"]


def _recording(folder, env, episodes):
    plan = plan_recording("quick", {"env": env}, "random", episodes, 0)
    e = gym.make(f"envs:{env}").unwrapped
    behaviour = make_behaviour("random", None, tuple(int(n) for n in e.action_space.nvec))
    for i in range(episodes):
        dataset.write_episode(folder, play_episode(e, behaviour, i, plan.env_seed(i)))
    dataset.write_meta(folder, {**plan.meta(), "complete": True})
    return folder


def _reference_evs(folder):
    """{name: held-out EV} of every reference fitted as a critic-fit trial would (seed 0, the
    whole training pool)."""
    plan = plan_fit(folder, overrides=[], grid=[], trunks="shared", seeds=1, steps=1,
                    train_episodes="all", references="trees,ridge")
    assert plan.references == NAMES
    pool, held = split_records(plan, dataset.read_episodes(folder))
    train = training_set(pool, len(pool), 0)
    return {name: fit_reference(name, train, held, gamma=plan.knobs({})["gamma"], seed=0)
            for name in plan.references}


@pytest.mark.parametrize("env, bound", [("esper/Probe2-v0", "high"), ("esper/Probe4-v0", "low")])
def test_references_explain_what_the_observation_tells(tmp_path, env, bound):
    # Probe 2: the reward is an observation feature. Probe 4: it is set by the op taken, which
    # no observation shows.
    fits = _reference_evs(_recording(tmp_path, env, EPISODES))
    for name, fit in fits.items():
        if bound == "high":
            assert fit.heldout_ev >= 0.9, (name, fit)
        else:
            assert fit.heldout_ev <= 0.15, (name, fit)
    assert fits["ridge"].detail.startswith("alpha ")


def test_features_are_the_critics_inputs_plus_t(tmp_path):
    n_slots, T = 3, 6
    rng = np.random.default_rng(0)
    features = rng.normal(size=(T, 23 + 30 * n_slots)).astype(np.float32)
    blueprints = rng.integers(0, N_BLUEPRINTS + 1, size=(T, n_slots))
    mask = np.ones((T, 40), np.float32)
    obs = {"features": features, "blueprints": blueprints, "action_mask": mask}
    x = step_features(obs)
    assert x.shape == (T, features.shape[1] + n_slots * (N_BLUEPRINTS + 1))  # no action mask
    np.testing.assert_array_equal(x[:, :features.shape[1]], features)
    onehot = x[:, features.shape[1]:].reshape(T, n_slots, N_BLUEPRINTS + 1)
    np.testing.assert_array_equal(onehot.argmax(-1), blueprints)
    assert (onehot.sum(-1) == 1).all()
    record = dataset.EpisodeRecord(0, 0, obs, np.zeros((T, 7), np.int64), np.zeros(T),
                                   np.zeros(T), True, False, math.nan)
    k1, k4 = design_matrix(record), design_matrix(record, stack=4)
    np.testing.assert_array_equal(k1[:, -1], np.arange(T))
    np.testing.assert_array_equal(k1[:, :-1], x)
    f = x.shape[1]
    assert k4.shape == (T, 4 * f + 1)
    np.testing.assert_array_equal(k4[:, :f], x)  # the current step first
    np.testing.assert_array_equal(k4[3:, 3 * f:4 * f], x[:-3])  # three steps back
    assert (k4[:3, 3 * f:4 * f] == 0).all()  # before the episode's start: zeros


def test_reference_flag_values():
    assert parse_references("none") == []
    assert parse_references("ridge") == ["ridge", "ridge_k4"]
    for bad in ("forest", "trees,trees", "", "none,trees", "trees_k4"):
        with pytest.raises(ValueError):
            parse_references(bad)


def test_bad_reference_flag_is_a_config_error(tmp_path):
    folder = _recording(tmp_path, "esper/Probe2-v0", 8)
    with pytest.raises(ConfigError, match="--reference forest: allowed: comma-separated values "
                                          "of trees | ridge, or none"):
        plan_fit(folder, overrides=[], grid=[], trunks="shared", seeds=1, steps=1,
                 train_episodes="all", references="forest")
    with pytest.raises(ConfigError, match="--grid gamma"):
        plan_fit(folder, overrides=[], grid=["gamma=0.9,0.99"], trunks="shared", seeds=1,
                 steps=1, train_episodes="all", references="ridge")


def _critic_rows(cell, base):
    return [{"cell": cell, "seed": seed, "train_episodes": size, "step": step,
             "heldout_ev": base + step / 100 + size / 1000, "train_ev": 0.9, "value_loss": 1.0,
             "kind": "critic"}
            for seed in range(3) for size in (32, 100) for step in (0, 8, 64)]


def _reference_rows(name, ev):
    return [{"cell": name, "seed": seed, "train_episodes": size, "step": None,
             "heldout_ev": ev - (100 - size) / 1000, "train_ev": 0.95, "value_loss": 0.01,
             "kind": "reference"} for seed in range(3) for size in (32, 100)]


def test_a_reference_row_round_trips_through_curve_csv(tmp_path):
    rows = _critic_rows("base", 0.0) + _reference_rows("trees", 0.5)
    write_curve(tmp_path / "curve.csv", rows)
    back = read_curve(tmp_path / "curve.csv")
    def key(r):
        return r["cell"], r["seed"], r["train_episodes"], -1 if r["step"] is None else r["step"]

    assert sorted(back, key=key) == sorted(rows, key=key)
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == ",".join(CURVE_COLUMNS)
    assert "trees,0,100,,0.5,0.95,0.01,reference" in lines
    summary = summarize_curve(back)
    assert summary.cells == ["base"] and summary.references == ["trees"]
    assert summary.reference("trees", 100).value == pytest.approx(0.5)
    assert summary.steps == [0, 8, 64]  # a reference adds no step


def test_a_curve_csv_from_before_references_loads(tmp_path):
    path = tmp_path / "curve.csv"
    path.write_text("cell,seed,train_episodes,step,heldout_ev,train_ev,value_loss\n"
                    "base,0,8,0,-0.5,-0.4,1.0\nbase,0,8,8,0.1,0.2,0.5\n")
    rows = read_curve(path)
    assert [r["kind"] for r in rows] == ["critic", "critic"] and rows[1]["step"] == 8
    summary = summarize_curve(rows)
    assert summary.references == [] and summary.get("base", 8, 8).value == pytest.approx(0.1)


@pytest.mark.parametrize("reference_ev, winner", [(0.9, "trees (reference)"),
                                                  (0.5, "critic base @ 64")])
def test_the_observation_level_is_the_best_of_references_and_critics(reference_ev, winner):
    # The critic's best at all data: 0.64 + 0.1 = 0.74; the trees at all data: reference_ev.
    rows = _critic_rows("base", 0.0) + _critic_rows("other", -0.3) + _reference_rows(
        "trees", reference_ev) + _reference_rows("ridge", 0.2)
    summary = summarize_curve(rows)
    level, learner = observation_level(summary)
    assert learner == winner
    assert level.value == pytest.approx(max(reference_ev, 0.74))
    cells = {"base": cell_knobs(resolve_knobs("quick", "seed_after")),
             "other": cell_knobs(resolve_knobs("quick", "seed_before"))}
    out = decompose(summary, cells, None, [], "quick")
    other = next(r for r in out if r.cell == "other")  # not the best cell: still the same level
    assert other.levels[1] == level and other.observation_learner == winner
    assert f"({winner})" in "\n".join(render_table(out))
