"""Values at rollout: what the env runner stores with each step (the critic's outputs, the
bootstrap value of unfinished episodes) equals what the learner would compute itself on the
train batch (whole sequences with SEQ_LENS and zero padding, state carried across chunks), and
GAE built from them equals GAE built from a learner-side forward pass."""

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
from ray.rllib.utils.postprocessing.zero_padding import unpad_data_if_necessary

from esper_rllib.model.module import CRITIC_OUT
from esper_rllib.ppo.env_runner import BOOTSTRAP_VALUE, SeedOnceEnvRunner, bootstrap_value
from esper_rllib.ppo.gae import learner_metric_key
from esper_rllib.run.config import build_ppo_config, resolve_knobs

MAX_EPOCHS = 4
TINY = {"n_train": 128, "n_val": 64, "max_epochs": MAX_EPOCHS, "episodes_per_batch": 2,
        "lstm_hidden": 32, "feature_dim": 16, "head_hidden": 8, "blueprint_head_hidden": (8,),
        # A wide last hidden layer and gain 1, so values are O(1), nonzero and differ by op.
        "value_head_depth": 2, "value_head_gain": 1.0, "gamma": 0.9, "lambda_": 0.8,
        # One env, so num_timesteps=3 cuts a single episode mid-way (chunks are its subject).
        "stack_batch": False}


def _setup(**overrides):
    config = build_ppo_config(resolve_knobs("quick", overrides={**TINY, **overrides}))
    runner = SeedOnceEnvRunner(config=config)
    learner = config.build_learner(env=runner.env.unwrapped)
    learner.module[DEFAULT_MODULE_ID].load_state_dict(runner.module.state_dict())
    return runner, learner


def _episodes(runner):
    """Whole truncated episodes, then chunks cut mid-episode (3 + 1 + 2 steps: the second and
    third start from the carried LSTM state, lengths differ so rows are zero-padded)."""
    whole = runner.sample(num_episodes=2, explore=True)
    runner.sample(num_timesteps=3, explore=True, force_reset=True)  # warms up a fresh episode
    chunks = runner.sample(num_timesteps=3, explore=True)
    return whole + chunks


@pytest.mark.parametrize(("critic", "q_baseline"),
                         [("q_op", "sampled_op"), ("q_op", "expected"), ("v", "sampled_op")])
def test_rollout_values_match_the_learner_recomputation(critic, q_baseline):
    runner, learner = _setup(critic=critic, q_baseline=q_baseline)
    episodes = _episodes(runner)
    assert any(e.t_started > 0 for e in episodes)  # a continuation chunk
    assert any(not e.is_done for e in episodes)  # a chunk cut mid-episode
    assert all(e.is_truncated for e in episodes if e.is_done)
    assert all(BOOTSTRAP_VALUE in e.custom_data for e in episodes)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()

    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={})[DEFAULT_MODULE_ID]
    mask = batch[Columns.LOSS_MASK].bool()
    seq_lens = batch[Columns.SEQ_LENS]
    assert len(set(seq_lens.tolist())) > 1  # zero-padded rows
    with torch.no_grad():
        embeddings = module.forward_train(batch)[Columns.EMBEDDINGS]
        recomputed = module.critic_out(embeddings)
        learner_baseline = module.compute_values(batch)
    # Every real step's critic outputs, stored at rollout (one step at a time, state carried).
    assert batch[CRITIC_OUT].shape == recomputed.shape
    assert torch.allclose(batch[CRITIC_OUT][mask], recomputed[mask], atol=1e-5)
    # Each episode's bootstrap value is the learner's baseline at its artificial last step.
    rows = torch.arange(len(seq_lens))
    at_bootstrap = learner_baseline[rows, seq_lens - 1].numpy()
    stored = [bootstrap_value(e) for e in episodes]
    np.testing.assert_allclose(stored, at_bootstrap, atol=1e-5)

    # GAE from the rollout values = GAE from the learner's own forward pass.
    episode_lens = [len(e) + 1 for e in episodes]  # with the artificial bootstrap step

    def flat(x):
        return unpad_data_if_necessary(episode_lens, np.asarray(x))

    expected_targets = compute_value_targets(
        values=flat(learner_baseline), rewards=flat(batch[Columns.REWARDS]),
        terminateds=flat(batch[Columns.TERMINATEDS]), truncateds=flat(batch[Columns.TRUNCATEDS]),
        gamma=TINY["gamma"], lambda_=TINY["lambda_"])
    targets = flat(batch[Postprocessing.VALUE_TARGETS])
    real = flat(mask)
    np.testing.assert_allclose(targets[real], expected_targets[real], atol=1e-4)
    assert np.abs(expected_targets[real]).max() > 1e-3  # not trivially zero
    with torch.no_grad():
        predicted = module.compute_values(batch, embeddings)
    assert torch.allclose(batch[Columns.VF_PREDS][mask], predicted[mask], atol=1e-5)
    runner.stop()


