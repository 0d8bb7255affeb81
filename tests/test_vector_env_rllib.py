"""The stacked vector env under RLlib: ``gym_env_vectorize_mode=vector_entry_point`` with
``num_envs_per_env_runner=4`` samples whole, distinct episodes and trains an iteration; a probe
asked for a vector env is one clear error (exit 2 on the command line)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import ray

from envs.vector_env import SeedMorphogenesisVectorEnv
from esper_rllib.ppo.env_runner import SeedOnceEnvRunner
from esper_rllib.run.config import ConfigError, build_ppo_config, resolve_knobs

MAX_EPOCHS = 3
TINY = {"n_train": 128, "n_val": 64, "max_epochs": MAX_EPOCHS, "episodes_per_batch": 4,
        "num_envs_per_env_runner": 4, "gym_env_vectorize_mode": "vector_entry_point",
        "lstm_hidden": 16, "feature_dim": 16, "head_hidden": 8, "blueprint_head_hidden": (8,)}


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


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_train_iteration_with_four_stacked_envs(local_ray):
    algo = build_ppo_config(resolve_knobs("quick", overrides=TINY)).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    # One batch = 4 whole episodes of MAX_EPOCHS steps, sampled as one round of 4 envs.
    assert result["env_runners"]["num_episodes"] == 4
    assert result["env_runners"]["num_env_steps_sampled"] == 4 * MAX_EPOCHS


def test_a_probe_has_no_vector_env():
    with pytest.raises(ConfigError, match=r"^gym_env_vectorize_mode=vector_entry_point: env "
                                          r"esper/Probe1-v0 has no vector env"):
        resolve_knobs("quick", overrides={"env": "esper/Probe1-v0",
                                          "gym_env_vectorize_mode": "vector_entry_point"})
    with pytest.raises(ConfigError, match="gym_env_vectorize_mode"):
        resolve_knobs("quick", overrides={"gym_env_vectorize_mode": "async"})


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
