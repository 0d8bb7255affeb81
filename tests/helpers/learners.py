"""Real RLlib learners at tiny sizes on the probe envs: a config, a learner with a local env
runner, sampling the learner's policy and one update (the learner, critic-phase and critic-training
tests share them)."""

import copy

import numpy as np
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from envs.contract import action_space, observation_space
from esper_rllib.model.module import FactoredLSTM
from esper_rllib.ppo.learner import FactoredPPOLearner

SMALL_MODEL = {"lstm_hidden": 32, "feature_dim": 16, "head_hidden": 16,
               "blueprint_head_hidden": (16, 8), "max_seq_len": 4}


def make_config(env="Probe3", lr=1e-2, use_kl_loss=False, **learner_config):
    return (
        PPOConfig()
        .environment(f"envs:esper/{env}-v0", observation_space=observation_space(3),
                     action_space=action_space(3))
        .env_runners(num_env_runners=0, batch_mode="complete_episodes")
        .learners(learner_class=FactoredPPOLearner, learner_config_dict=learner_config)
        .training(lr=lr, grad_clip=1.0, use_kl_loss=use_kl_loss, gamma=0.9, lambda_=0.95)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=FactoredLSTM),
                   model_config=SMALL_MODEL)
        .debugging(seed=0)
    )


def build(config):
    return config.build_learner(), SingleAgentEnvRunner(config=config)


def sample(learner, runner, n_episodes=8):
    """Episodes of the learner's current policy: its weights synced to the runner, as PPO does."""
    weights = learner.get_state(components=COMPONENT_RL_MODULE)[COMPONENT_RL_MODULE]
    runner.set_state({COMPONENT_RL_MODULE: weights})
    return runner.sample(num_episodes=n_episodes)


def learn(learner, episodes, num_epochs=1, minibatch_size=None):
    """One learner update on ``episodes`` (copied: the learner connector extends them in place);
    returns our metrics (peeked) and the raw results."""
    episodes = copy.deepcopy(episodes)
    steps = sum(len(e) for e in episodes)
    results = learner.update(episodes=episodes, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: steps},
                             num_epochs=num_epochs, minibatch_size=minibatch_size)
    metrics = {k: s.peek() for k, s in results[DEFAULT_MODULE_ID]["esper"].items()}
    return metrics, results


def update(learner, runner, num_epochs=1, n_episodes=8):
    """One training iteration: sample with the learner's policy, update; returns our metrics
    (peeked), the raw results and the sampled rewards."""
    episodes = sample(learner, runner, n_episodes)
    # The learner connector appends an artificial step to each episode: keep the real rewards.
    rewards = np.concatenate([np.asarray(e.get_rewards(), dtype=np.float64) for e in episodes])
    metrics, results = learn(learner, episodes, num_epochs)
    return metrics, results, rewards


def config_of(critic_trunk="shared", env="Probe2", **learner_config):
    config = make_config(env=env, **learner_config)
    return config.rl_module(model_config={**SMALL_MODEL, "critic_trunk": critic_trunk})


def module_of(learner):
    return learner.module[DEFAULT_MODULE_ID].unwrapped()


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def around_value_phase(learner, episodes, before=None):
    """One update with its value phase watched: ``before(module_id, module, batch)`` (if given)
    runs just before the phase and its dict is returned with the module's parameters just
    after it (``"after"``), beside the update's metrics."""
    kept = {}
    original = learner._value_phase

    def spy(module_id, module, batch):
        kept.update(before(module_id, module, batch) if before else {})
        original(module_id, module, batch)
        kept["after"] = snapshot(module)

    learner._value_phase = spy
    try:
        metrics, _ = learn(learner, episodes)
    finally:
        del learner._value_phase
    return kept, metrics
