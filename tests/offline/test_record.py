"""esper-rllib record: the columnar recording, its log-probs, resuming, and bad input."""

import math

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns

from envs.contract import HEADS, RELEVANCE, head_sizes
from esper_rllib.cli import main
from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import build_module, make_behaviour
from esper_rllib.offline.critic_fit import to_episodes
from esper_rllib.offline.record import plan_recording, play_episode, record

SMALL = {"lstm_hidden": 16, "feature_dim": 16, "head_hidden": 16,
         "blueprint_head_hidden": (16,)}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _plan(env="esper/Probe3-v0", policy="initial", episodes=3, **extra):
    return plan_recording("quick", {"env": env, **SMALL, **extra}, policy, episodes, 0)


@pytest.mark.ray
def test_recording_keeps_every_column_through_critic_fit(local_ray, tmp_path):
    plan = _plan(episodes=3)
    meta = record(plan, tmp_path)
    table = dataset.read_table(tmp_path)
    assert table.column_names == meta["columns"] == list(dataset.columns(
        ["action_mask", "blueprints", "features"]))
    assert table.num_rows == 3 * 2  # probe 3: two steps per episode
    # The same episodes played here, in process, are what the files hold, column by column.
    env = gym.make("envs:esper/Probe3-v0").unwrapped
    module = build_module(plan.knobs, 0, env.observation_space, env.action_space)
    policy = make_behaviour("initial", module, tuple(int(n) for n in env.action_space.nvec))
    records = dataset.read_episodes(tmp_path)
    for i, got in enumerate(records):
        want = play_episode(env, policy, i, plan.env_seed(i))
        assert got.env_seed == want.env_seed == plan.env_seed(i)
        for key in want.obs:
            np.testing.assert_array_equal(got.obs[key], want.obs[key])
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_allclose(got.logp, want.logp, rtol=1e-6)
        np.testing.assert_allclose(got.rewards, want.rewards)
        assert (got.terminated, got.truncated) == (True, False)
        assert math.isnan(got.final_acc)  # the probe reports no accuracy
    # What critic-fit trains on carries every recorded column.
    episodes = to_episodes(records, gamma=0.5)
    assert set(episodes.batch[Columns.OBS]) == set(records[0].obs)
    np.testing.assert_array_equal(episodes.batch[Columns.ACTIONS].numpy(),
                                  np.stack([r.actions for r in records]))
    np.testing.assert_allclose(episodes.targets[:, 0].numpy(),
                               [r.rewards[0] + 0.5 * r.rewards[1] for r in records], rtol=1e-6)


@pytest.mark.ray
def test_recorded_logp_equals_the_module_on_replay(local_ray, tmp_path):
    """Each episode replayed as one sequence (the learner's way) gives the recorded log-probs."""
    plan = _plan(episodes=2)
    record(plan, tmp_path)
    env = gym.make("envs:esper/Probe3-v0").unwrapped
    module = build_module(plan.knobs, 0, env.observation_space, env.action_space)
    for episode in dataset.read_episodes(tmp_path):
        batch = {Columns.OBS: {k: torch.tensor(v)[None] for k, v in episode.obs.items()},
                 Columns.STATE_IN: {k: torch.as_tensor(v)[None]
                                    for k, v in module.get_initial_state().items()}}
        with torch.no_grad():
            logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
        dist = module.get_train_action_dist_cls().from_logits(logits)
        replayed = dist.logp(torch.as_tensor(episode.actions)[None])[0].numpy()
        np.testing.assert_allclose(replayed, episode.logp, atol=1e-5)
        assert np.all(episode.logp < 0)


def test_random_policy_logp_is_uniform_over_legal_relevant_heads(tmp_path):
    env = gym.make("envs:esper/Probe4-v0").unwrapped
    nvec = tuple(int(n) for n in env.action_space.nvec)
    episode = play_episode(env, make_behaviour("random", None, nvec), 0, 7)
    mask = episode.obs["action_mask"][0]
    sizes = head_sizes(env.n_slots)
    legal = [int(m.sum()) for m in np.split(mask, np.cumsum(sizes)[:-1])]
    relevant = RELEVANCE[episode.actions[0, 0]]
    want = -sum(math.log(n) for n, r in zip(legal, relevant, strict=True) if r)
    assert episode.logp[0] == pytest.approx(want, rel=1e-5)
    assert len(HEADS) == len(legal)


@pytest.mark.ray
def test_resume_keeps_what_was_written_and_records_the_same_episodes(local_ray, tmp_path):
    first, fresh = tmp_path / "resumed", tmp_path / "fresh"
    record(_plan(episodes=2), first)
    kept = {p.name: p.stat().st_mtime_ns for p in (first / dataset.EPISODES_DIR).iterdir()}
    (first / dataset.EPISODES_DIR / "episode-000002.parquet.tmp").write_text("interrupted")
    meta = record(_plan(episodes=4), first)
    assert meta["resumed_from"] == 2 and meta["complete"]
    files = {p.name: p.stat().st_mtime_ns for p in (first / dataset.EPISODES_DIR).glob(
        "*.parquet")}
    assert len(files) == 4 and all(files[n] == t for n, t in kept.items())
    record(_plan(episodes=4), fresh)
    for name in files:
        a = pq.read_table(first / dataset.EPISODES_DIR / name)
        b = pq.read_table(fresh / dataset.EPISODES_DIR / name)
        assert a.schema == b.schema
        for column in a.column_names:  # NaN (final_acc of a probe) equal to NaN
            np.testing.assert_array_equal(np.array(a.column(column).to_pylist(), float),
                                          np.array(b.column(column).to_pylist(), float))


@pytest.mark.parametrize("argv, message", [
    (["--policy", "no/such/checkpoint"], "--policy: no/such/checkpoint: no such checkpoint"),
    (["--episodes", "0"], "--episodes 0: allowed"),
    (["--set", "value_coef=-1"], "value_coef=-1.0: not allowed"),
    (["--set", "task=nope"], "task='nope': not allowed"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    out = tmp_path / "rec"
    assert main(["record", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


@pytest.mark.ray
def test_a_folder_of_another_recording_is_refused(local_ray, tmp_path, capsys):
    record(_plan(episodes=1), tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["record", "--out", str(tmp_path), "--set", "env=esper/Probe3-v0",
                 "--seed", "1", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a recording with" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
