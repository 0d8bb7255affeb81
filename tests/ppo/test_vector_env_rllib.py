"""The stacked vector env under RLlib: ``gym_env_vectorize_mode=vector_entry_point`` with
``num_envs_per_env_runner=4`` samples whole, distinct episodes and trains an iteration; a probe
asked for a vector env is one clear error (exit 2 on the command line)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from envs.rewards import RunningStd
from envs.vector_env import SeedMorphogenesisVectorEnv
from esper_rllib.ppo.algorithm import env_reward_scales
from esper_rllib.ppo.env_runner import SeedOnceEnvRunner
from esper_rllib.run.config import ConfigError, build_ppo_config, resolve_knobs

MAX_EPOCHS = 3
# quick's stack_batch=true makes the batch's 4 episodes one stacked env of 4.
TINY = {"n_train": 128, "n_val": 64, "max_epochs": MAX_EPOCHS, "episodes_per_batch": 4,
        "lstm_hidden": 16, "feature_dim": 16, "head_hidden": 8, "blueprint_head_hidden": (8,)}


def test_stack_batch_makes_each_runners_share_of_the_batch_one_stacked_env():
    quick = resolve_knobs("quick", overrides=TINY)
    assert (quick["num_envs_per_env_runner"], quick["gym_env_vectorize_mode"]) == (
        4, "vector_entry_point")
    cifar = resolve_knobs("cifar")  # 64 episodes over 4 env runners on the GPU profile
    assert (cifar["num_env_runners"], cifar["num_envs_per_env_runner"]) == (4, 16)
    two = resolve_knobs("quick", overrides={"num_env_runners": 2})
    assert two["num_envs_per_env_runner"] == 2
    # A resolved run's knobs given back resolve to themselves (sweep bases, checkpoints).
    assert resolve_knobs("quick", overrides=quick) == quick
    # Off, or on a probe (no stacked env): one env per runner, stepped in turn, as before.
    off = resolve_knobs("quick", overrides={"stack_batch": False})
    assert (off["num_envs_per_env_runner"], off["gym_env_vectorize_mode"]) == (1, "sync")
    probe = resolve_knobs("quick", overrides={"env": "esper/Probe1-v0"})
    assert (probe["num_envs_per_env_runner"], probe["gym_env_vectorize_mode"]) == (1, "sync")
    with pytest.raises(ConfigError, match=r"^num_envs_per_env_runner=2: stack_batch=true sets "
                                          r"it to 4 .* or set stack_batch=false$"):
        resolve_knobs("quick", overrides={"num_envs_per_env_runner": 2})
    explicit = resolve_knobs("quick", overrides={"stack_batch": False,
                                                 "num_envs_per_env_runner": 2})
    assert explicit["num_envs_per_env_runner"] == 2


def test_env_runner_samples_whole_distinct_episodes_from_the_stacked_env():
    runner = SeedOnceEnvRunner(config=build_ppo_config(resolve_knobs("quick", overrides=TINY)))
    try:
        assert isinstance(runner.env.unwrapped, SeedMorphogenesisVectorEnv)
        assert runner.env.unwrapped.num_envs == 4
        for _ in range(2):  # the second call goes through the NEXT_STEP autoreset
            episodes = runner.sample(num_episodes=4, explore=True)
            assert len(episodes) == 4
            assert all(len(e) == MAX_EPOCHS and e.is_truncated for e in episodes)
            # Every env its own seed: four different first observations (host inits).
            firsts = [e.get_observations(0)["features"] for e in episodes]
            assert len({f.tobytes() for f in firsts}) == 4
            assert all(np.isfinite(e.get_return()) for e in episodes)
    finally:
        runner.stop()


def test_recorded_log_probs_equal_the_learners_recomputation():
    """PPO's ratio starts at 1 only if the learner sees the observations (masks) the policy
    acted on; KL is then ~0 before the first update."""
    config = build_ppo_config(resolve_knobs("quick", overrides=TINY))
    runner = SeedOnceEnvRunner(config=config)
    learner = config.build_learner(env=runner.env.unwrapped)
    learner.module[DEFAULT_MODULE_ID].load_state_dict(runner.module.state_dict())
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    try:
        for _ in range(2):
            episodes = runner.sample(num_episodes=4, explore=True)
            batch = learner._learner_connector(rl_module=learner.module, batch={},
                                               episodes=episodes,
                                               shared_data={})[DEFAULT_MODULE_ID]
            with torch.no_grad():
                inputs = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
            logp = module.get_train_action_dist_cls().from_logits(inputs).logp(
                batch[Columns.ACTIONS])
            mask = batch[Columns.LOSS_MASK].bool()
            assert torch.allclose(logp[mask], batch[Columns.ACTION_LOGP][mask], atol=1e-5)
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_train_iteration_with_four_stacked_envs(local_ray):
    algo = build_ppo_config(resolve_knobs("quick", overrides=TINY)).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    # One batch = 4 whole episodes of MAX_EPOCHS steps, sampled as one round of 4 envs.
    assert result["env_runners"]["num_episodes"] == 4
    assert result["env_runners"]["num_env_steps_sampled"] == 4 * MAX_EPOCHS


def _streams(runner) -> list:
    """The bit-generator state of the stacked env (the data order) and of each sub-env (host
    initialisations): what the runner's next episodes are drawn from."""
    vector = runner.env.unwrapped
    return [e.np_random.bit_generator.state for e in (vector, *vector.envs)]


