"""The stacked vector env (envs.vector_env): each sub-env is the single env to float tolerance,
per-sub-env seeds and rollbacks, seeding, NEXT_STEP autoreset, Gymnasium's checks, bad input."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs
from envs.contract import Op, Stage
from envs.env import SeedMorphogenesisEnv
from envs.heuristic import make_action
from envs.vector_env import SeedMorphogenesisVectorEnv

SMALL = {"n_train": 256, "n_val": 200}
A = make_action

# Germinations (a gated norm seed in r0c0, conv_light in r0c1, conv_heavy in r0c2), a prune of
# r0c0 while TRAINING, r0c1 blended in, held and fossilized; the NaN at epoch 14 rolls back.
EPISODE = [
    A(Op.WAIT), A(Op.GERMINATE, 1, blueprint=1, tempo=0, alpha_target=2),
    A(Op.GERMINATE, 0, blueprint=3, style=3, tempo=0, alpha_target=2),
    A(Op.ADVANCE, 1), A(Op.ADVANCE, 0), A(Op.ADVANCE, 1), A(Op.PRUNE, 0), A(Op.WAIT),
    A(Op.WAIT), A(Op.ADVANCE, 1), A(Op.FOSSILIZE, 1), A(Op.GERMINATE, 2, blueprint=7),
    A(Op.ADVANCE, 2), A(Op.WAIT), A(Op.WAIT), A(Op.ADVANCE, 2),
]
EPISODE_KW = {**SMALL, "max_epochs": len(EPISODE), "inject_nan_at_epoch": 14,
              "reward_normalization": "none", "max_seeds": 0}


def vector(num_envs, **kw):
    return SeedMorphogenesisVectorEnv(num_envs, **{**SMALL, "max_epochs": 4, **kw})


def close(a, b, path="", rtol=1e-4, atol=1e-4):
    """a and b equal, floats to tolerance; returns the first path that differs, or None."""
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path} keys"
        return next((p for k in a if (p := close(a[k], b[k], f"{path}.{k}")) is not None),
                    None)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path} length"
        return next((p for i, (x, y) in enumerate(zip(a, b, strict=True))
                     if (p := close(x, y, f"{path}[{i}]")) is not None), None)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        ok = np.allclose(np.asarray(a, float), np.asarray(b, float), rtol, atol, equal_nan=True)
        return None if ok else path
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return None
        return None if math.isclose(a, b, rel_tol=rtol, abs_tol=atol) else path
    return None if a == b else path


def sub(obs, infos, k):
    """Sub-env k's observation and info out of the batched ones."""
    def pick(tree):
        out = {}
        for key, value in tree.items():
            if key.startswith("_"):
                continue
            out[key] = pick(value) if isinstance(value, dict) else value[k]
        return out
    info = pick(infos)
    for key in ("slot_stages", "alphas", "contributions", "blueprints"):
        info[key] = list(info[key])
    return {key: v[k] for key, v in obs.items()}, info


def single_like(vec, k, seed, **kw):
    """The single env sub-env k of ``vec`` (reset with ``seed``) should equal: the same
    episode seed, and the vector env's data order."""
    env = SeedMorphogenesisEnv(**kw)
    obs, info = env.reset(seed=seed + k)
    env._gen.set_state(vec._gen.get_state())
    return env, obs, info


def test_sub_env_equals_single_env_over_an_episode():
    vec = SeedMorphogenesisVectorEnv(3, **EPISODE_KW)
    obs, infos = vec.reset(seed=11)
    k = 1
    single, s_obs, s_info = single_like(vec, k, 11, **EPISODE_KW)
    assert close(sub(obs, infos, k), (s_obs, s_info)) is None
    other = A(Op.GERMINATE, 0, blueprint=4)  # the other sub-envs do something else
    seen = set()
    for t, action in enumerate(EPISODE):
        actions = np.stack([other if j != k else action for j in range(3)])
        obs, rewards, term, trunc, infos = vec.step(actions)
        s_obs, s_reward, s_term, s_trunc, s_info = single.step(action)
        diff = close(sub(obs, infos, k), (s_obs, s_info))
        assert diff is None, f"step {t}: {diff}"
        assert math.isclose(rewards[k], s_reward, rel_tol=1e-4, abs_tol=1e-4), t
        assert (term[k], trunc[k]) == (s_term, s_trunc)
        seen.add(s_info["effective_op"])
        if s_info["rollback"]:
            seen.add("rollback")
        if s_info["n_fossils"]:
            seen.add("fossil")
    assert {int(Op.GERMINATE), int(Op.PRUNE), int(Op.FOSSILIZE), "rollback",
            "fossil"} <= seen
    assert trunc.all()


def test_seeds_in_some_sub_envs_only_and_a_rollback_in_one():
    vec = vector(3, max_epochs=8, max_seeds=0)
    vec.envs[2].cfg = dataclasses.replace(vec.envs[2].cfg, inject_nan_at_epoch=4)
    vec.reset(seed=3)
    plan = [[A(Op.GERMINATE, 1, blueprint=1, tempo=0, alpha_target=2), A(Op.WAIT),
             A(Op.GERMINATE, 0, blueprint=2)],
            [A(Op.ADVANCE, 1), A(Op.WAIT), A(Op.ADVANCE, 0)],
            [A(Op.ADVANCE, 1), A(Op.WAIT), A(Op.ADVANCE, 0)],
            [A(Op.WAIT)] * 3, [A(Op.WAIT)] * 3]
    rollbacks = []
    for actions in plan:
        obs, rewards, term, trunc, infos = vec.step(np.stack(actions))
        rollbacks.append(infos["rollback"].tolist())
    # The NaN before epoch 4 of sub-env 2 rolls back that sub-env, at that step, only.
    assert rollbacks == [[False] * 3] * 3 + [[False, False, True]] + [[False] * 3]
    stages = infos["slot_stages"]
    assert stages[0][1] == Stage.BLENDING and stages[1] == [Stage.DORMANT] * 3
    assert stages[2][0] == Stage.EMBARGOED  # its seed went with the rollback
    assert infos["seed_params"][0] > 0 and infos["seed_params"][1] == 0
    assert all(math.isfinite(x) for x in infos["val_loss"])
    assert infos["contributions"][0][1] is not None  # alpha > 0: measured
    assert infos["epoch"].tolist() == [5, 5, 5]


