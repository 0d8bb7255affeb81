"""Probe environments (envs/probes.py) through the whole RLlib pipeline: our module, distribution,
learner, GAE, env runner and callbacks, built by the one config builder.

If probe N fails while the ones before it pass, the bug is in what N adds. Small model, big
learning rate and a few gradient steps per batch keep them cheap; each trains until its
criterion holds on two consecutive iterations (or fails at a cap).
"""

import math

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns

from envs.contract import Op
from envs.probes import ALT_OP, REWARDED_OP, SIGNAL_FEATURE, Probe3Env, Probe5Env
from esper_rllib.ppo.env_runner import SEED_STRIDE, SeedOnceEnvRunner
from esper_rllib.run.config import build_ppo_config, resolve_knobs

pytestmark = pytest.mark.ray  # the module's local Ray (an autouse fixture)

SMALL = {"lstm_hidden": 32, "feature_dim": 32, "head_hidden": 32, "blueprint_head_hidden": (32,)}
FAST = {"episodes_per_batch": 16, "lr": 1e-2, "num_epochs": 2, "entropy_coef": 0.0}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def build(probe: int, **overrides):
    knobs = resolve_knobs("quick", overrides={"env": f"esper/Probe{probe}-v0", **SMALL, **FAST,
                                              **overrides})
    return build_ppo_config(knobs).build_algo()


def train_until(algo, holds, cap: int) -> list[dict]:
    """Train until ``holds(result["esper"])`` on two consecutive iterations; all results."""
    history = []
    streak = 0
    while len(history) < cap and streak < 2:
        history.append(algo.train()["esper"])
        streak = streak + 1 if holds(history[-1]) else 0
    return history


def module_outputs(algo, observations: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(values (T,), op probabilities (T, 6)) of one episode's observations, run as a sequence."""
    module = algo.get_module()
    obs = {k: torch.as_tensor(np.stack([o[k] for o in observations]))[None] for k in
           observations[0]}
    state = {k: torch.as_tensor(v)[None] for k, v in module.get_initial_state().items()}
    batch = {Columns.OBS: obs, Columns.STATE_IN: state}
    with torch.no_grad():
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0, :, :len(Op)]
        values = module.compute_values(batch)[0] if module.critic_type == "v" else None
    probs = torch.softmax(logits, -1).numpy()
    return (None if values is None else values.numpy()), probs


@pytest.mark.parametrize("critic", ["v", "q_op"])
def test_probe1_constant_reward_value_converges_to_one(critic):
    algo = build(1, critic=critic)
    history = train_until(algo, lambda m: abs(m["value_mean"] - 1) < 0.1
                          and m["value_loss"] < 0.01, cap=25)
    algo.stop()
    assert abs(history[-1]["value_mean"] - 1) < 0.1 and history[-1]["value_loss"] < 0.01
    # Every return is exactly 1, so Var(G) = 0: explained variance is undefined (NaN by its
    # definition) rather than 1 on this probe; probe 2 checks EV -> 1.
    assert math.isnan(history[-1]["explained_variance"])


def test_probe2_critic_tracks_the_observed_feature():
    algo = build(2, critic="v", num_epochs=4)
    history = train_until(algo, lambda m: min(m["explained_variance"],
                                              m["explained_variance_post"]) > 0.8, cap=40)
    algo.stop()
    assert history[0]["return_std"] > 0.1  # episodes differ (the runner's seeding)
    assert history[-1]["explained_variance"] > 0.8
    assert history[-1]["explained_variance_post"] > 0.8


def test_probe3_first_step_value_approaches_gamma():
    gamma = 0.9  # far enough from 1 to tell discounting apart from no discounting
    # Four epochs per batch, as probe 2: with two, the critic's fit at lr 1e-2 depends on the
    # random actions' policy gradients through the shared LSTM, and fails on 3-4 of 9 seeds
    # (the same on main and with the throughput changes; with four, 8 of 8 pass on both).
    algo = build(3, critic="v", gamma=gamma, num_epochs=4)
    env = Probe3Env()
    first, _ = env.reset(seed=0)
    second = env.step(env.action_space.sample())[0]

    def holds(_):
        values, _ = module_outputs(algo, [first, second])
        return abs(values[0] - gamma) < 0.05 and abs(values[1] - 1) < 0.05

    train_until(algo, holds, cap=30)
    values, _ = module_outputs(algo, [first, second])
    algo.stop()
    assert abs(values[0] - gamma) < 0.05 and abs(values[1] - 1) < 0.05