@pytest.mark.ray
def test_a_checkpoint_keeps_the_envs_reward_scale_and_random_streams(local_ray, tmp_path):
    # The shaped reward is divided by a running std that lives in the remote runner's envs; a
    # restore without it would rescale the first batch after it by up to 10x. The envs' random
    # streams live there too: a restore without them would replay the run's first episodes.
    knobs = resolve_knobs("quick", overrides={**TINY, "reward": "shaped", "num_env_runners": 1})
    algo = build_ppo_config(knobs).build_algo()
    try:
        algo.train()
        algo.save_to_path(str(tmp_path))
        (scales,) = algo.env_runner_group.foreach_env_runner(
            lambda r: [s.state() for s in env_reward_scales(r)], local_env_runner=False)
        algo.train()  # the uninterrupted run's second iteration
        (uninterrupted,) = algo.env_runner_group.foreach_env_runner(
            _streams, local_env_runner=False)
    finally:
        algo.stop()
    assert len(scales) == 4 and all(n == MAX_EPOCHS for n, _, _ in scales)
    restored = build_ppo_config(knobs).build_algo()
    try:
        (fresh,) = restored.env_runner_group.foreach_env_runner(_streams, local_env_runner=False)
        restored.restore_from_path(str(tmp_path))
        (after,) = restored.env_runner_group.foreach_env_runner(
            lambda r: [s.state() for s in env_reward_scales(r)], local_env_runner=False)
        restored.train()  # its second iteration, after the restore
        (resumed,) = restored.env_runner_group.foreach_env_runner(
            _streams, local_env_runner=False)
    finally:
        restored.stop()
    # Every env of the new runner starts from the pooled scale of the 4 checkpointed envs.
    assert after == [RunningStd.pooled(scales)] * 4
    assert after[0][0] == 4 * MAX_EPOCHS
    # Its stacked env and its 4 sub-envs drew the episodes the uninterrupted run drew.
    assert len(resumed) == 5 and resumed == uninterrupted and resumed != fresh


def test_a_probe_has_no_vector_env():
    with pytest.raises(ConfigError, match=r"^gym_env_vectorize_mode=vector_entry_point: env "
                                          r"esper/Probe1-v0 has no vector env"):
        resolve_knobs("quick", overrides={"env": "esper/Probe1-v0", "stack_batch": False,
                                          "gym_env_vectorize_mode": "vector_entry_point"})
    with pytest.raises(ConfigError, match="gym_env_vectorize_mode"):
        resolve_knobs("quick", overrides={"stack_batch": False, "gym_env_vectorize_mode": "async"})


def test_cli_bad_vectorize_mode_is_one_line_exit_2(tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "esper-rllib")
    out = subprocess.run([cli, "train", "--profile", "quick", "--storage", str(tmp_path),
                          "--set", "env=esper/Probe1-v0",
                          "--set", "gym_env_vectorize_mode=vector_entry_point"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "gym_env_vectorize_mode" in lines[0], out.stderr
    assert not any(tmp_path.iterdir())
