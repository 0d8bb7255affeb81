"""esper-rllib critic-fit on probe recordings: what a critic can and cannot explain, the curve
and report it writes, and bad input."""

import csv
import json

import gymnasium as gym
import pytest
import torch

from envs.contract import action_space, observation_space
from esper_rllib.analysis.stats import bootstrap_iqm
from esper_rllib.cli import main
from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import build_module, make_behaviour
from esper_rllib.offline.critic_fit import (
    Critic,
    critic_ev,
    fit_critic,
    log_spaced_steps,
    to_episodes,
)
from esper_rllib.offline.fit_plan import plan_fit
from esper_rllib.offline.fit_run import CURVE_COLUMNS, split_records, training_set
from esper_rllib.offline.record import plan_recording, play_episode

SEEDS = 5


def _recording(folder, env, policy, episodes):
    """A recording as `record` writes it, played in this process (no Ray)."""
    plan = plan_recording("quick", {"env": env}, policy, episodes, 0)
    e = gym.make(f"envs:{env}").unwrapped
    module = (build_module(plan.knobs, 0, e.observation_space, e.action_space)
              if policy == "initial" else None)
    behaviour = make_behaviour(policy, module, tuple(int(n) for n in e.action_space.nvec))
    for i in range(episodes):
        dataset.write_episode(folder, play_episode(e, behaviour, i, plan.env_seed(i)))
    dataset.write_meta(folder, {**plan.meta(), "complete": True})
    return folder


def _heldout_evs(folder, overrides, steps=200, trunk="shared"):
    """Held-out EV after ``steps`` for each of SEEDS fits on the whole training pool."""
    plan = plan_fit(folder, overrides=overrides, grid=[], trunks=trunk, seeds=SEEDS,
                    steps=steps, train_episodes="all")
    knobs = plan.knobs({})
    pool, held = split_records(plan, dataset.read_episodes(folder))
    heldout = to_episodes(held, knobs["gamma"])
    evs = []
    for seed in plan.seeds:
        train = to_episodes(training_set(pool, len(pool), seed), knobs["gamma"])
        curve = fit_critic(knobs, train, heldout, seed=seed, trunk=trunk, steps=steps,
                           observation_space=observation_space(3),
                           action_space=action_space(3))
        assert [p.step for p in curve] == log_spaced_steps(steps)
        evs.append(curve[-1].heldout_ev)
    return evs


@pytest.fixture(scope="module")
def probe2(tmp_path_factory):
    return _recording(tmp_path_factory.mktemp("probe2"), "esper/Probe2-v0", "random", 48)


@pytest.fixture(scope="module")
def probe4(tmp_path_factory):
    return _recording(tmp_path_factory.mktemp("probe4"), "esper/Probe4-v0", "random", 48)


@pytest.mark.parametrize("critic, trunk", [("v", "shared"), ("q_op", "shared"),
                                           ("v", "frozen"), ("v", "separate")])
def test_probe2_reward_in_the_observation_is_explained(probe2, critic, trunk):
    evs = _heldout_evs(probe2, ["lr=0.01", f"critic={critic}", "value_head_gain=1.0"],
                       trunk=trunk)
    estimate = bootstrap_iqm(evs)
    assert estimate.low > 0.9, (estimate, evs)


def test_probe4_coin_flip_is_not_explained_by_the_state(probe4):
    estimate = bootstrap_iqm(_heldout_evs(probe4, ["lr=0.01", "critic=v",
                                                   "value_head_gain=1.0"]))
    # Every probe-4 observation is the same: V is one number, and a constant explains nothing.
    assert abs(estimate.value) < 0.05
    assert estimate.low - 1e-9 <= 0.0 <= estimate.high + 1e-9, estimate


def test_probe4_q_of_the_op_taken_explains_the_op_reward(probe4):
    """The q_op critic regresses Q(s, op taken), and the op alone sets probe 4's reward."""
    estimate = bootstrap_iqm(_heldout_evs(probe4, ["lr=0.01", "critic=q_op",
                                                   "value_head_gain=1.0"]))
    assert estimate.low > 0.9, estimate


