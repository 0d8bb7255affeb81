"""esper-rllib critic-fit --checkpoint: a trained run's critic scored, as it is, on a
recording's held-out episodes against their return-to-go; a run of another env is refused."""


import gymnasium as gym
import numpy as np
import pytest
import torch

from esper_rllib.cli import main
from esper_rllib.offline import dataset
from esper_rllib.offline.behaviour import load_checkpoint_module, make_behaviour
from esper_rllib.offline.checkpoint_ev import checkpoint_evs
from esper_rllib.offline.critic_fit import Critic, to_episodes
from esper_rllib.offline.fit_plan import plan_fit
from esper_rllib.offline.fit_run import split_records
from esper_rllib.offline.record import plan_recording, play_episode
from esper_rllib.run.config import env_config
from tests.helpers import DATA

# A checkpoint of a one-iteration run of ENV (written before the package layout; its pickles
# re-written with today's module paths when the legacy import hook went).
CHECKPOINT = DATA / "checkpoint"
# The env the checkpoint's run trained on.
ENV = {"n_train": 256, "n_val": 128, "max_epochs": 4}
EPISODES = 8  # 2 held out


def _record(folder, env):
    plan = plan_recording("quick", env, "random", EPISODES, 0)
    e = gym.make("envs:esper/SeedMorphogenesis-v0", **env_config(plan.knobs)).unwrapped
    behaviour = make_behaviour("random", None, tuple(int(n) for n in e.action_space.nvec))
    for i in range(EPISODES):
        dataset.write_episode(folder, play_episode(e, behaviour, i, plan.env_seed(i)))
    dataset.write_meta(folder, {**plan.meta(), "complete": True})
    return folder


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("rec"), ENV)


def test_the_checkpoints_critic_is_scored_on_the_held_out_return_to_go(recording, capsys):
    (result,) = checkpoint_evs(recording, [str(CHECKPOINT)])
    assert (result.heldout, result.pool) == (2, 6)
    # The same number from first principles: the module's values of the held-out episodes
    # (critic-fit's split by env seed) against their discounted return-to-go, real steps only.
    plan = plan_fit(recording, overrides=[], grid=[], trunks="shared", seeds=1, steps=1,
                    train_episodes="all")
    _, held = split_records(plan, dataset.read_episodes(recording))
    episodes = to_episodes(held, 0.995)
    with torch.no_grad():
        values = Critic.trained(load_checkpoint_module(str(CHECKPOINT))).values(episodes)
    g, v = episodes.targets[episodes.mask].numpy(), values[episodes.mask].numpy()
    assert result.heldout_ev == pytest.approx(1 - np.var(g - v) / np.var(g), abs=1e-5)

    assert main(["critic-fit", str(recording), "--checkpoint", str(CHECKPOINT)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert f"held-out EV {result.heldout_ev:+.4f} (2 episodes)" in line


def test_a_run_of_another_env_is_one_line_exit_2(tmp_path, capsys):
    other = _record(tmp_path / "rec", {**ENV, "max_epochs": 3})
    assert main(["critic-fit", str(other), "--checkpoint", str(CHECKPOINT)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its env differs from the recording's in max_epochs" \
        in err, err