def test_sub_envs_differ_and_runs_repeat():
    def run(seed):
        vec = vector(3)
        out = [vec.reset(seed=seed)[0]["features"].copy()]
        for _ in range(3):
            out.append(vec.step(np.zeros((3, 8), np.int64))[0]["features"].copy())
        return np.stack(out)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b)  # deterministic per seed, bit for bit on CPU
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:, 0], a[:, 1])  # each sub-env its own host init


def test_next_step_autoreset_matches_gymnasiums_sync_vector_env():
    """Gymnasium 1.x's own vector env over the single env is the reference for when episodes
    end and restart (values differ: its sub-envs each draw their own data order)."""
    kw = {**SMALL, "max_epochs": 3}
    ours = gym.make_vec(envs.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kw)
    assert ours.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    ref = SyncVectorEnv([lambda: SeedMorphogenesisEnv(**kw)] * 2)
    for env in (ours, ref):
        obs, infos = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    actions = np.zeros((2, 8), np.int64)
    for t in range(8):
        got = ours.step(actions)
        want = ref.step(actions)
        assert ours.observation_space.contains(got[0])
        for i in (2, 3):  # terminated, truncated
            assert np.array_equal(got[i], want[i]), t
        assert np.array_equal(got[4]["epoch"], want[4]["epoch"]), t
        assert set(got[4]) == set(want[4])
        if t == 3:  # the autoreset step: reward 0, the reset observation's epoch 0
            assert np.array_equal(got[1], np.zeros(2)) and got[4]["epoch"].tolist() == [0, 0]


def test_reset_seeds_and_partial_stepping():
    vec = vector(2, max_epochs=2)
    obs, _ = vec.reset(seed=[4, 9])
    single = SeedMorphogenesisEnv(**SMALL, max_epochs=2)
    assert np.array_equal(obs["features"][1], single.reset(seed=9)[0]["features"])
    with pytest.raises(ValueError, match="num_envs=2"):
        vec.reset(seed=[1])
    # A later reset without a seed continues each stream: new episodes, no error.
    vec.step(np.zeros((2, 8), np.int64))
    obs2, _ = vec.reset()
    assert vec.observation_space.contains(obs2)


def test_returned_observations_are_not_rewritten_by_later_steps():
    # RLlib stores views of each row: a reused buffer would change recorded masks and features.
    vec = vector(2)
    obs, _ = vec.reset(seed=3)
    kept = {k: v.copy() for k, v in obs.items()}
    stepped, *_ = vec.step(np.zeros((2, 8), np.int64))
    assert all(np.array_equal(obs[k], kept[k]) for k in obs)
    assert not np.array_equal(stepped["features"], kept["features"])


def test_check_env_on_a_sub_env():
    vec = vector(2, max_epochs=30)
    check_env(vec.envs[1])


def test_make_vec_kwargs_reach_every_sub_env():
    vec = gym.make_vec(envs.ENV_ID, num_envs=3, vectorization_mode="vector_entry_point",
                       max_epochs=5, seed=2, **SMALL)
    assert vec.num_envs == 3 and all(e.cfg.max_epochs == 5 for e in vec.envs)
    obs, infos = vec.reset()  # the seed kwarg seeds the first reset
    again = gym.make_vec(envs.ENV_ID, num_envs=3, vectorization_mode="vector_entry_point",
                         max_epochs=5, **SMALL)
    assert np.array_equal(obs["features"], again.reset(seed=2)[0]["features"])


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, True, "4"])
def test_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match=r"^num_envs must be an integer >= 1, got "):
        SeedMorphogenesisVectorEnv(num_envs, **SMALL)


def test_bad_kwargs_and_actions_name_the_field():
    with pytest.raises(ValueError, match="max_epochs"):
        SeedMorphogenesisVectorEnv(2, **SMALL, max_epochs=0)
    with pytest.raises(ValueError, match="seed"):
        SeedMorphogenesisVectorEnv(2, **SMALL, seed=-1)
    vec = vector(2)
    vec.reset(seed=0)
    before = [e.lifecycle.slots[0].stage for e in vec.envs]
    bad = np.stack([A(Op.GERMINATE, 0, blueprint=1), np.full(8, 99)])
    with pytest.raises(ValueError, match="action head 'op'"):
        vec.step(bad)
    # Checked before any sub-env moved: sub-env 0 did not germinate.
    assert [e.lifecycle.slots[0].stage for e in vec.envs] == before
    with pytest.raises(ValueError, match=r"shape \(2, 8\)"):
        vec.step(np.zeros(8, np.int64))


def test_a_probe_has_no_vector_env():
    with pytest.raises(gym.error.Error, match="doesn't have a vector entry point"):
        gym.make_vec(envs.PROBE_IDS[0], num_envs=2, vectorization_mode="vector_entry_point")


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        vector(2).step(np.zeros((2, 8), np.int64))


def test_stacked_epoch_leaves_the_global_rng_alone():
    vec = vector(2)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    vec.reset(seed=1)
    vec.step(np.zeros((2, 8), np.int64))
    assert torch.equal(torch.get_rng_state(), state)