def test_an_unfinished_episode_without_a_bootstrap_value_is_refused():
    runner, learner = _setup()
    episodes = runner.sample(num_episodes=1, explore=True)
    del episodes[0].custom_data[BOOTSTRAP_VALUE]
    with pytest.raises(ValueError, match="no bootstrap value.*SeedOnceEnvRunner"):
        learner.update(episodes=episodes, timesteps={}, num_epochs=1, minibatch_size=None)
    runner.stop()


@pytest.mark.parametrize("truncation_bootstrap", [True, False])
def test_the_horizon_end_bootstraps_only_when_asked(truncation_bootstrap):
    # With truncation_bootstrap=False the return ends at max_epochs, as the env's does: the last
    # step's target is its reward; True adds gamma x the critic's value of the last observation.
    runner, learner = _setup(truncation_bootstrap=truncation_bootstrap)
    episodes = _episodes(runner)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={})[DEFAULT_MODULE_ID]
    targets = batch[Postprocessing.VALUE_TARGETS]
    rewards = batch[Columns.REWARDS]
    for row, episode in enumerate(episodes):
        last = len(episode) - 1
        boot = bootstrap_value(episode)
        if episode.is_truncated:
            expected = rewards[row, last] + (TINY["gamma"] * boot if truncation_bootstrap else 0)
        else:  # a chunk cut by the sampler: the episode goes on, so it always bootstraps
            expected = rewards[row, last] + TINY["gamma"] * boot
        assert float(targets[row, last]) == pytest.approx(float(expected), abs=1e-5)
        assert abs(boot) > 1e-4  # the two cases differ
    runner.stop()


def test_explained_variance_return_scores_the_prediction_against_the_paid_return():
    # The steps of episodes that ended in the batch (both whole ones and the chunk that finishes
    # the warmed-up episode), against G_t of their own rewards; the cut chunk has no G_t yet.
    runner, learner = _setup()
    episodes = _episodes(runner)
    metrics = MetricsLogger()
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes,
                                       shared_data={}, metrics=metrics)[DEFAULT_MODULE_ID]
    predicted = batch[Columns.VF_PREDS]
    g, v = [], []
    for row, episode in enumerate(episodes):
        if episode.is_done:
            rewards = np.asarray(episode.get_rewards())
            g.extend(sum(TINY["gamma"] ** k * r for k, r in enumerate(rewards[t:]))
                     for t in range(len(rewards)))
            v.extend(predicted[row, :len(episode)].tolist())
    g, v = np.array(g), np.array(v)
    assert len(g) == 2 * MAX_EPOCHS + 1  # two whole episodes and the 1-step end of the third
    expected = 1 - np.var(g - v) / np.var(g)

    def logged(name):
        return metrics.peek(learner_metric_key(DEFAULT_MODULE_ID, name))

    assert logged("explained_variance_return") == pytest.approx(expected, abs=1e-5)
    assert abs(logged("explained_variance") - expected) > 1e-3  # a different target
    runner.stop()