@pytest.mark.parametrize(("critic", "q_baseline"), [("v", "sampled_op"), ("q_op", "expected")])
def test_probe4_policy_learns_the_rewarding_op(critic, q_baseline):
    algo = build(4, critic=critic, q_baseline=q_baseline)
    history = train_until(algo, lambda m: m[f"op_frac_{REWARDED_OP.name}"] > 0.9, cap=20)
    algo.stop()
    assert history[-1][f"op_frac_{REWARDED_OP.name}"] > 0.9


def test_probe4_sampled_op_baseline_fits_the_taken_op_and_zeroes_its_advantage(record_property):
    # Q(s, op taken) as the GAE baseline: on this one-step probe the raw advantage is
    # r - Q(s, op taken), so once the critic fits the reward of each op every taken op's
    # advantage is ~0 and the op head only learns while Q is still off (here, from the
    # near-zero initial Q). Asserted: the critic fits and the raw advantage collapses with it.
    # Recorded (a finding, not a requirement): the rewarding op's fraction per iteration.
    algo = build(4, critic="q_op", q_baseline="sampled_op")
    history = train_until(algo, lambda m: m["value_loss"] < 0.01, cap=20)
    algo.stop()
    op_frac = [round(m[f"op_frac_{REWARDED_OP.name}"], 3) for m in history]
    record_property(f"op_frac_{REWARDED_OP.name}", op_frac)  # in the junit XML (--junitxml)
    assert len(op_frac) == len(history) and all(0.0 <= f <= 1.0 for f in op_frac)
    assert all(math.isfinite(m["value_loss"]) and math.isfinite(m["q_spread"]) for m in history)
    first, last = history[0], history[-1]
    assert last["value_loss"] < 0.01
    # At first Q ~ 0 (output gain 0.01), so the raw advantage is the reward itself ...
    assert first["pre_norm_advantage_std"] == pytest.approx(first["return_std"], rel=0.2)
    assert first["pre_norm_advantage_std"] > 0.2
    # ... and once Q fits, the taken op's raw advantage is ~0 whatever the op.
    assert abs(last["pre_norm_advantage_mean"]) < 0.05
    assert last["pre_norm_advantage_std"] < 0.1


def test_probe5_policy_conditions_on_the_state():
    algo = build(5, critic="v")
    env = Probe5Env()
    observations, seed = {}, 0
    while len(observations) < 2:  # one observation with each signal value
        obs, _ = env.reset(seed=seed)
        observations.setdefault(int(obs["features"][SIGNAL_FEATURE]), obs)
        seed += 1

    def holds(_):
        p_on = module_outputs(algo, [observations[1]])[1][0]
        p_off = module_outputs(algo, [observations[0]])[1][0]
        return p_on[REWARDED_OP] > 0.8 and p_off[ALT_OP] > 0.8

    train_until(algo, holds, cap=30)
    p_on = module_outputs(algo, [observations[1]])[1][0]
    p_off = module_outputs(algo, [observations[0]])[1][0]
    algo.stop()
    assert p_on[REWARDED_OP] > 0.8 and p_off[ALT_OP] > 0.8


def test_env_runner_seeds_each_env_once_and_distinctly():
    knobs = resolve_knobs("quick", overrides={"env": "esper/Probe2-v0", **SMALL, "rng_seed": 3,
                                              "num_env_runners": 2,
                                              "num_envs_per_env_runner": 2,
                                              "episodes_per_batch": 4})
    config = build_ppo_config(knobs)
    seeds = [SeedOnceEnvRunner(config=config, worker_index=w)._seed for w in (1, 2)]
    assert seeds == [3 * SEED_STRIDE + 2, 3 * SEED_STRIDE + 4]  # envs s, s+1 | s+2, s+3
    runner = SeedOnceEnvRunner(config=config, worker_index=1)
    signals = [float(e.get_observations(0)["features"][SIGNAL_FEATURE])
               for _ in range(3) for e in runner.sample(num_episodes=2)]
    runner.stop()
    assert len(set(signals)) == len(signals)  # no sample() call replays earlier episodes


@pytest.mark.parametrize(("critic", "q_baseline"), [("q_op", "sampled_op"), ("q_op", "expected"),
                                                    ("v", "sampled_op")])
def test_each_critic_trains_on_the_real_env(critic, q_baseline):
    knobs = resolve_knobs("quick", "seed_before", {
        "n_train": 128, "n_val": 64, "max_epochs": 3, "episodes_per_batch": 2, **SMALL,
        "critic": critic, "q_baseline": q_baseline})
    algo = build_ppo_config(knobs).build_algo()
    results = [algo.train()["esper"] for _ in range(2)]
    algo.stop()
    for metrics in results:
        for name in ("value_loss", "explained_variance", "kl", "clip_ratio", "entropy"):
            assert math.isfinite(metrics[name]), name
        # Q-spread exists only for the Q(s, op) critic.
        assert math.isfinite(metrics["q_spread"]) == (critic == "q_op")
