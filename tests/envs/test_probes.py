"""Probe envs: same spaces as the real env, pass check_env, and pay the rewards they promise."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import PROBE_IDS
from envs.contract import HEADS, N_OPS, Op, action_space, head_sizes, observation_space
from envs.probes import (
    ALT_OP,
    LEGAL_OPS,
    PROGRESS_FEATURE,
    REWARDED_OP,
    SIGNAL_FEATURE,
    Probe1Env,
    Probe2Env,
    Probe3Env,
    Probe4Env,
    Probe5Env,
)


def _action(op):
    """A legal action with the given op (slot 0, a CNN blueprint, first value elsewhere)."""
    action = np.zeros(len(HEADS), np.int64)
    action[0] = op
    action[HEADS.index("blueprint")] = 1
    return action


def _episode(env, op, seed):
    obs, _ = env.reset(seed=seed)
    observations, rewards, done = [obs], [], False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(_action(op))
        assert not truncated
        observations.append(obs)
        rewards.append(reward)
        done = terminated
    return observations, rewards


@pytest.mark.parametrize("probe_id", PROBE_IDS)
# The contract's feature Box is unbounded on purpose; check_env only warns about it.
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum):UserWarning")
def test_spaces_match_the_real_contract_and_check_env_passes(probe_id):
    env = gym.make(f"envs:{probe_id}")
    assert env.observation_space == observation_space(3)
    assert env.action_space == action_space(3)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    again, _ = env.reset(seed=0)
    for k in obs:
        assert np.array_equal(obs[k], again[k])
    # Masks: several ops legal, some not, and at least one legal value per head.
    mask = obs["action_mask"]
    assert set(np.flatnonzero(mask[:N_OPS])) == set(LEGAL_OPS) and len(LEGAL_OPS) < N_OPS
    for part in np.split(mask, np.cumsum(head_sizes(3))[:-1]):
        assert part.sum() >= 1


def test_probe1_pays_one_in_one_step():
    for op in LEGAL_OPS:
        _, rewards = _episode(Probe1Env(), op, seed=1)
        assert rewards == [1.0]


def test_probe2_pays_the_signal_feature():
    signals = []
    for seed in range(20):
        observations, rewards = _episode(Probe2Env(), Op.WAIT, seed)
        assert rewards == [pytest.approx(float(observations[0]["features"][SIGNAL_FEATURE]))]
        signals.append(rewards[0])
    assert min(signals) >= 0.0 and max(signals) < 1.0 and np.std(signals) > 0.1


def test_probe3_pays_only_at_the_second_step():
    observations, rewards = _episode(Probe3Env(), Op.GERMINATE, seed=2)
    assert rewards == [0.0, 1.0]
    # The two decision steps look different, so the critic can tell them apart.
    assert observations[0]["features"][PROGRESS_FEATURE] != observations[1]["features"][
        PROGRESS_FEATURE]


def test_probe4_pays_only_the_rewarded_op():
    for op in Op:
        _, rewards = _episode(Probe4Env(), op, seed=3)
        assert rewards == [1.0 if op == REWARDED_OP else 0.0]
    env = Probe4Env()
    env.reset(seed=0)
    # An illegal op runs as WAIT, as in the real env; the other heads do not matter.
    info = env.step(_action(Op.FOSSILIZE))[-1]
    assert info == {"action_valid": False, "effective_op": Op.WAIT}
    env.reset(seed=0)
    other_heads = action_space(3).sample()
    other_heads[0] = REWARDED_OP
    assert env.step(other_heads)[1] == 1.0


def test_probe5_rewarding_op_flips_with_the_signal():
    seen = set()
    for seed in range(20):
        env = Probe5Env()
        observations, _ = _episode(env, Op.WAIT, seed)
        signal = observations[0]["features"][SIGNAL_FEATURE]
        seen.add(float(signal))
        paid = {op for op in LEGAL_OPS if _episode(env, op, seed)[1] == [1.0]}
        assert paid == {REWARDED_OP if signal == 1.0 else ALT_OP}
    assert seen == {0.0, 1.0}


def test_bad_actions_and_arguments_are_refused():
    env = Probe1Env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([6, 0, 1, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([0, 0]))
    with pytest.raises(ValueError, match="n_slots"):
        Probe1Env(n_slots=0)
