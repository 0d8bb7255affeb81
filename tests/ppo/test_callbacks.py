"""EsperCallbacks: env-side counters, the flat result["esper"] summary, the env-step x axis and
the collapse monitor surviving a checkpoint restore."""

import math

import pytest
import ray
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

from envs.contract import Op
from esper_rllib.model.module import FactoredLSTM
from esper_rllib.ppo.callbacks import EsperCallbacks, env_metrics
from esper_rllib.ppo.learner import FactoredPPOLearner
from esper_rllib.ppo.metric_names import ALL_METRICS, ENV_STEPS, RESULT_KEY, VERDICT, VERDICT_CODE


class FakeEpisode:
    def __init__(self, info, reward):
        self.info, self.reward = info, reward

    def get_infos(self, index):
        return self.info

    def get_rewards(self, index):
        return self.reward


def test_env_runner_counters_give_exact_fractions():
    callbacks, logger = EsperCallbacks(), MetricsLogger()
    steps = [  # (effective op as the env reports it, valid, raw reward, rollback)
        (int(Op.WAIT), True, 0.0, False), (int(Op.WAIT), True, 0.5, False),
        (int(Op.GERMINATE), False, -0.25, True), (int(Op.PRUNE), True, 1.0, False),
    ]
    for op, valid, raw, rollback in steps:
        info = {"effective_op": op, "action_valid": valid, "raw_reward": raw,
                "rollback": rollback}
        # The step reward is normalised; the metrics must use the raw one.
        callbacks.on_episode_step(episode=FakeEpisode(info, reward=99.0), metrics_logger=logger)
    callbacks.on_episode_end(
        episode=FakeEpisode({"val_acc": 61.0, "n_fossils": 2, "seed_params": 1000}, 0.0),
        metrics_logger=logger)
    counters = {k: s for k, s in logger.reduce(compile=True)[RESULT_KEY].items()}
    m = env_metrics(counters)
    assert m["op_count_WAIT"] == 2 and m["op_count_PRUNE"] == 1 and m["op_count_ADVANCE"] == 0
    assert m["op_frac_WAIT"] == 0.5 and m["op_frac_GERMINATE"] == 0.25
    assert m["invalid_action_frac"] == 0.25
    assert m["reward_mean"] == pytest.approx(1.25 / 4)
    assert (m["reward_min"], m["reward_max"]) == (-0.25, 1.0)
    assert (m["reward_zero_frac"], m["reward_pos_frac"], m["reward_neg_frac"]) == (0.25, 0.5,
                                                                                 0.25)
    assert m["rollbacks"] == 1
    assert (m["episode_val_acc"], m["episode_fossils"], m["episode_seed_params"]) == (61, 2, 1000)


def test_no_steps_gives_nan_fractions_not_zero():
    m = env_metrics({})
    assert math.isnan(m["op_frac_WAIT"]) and math.isnan(m["reward_mean"])
    assert m["op_count_WAIT"] == 0


def test_counter_not_bumped_this_iteration_counts_zero():
    # With remote env runners, a sum counter seen in an earlier iteration but not in this one
    # reduces to NaN on the driver: it means 0 ops, not an unknown fraction.
    m = env_metrics({"steps": 4.0, "op_count_WAIT": 4.0, "op_count_PRUNE": math.nan,
                     "reward_sum": 1.0, "reward_max": math.nan})
    assert m["op_count_PRUNE"] == 0 and m["op_frac_PRUNE"] == 0
    assert m["op_frac_WAIT"] == 1 and m["reward_mean"] == 0.25
    assert math.isnan(m["reward_max"])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def probe_config():
    return (
        PPOConfig()
        .environment("envs:esper/Probe4-v0")
        .env_runners(num_env_runners=0, batch_mode="complete_episodes")
        .learners(learner_class=FactoredPPOLearner)
        .training(lr=1e-3, grad_clip=1.0, use_kl_loss=False, train_batch_size_per_learner=16,
                  minibatch_size=None, num_epochs=1)
        .rl_module(rl_module_spec=RLModuleSpec(module_class=FactoredLSTM),
                   model_config={"lstm_hidden": 16, "feature_dim": 16, "head_hidden": 16,
                                 "blueprint_head_hidden": (16, 8), "max_seq_len": 2})
        .callbacks(EsperCallbacks)
        .debugging(seed=0)
    )


@pytest.mark.ray
def test_train_results_carry_every_metric_and_restore_keeps_monitor(local_ray, tmp_path):
    algo = probe_config().build_algo()
    try:
        results = [algo.train() for _ in range(2)]
        algo.save_to_path(str(tmp_path))
    finally:
        algo.stop()
    for i, result in enumerate(results):
        esper = result[RESULT_KEY]
        assert set(ALL_METRICS) <= set(esper)
        assert isinstance(esper[VERDICT], str) and esper[VERDICT_CODE] == -1  # warm-up
        # TensorBoard's x axis: env steps sampled so far.
        assert result["timesteps_total"] == esper[ENV_STEPS] == 16 * (i + 1)
        # Counters are per iteration (not accumulated, not smoothed): 16 steps each time.
        assert sum(esper[f"op_count_{op.name}"] for op in Op) == 16
        assert sum(esper[f"op_frac_{op.name}"] for op in Op) == pytest.approx(1.0)
        assert 0.0 <= esper["reward_mean"] <= 1.0
        assert math.isfinite(esper["value_loss"]) and math.isfinite(esper["kl"])

    restored = probe_config().build_algo()
    try:
        restored.restore_from_path(str(tmp_path))
        result = restored.train()
        monitor = next(c for c in restored.callbacks if isinstance(c, EsperCallbacks)).monitor
    finally:
        restored.stop()
    # The monitor continued the checkpointed history (iteration 3), and its state is not
    # left behind in the result.
    assert monitor.iteration == 3 and len(monitor.history) == 3
    assert not any(k.startswith("esper_collapse") for k in result)
