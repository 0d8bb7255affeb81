"""A checkpoint written before the role sub-packages (``esper_rllib.module``, ``.learner``,
``.callbacks``, ``.env_runner`` pickled by path) still loads and plays."""

from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from esper_rllib.legacy import MOVED
from esper_rllib.run.checkpoint_policy import CTOR_FILE, MODULE_PATH, CheckpointPolicy

CHECKPOINT = Path(__file__).parent / "data" / "checkpoint-before-layout"


def test_the_checkpoint_pickles_the_flat_layouts_paths():
    pickled = b"".join(p.read_bytes() for p in CHECKPOINT.rglob(CTOR_FILE))
    for old in ("esper_rllib.module", "esper_rllib.learner", "esper_rllib.callbacks",
                "esper_rllib.env_runner"):
        assert old.encode() in pickled and old in MOVED


def test_a_checkpoint_from_before_the_move_loads_and_plays_its_env():
    assert (CHECKPOINT / MODULE_PATH).is_dir()
    policy, run_config = CheckpointPolicy.from_checkpoint(CHECKPOINT, seed=0)
    # The run config unpickles the algorithm's classes (callbacks, env runner, learner) too.
    assert run_config["env"] == f"envs:{envs.ENV_ID}"
    assert type(policy.module).__module__ == "esper_rllib.model.module"
    env = gym.make(envs.ENV_ID, **run_config["env_config"]).unwrapped
    obs, info = env.reset(seed=3)
    for _ in range(3):
        action = policy.act(obs, info)
        assert env.action_space.contains(action)
        obs, _, terminated, truncated, info = env.step(action)
        assert np.isfinite(info["val_acc"]) and not (terminated or truncated)