@pytest.mark.ray
def test_cli_writes_the_curve_report_and_tensorboard(probe2, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["critic-fit", str(probe2), "--set", "lr=0.01", "--grid",
                 "value_head_gain=1.0,0.01", "--seeds", "1", "--steps", "8",
                 "--train-episodes", "4,all", "--out", str(out)]) == 0
    with open(out / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CURVE_COLUMNS
    steps = log_spaced_steps(8)
    critic_rows = [r for r in rows if r["kind"] == "critic"]
    assert len(critic_rows) == 2 * 2 * len(steps)  # cells x sizes x measured steps
    assert {(r["cell"], r["train_episodes"]) for r in critic_rows} == {
        (c, n) for c in ("gain=1.0", "gain=0.01") for n in ("4", "36")}
    # The references (on by default): one row per reference x size x seed, no step.
    ref_rows = [r for r in rows if r["kind"] == "reference"]
    assert {(r["cell"], r["train_episodes"], r["step"]) for r in ref_rows} == {
        (c, n, "") for c in ("trees", "ridge", "trees_k4", "ridge_k4") for n in ("4", "36")}
    assert len(ref_rows) == 4 * 2
    report = (out / "report.md").read_text()
    assert "| gain=1.0 | 36 |" in report and "held-out EV @ 8" in report
    assert "| ridge (reference) | 36 |" in report
    assert (out / "plots" / "learning_curves.png").stat().st_size > 0
    assert len(list((out / "trials").rglob("events.out.tfevents*"))) >= 4
    # The report is remade from the folder alone (fit.json is written before the trials run,
    # so an interrupted fit can be reported too); without fit.json, one line and exit 2.
    (out / "report.md").unlink()
    assert main(["critic-fit", str(probe2), "--report-only", "--out", str(out)]) == 0
    assert "| gain=1.0 | 36 |" in (out / "report.md").read_text()
    (out / "fit.json").unlink()
    capsys.readouterr()
    assert main(["critic-fit", str(probe2), "--report-only", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no fit.json" in err, err


def test_a_critic_with_dropout_is_judged_without_it(probe2):
    # critic_dropout acts on the gradient steps only: the curve's EVs are of one deterministic
    # critic, and judging leaves the module training.
    plan = plan_fit(probe2, overrides=["critic_dropout=0.5"], grid=[], trunks="mlp", seeds=1,
                    steps=1, train_episodes="all")
    knobs = plan.knobs({"trunk": "mlp"})
    critic = Critic.build(knobs, 0, "mlp", observation_space(3), action_space(3))
    episodes = to_episodes(dataset.read_episodes(probe2), knobs["gamma"])
    critic.module.train()
    with torch.no_grad():
        assert not torch.equal(critic.values(episodes), critic.values(episodes))
    assert critic_ev(critic, episodes) == critic_ev(critic, episodes)
    assert critic.module.training


@pytest.mark.ray
def test_set_may_hold_knobs_that_only_the_grids_preset_allows(probe2, tmp_path):
    # critic_fix's own critic trunk is what allows its piecewise-linear features.
    out = tmp_path / "fit"
    assert main(["critic-fit", str(probe2), "--grid", "preset=critic_fix", "--set",
                 "critic_feature_bins=4", "--seeds", "1", "--steps", "2", "--train-episodes",
                 "all", "--reference", "none", "--out", str(out)]) == 0
    fit = json.loads((out / "fit.json").read_text())
    (cell,) = fit["cells"].values()
    assert cell["critic_feature_bins"] == 4 and fit["cell_trunks"] == {"preset=critic_fix": "mlp"}
    assert fit["recorded_env"]["reward"] == "aligned"


@pytest.mark.parametrize("argv, message", [
    (["--set", "num_epochs=2"], "--set num_epochs: not for critic-fit (PPO's passes over "
                                "each batch)"),
    (["--set", "iterations=2"], "--set iterations: not a model or learner knob; allowed:"),
    (["--grid", "clip_param=0.1,0.2"], "--grid clip_param: not a model or learner knob"),
    (["--set", "reward=shaped"], "--set reward='shaped': the dataset was recorded with "
                                 "reward='aligned'"),
    (["--set", "env=esper/Probe4-v0"], "the dataset was recorded with env='esper/Probe2-v0'"),
    (["--set", "critic_trunk=separate"], "--set critic_trunk: not for critic-fit"),
    (["--trunk", "tied"], "--trunk tied: allowed"),
    (["--train-episodes", "1000"], "--train-episodes 1000: the recording's training pool "
                                   "has 36 episodes"),
    # Offline a minibatch splits the training episodes: bounded by the smallest size.
    (["--set", "minibatches=9", "--train-episodes", "8,all"],
     "minibatches=9: each minibatch holds whole episodes; allowed: 1..8 (the smallest "
     "--train-episodes)"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(probe2, tmp_path, capsys, argv, message):
    out = tmp_path / "fit"
    assert main(["critic-fit", str(probe2), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_minibatches_split_the_training_episodes_not_the_online_batch(probe2):
    # The recording's profile (quick) has 4 episodes per online batch; a fit on 36 episodes
    # may take 8 minibatches of them.
    plan = plan_fit(probe2, overrides=["minibatches=8"], grid=[], trunks="shared", seeds=1,
                    steps=8, train_episodes="all")
    assert plan.knobs({})["minibatches"] == 8


def test_no_such_data_folder(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["critic-fit", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing: no such folder" in err
    assert not out.exists()
