"""The critic's regression target (knob ``value_target``): GAE's lambda-return, which holds the
critic's own values, or the return-to-go, which holds none of them. Hand-made rewards and
bootstrap values on real sampled episodes (whole ones cut at max_epochs, one finishing a
chunk, one cut by the sampler) through the learner's own pipeline."""

import copy

import numpy as np
import pytest
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from esper_rllib.knob import ConfigError
from esper_rllib.ppo.env_runner import BOOTSTRAP_VALUE, SeedOnceEnvRunner
from esper_rllib.ppo.gae import learner_metric_key
from esper_rllib.run.config import build_ppo_config, resolve_knobs
from tests.ppo.test_rollout_values import TINY, _episodes

GAMMA = TINY["gamma"]
# A value after the last step that no return holds: visible wherever a target bootstraps.
BOOT = 7.0


def _config(**knobs):
    return build_ppo_config(resolve_knobs("quick", overrides={**TINY, **knobs}))


def _learner(runner, **knobs):
    learner = _config(**knobs).build_learner(env=runner.env.unwrapped)
    learner.module[DEFAULT_MODULE_ID].load_state_dict(runner.module.state_dict())
    return learner


def _hand_made(episodes):
    """The episodes with rewards 1, -2, 3, -4, ... (a different start per episode) and the
    value after each one's last step set to BOOT."""
    for i, episode in enumerate(episodes):
        n = len(episode)
        episode.set_rewards(new_data=np.array([(-1) ** t * (t + 1 + i) for t in range(n)],
                                              dtype=np.float32))
        episode.custom_data[BOOTSTRAP_VALUE] = BOOT
    return episodes


def _return_to_go(episode):
    """G_t = sum_k gamma^k r_{t+k} to the episode's end, plus gamma^(n - t) x BOOT where the
    sampler cut it (its return is not known yet)."""
    rewards = list(episode.get_rewards())
    n = len(rewards)
    tail = 0.0 if episode.is_done else BOOT
    return [sum(GAMMA ** k * rewards[t + k] for k in range(n - t)) + GAMMA ** (n - t) * tail
            for t in range(n)]


def _pipeline(learner, episodes, metrics=None):
    return learner._learner_connector(rl_module=learner.module, batch={},
                                      episodes=copy.deepcopy(episodes), shared_data={},
                                      metrics=metrics)[DEFAULT_MODULE_ID]


@pytest.fixture(scope="module")
def sampled():
    runner = SeedOnceEnvRunner(config=_config())
    episodes = _hand_made(_episodes(runner))
    assert any(not e.is_done for e in episodes)  # a chunk cut by the sampler
    assert sum(e.is_truncated for e in episodes) >= 2  # whole episodes ended at max_epochs
    yield runner, episodes
    runner.stop()


@pytest.mark.parametrize("truncation_bootstrap", [True, False])
def test_return_to_go_targets_are_the_paid_return_and_the_advantages_stay_gaes(
        sampled, truncation_bootstrap):
    runner, episodes = sampled
    gae = _pipeline(_learner(runner, truncation_bootstrap=truncation_bootstrap), episodes)
    rtg = _pipeline(_learner(runner, truncation_bootstrap=truncation_bootstrap,
                             value_target="return_to_go"), episodes)
    gae_off = []
    for row, episode in enumerate(episodes):
        n = len(episode)
        expected = _return_to_go(episode)
        targets = rtg[Postprocessing.VALUE_TARGETS][row, :n].numpy()
        # At max_epochs nothing is added whatever truncation_bootstrap says, and no value of
        # the critic enters before it: exactly the return the rewards paid.
        np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-5)
        gae_off.append(np.abs(gae[Postprocessing.VALUE_TARGETS][row, :n].numpy() - expected))
    # GAE's targets hold the critic's values (and BOOT at the horizon when asked).
    assert np.concatenate(gae_off).max() > 1e-2
    # Only the critic's target moves: the policy's advantages and the rollout predictions are
    # the same as with GAE's targets.
    for column in (Postprocessing.ADVANTAGES, "vf_preds"):
        np.testing.assert_array_equal(rtg[column].numpy(), gae[column].numpy())


def test_with_return_to_go_targets_the_verdicts_ev_is_the_ev_against_the_return(sampled):
    runner, episodes = sampled
    ended = [e for e in episodes if e.is_done]
    metrics = MetricsLogger()
    _pipeline(_learner(runner, value_target="return_to_go"), ended, metrics)

    def logged(name):
        return metrics.peek(learner_metric_key(DEFAULT_MODULE_ID, name))

    assert logged("explained_variance") == pytest.approx(logged("explained_variance_return"),
                                                         abs=1e-6)
    paid = np.concatenate([_return_to_go(e) for e in ended])
    assert logged("return_mean") == pytest.approx(paid.mean(), rel=1e-5)


def test_value_target_is_one_of_its_choices():
    with pytest.raises(ConfigError, match=r"value_target.*'mc'.*gae \| return_to_go"):
        resolve_knobs("quick", overrides={"value_target": "mc"})
    assert resolve_knobs("quick")["value_target"] == "gae"  # the reference, in every preset
