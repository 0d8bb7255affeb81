"""EpisodesToSequences builds exactly the train batch of RLlib's default PPO learner pieces:
same columns, dtypes, shapes and values, with episodes cut into several rows or one."""

import copy

import pytest
import torch
import tree
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from envs.contract import action_space, observation_space
from esper_rllib.model.module import FactoredLSTM
from esper_rllib.ppo.env_runner import SeedOnceEnvRunner
from esper_rllib.ppo.learner_batch import ZERO_PADDED_KEY, EpisodesToSequences
from esper_rllib.run.config import build_ppo_config, resolve_knobs

KNOBS = {"n_train": 128, "n_val": 64, "max_epochs": 4, "episodes_per_batch": 2,
         "lstm_hidden": 8, "feature_dim": 8, "head_hidden": 8, "blueprint_head_hidden": (8,)}


@pytest.fixture(scope="module")
def sampled():
    config = build_ppo_config(resolve_knobs("quick", overrides=KNOBS))
    runner = SeedOnceEnvRunner(config=config)
    # Whole episodes (4 steps), then chunks: 3 steps, then 1 (ending an episode) + 2 more
    # (continuing from the carried LSTM state, unfinished).
    episodes = runner.sample(num_episodes=2, explore=True)
    episodes += runner.sample(num_timesteps=3, explore=True, force_reset=True)
    episodes += runner.sample(num_timesteps=3, explore=True)
    yield config, runner, episodes
    runner.stop()


@pytest.mark.parametrize("max_seq_len", [2, 3, 5, 7])
def test_same_batch_as_rllibs_default_pieces(sampled, max_seq_len):
    config, runner, episodes = sampled
    assert any(e.t_started > 0 for e in episodes) and any(not e.is_done for e in episodes)
    module_config = {**config.model_config, "max_seq_len": max_seq_len}
    module = MultiRLModuleSpec(rl_module_specs={DEFAULT_MODULE_ID: RLModuleSpec(
        module_class=FactoredLSTM, observation_space=runner.env.single_observation_space,
        action_space=runner.env.single_action_space, model_config=module_config)}).build()
    rllib = config.build_learner_connector(runner.env.single_observation_space,
                                           runner.env.single_action_space)
    rllib.prepend(AddOneTsToEpisodesAndTruncate())

    copies = copy.deepcopy(episodes)  # RLlib's pieces extend the episodes in place
    expected_shared, ours_shared = {}, {}
    expected = rllib(rl_module=module, batch={}, episodes=copies, shared_data=expected_shared)
    lens_before = [len(e) for e in episodes]
    ours = EpisodesToSequences()(rl_module=module, batch={}, episodes=episodes,
                                 shared_data=ours_shared)

    assert [len(e) for e in episodes] == lens_before  # ours leaves the episodes alone
    assert ours_shared[ZERO_PADDED_KEY] and expected_shared[ZERO_PADDED_KEY]
    assert tree.flatten_with_path(ours) and (
        [p for p, _ in tree.flatten_with_path(ours)]
        == [p for p, _ in tree.flatten_with_path(expected)])
    for (path, a), (_, b) in zip(tree.flatten_with_path(ours), tree.flatten_with_path(expected),
                                 strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    rows = ours[DEFAULT_MODULE_ID]["seq_lens"]
    assert (len(rows) > len(episodes)) == (max_seq_len < 5)  # some episodes span rows


def test_a_custom_learner_connector_is_refused():
    config = build_ppo_config(resolve_knobs("quick", overrides=KNOBS))
    config.environment(observation_space=observation_space(3), action_space=action_space(3))
    config.learners(learner_connector=lambda obs_space, act_space: AddOneTsToEpisodesAndTruncate())
    with pytest.raises(ValueError, match="custom learner connectors are not supported"):
        config.build_learner()
