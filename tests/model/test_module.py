"""FactoredLSTM: sizes, initialisation, rollout/training agreement, critics and baselines."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.rllib.utils.torch_utils import FLOAT_MIN

from envs.contract import N_OPS, Op, action_space, observation_space
from esper_rllib.knob import ConfigError
from esper_rllib.model.distribution import FactoredCategorical
from esper_rllib.model.model_config import (
    PRESETS,
    REFERENCE_MAX_SEQ_LEN,
    resolve_model_config,
)
from esper_rllib.model.module import CRITIC_OUT, FactoredLSTM
from esper_rllib.ppo import critic_training
from tests.helpers.modules import SMALL, random_batch, small_module


@pytest.mark.parametrize(("preset", "value_head", "total"),
                         [("seed_before", 133_121, 3_624_802), ("seed_after", 174_849, 3_666_530)])
def test_parameter_counts_at_reference_sizes(preset, value_head, total):
    spec = RLModuleSpec(module_class=FactoredLSTM, observation_space=observation_space(3),
                        action_space=action_space(3), model_config=dict(PRESETS[preset]))
    module = spec.build()
    assert sum(p.numel() for p in module.value_head.parameters()) == value_head
    assert sum(p.numel() for p in module.parameters()) == total


def test_initialisation_follows_the_spec():
    module = small_module(value_head_gain=0.5)
    H = SMALL["lstm_hidden"]
    for name, bias in module.lstm.named_parameters():
        if name.startswith("bias"):
            expected = torch.zeros(4 * H)
            expected[H:2 * H] = 1.0
            assert torch.equal(bias, expected), name
    # Orthogonal with gain g: every singular value equals g.
    for head in module.policy_heads.values():
        assert torch.allclose(torch.linalg.svdvals(head[-1].weight), torch.tensor(0.01))
        assert torch.allclose(torch.linalg.svdvals(head[0].weight), torch.tensor(2 ** 0.5))
    assert torch.allclose(torch.linalg.svdvals(module.value_head[-1].weight), torch.tensor(0.5))
    assert module.blueprint_embedding.weight.std() < 0.1


def test_value_head_depth_and_layernorm_shape():
    layers = small_module(value_head_depth=4, value_head_layernorm=True).value_head
    widths = [m.out_features for m in layers if isinstance(m, torch.nn.Linear)]
    norms = [m.normalized_shape[0] for m in layers if isinstance(m, torch.nn.LayerNorm)]
    assert widths == [16, 8, 4, 1] and norms == [16, 8]
    assert layers[0].in_features == SMALL["lstm_hidden"] + N_OPS
    assert small_module(critic="v").value_head[0].in_features == SMALL["lstm_hidden"]


@pytest.mark.parametrize(("critic", "q_baseline", "critic_trunk", "knobs"), [
    ("q_op", "sampled_op", "shared", {}), ("q_op", "expected", "shared", {}),
    ("v", "sampled_op", "shared", {}), ("q_op", "sampled_op", "separate", {}),
    ("v", "sampled_op", "separate", {}), ("q_op", "sampled_op", "mlp", {}),
    ("v", "sampled_op", "mlp", {}), ("v", "sampled_op", "mlp", {"critic_feature_bins": 4}),
    ("q_op", "sampled_op", "separate", {"critic_feature_bins": 4}),
    ("q_op", "sampled_op", "mlp", {"critic_feature_bins": 4, "critic_layernorm": False}),
    ("q_op", "sampled_op", "separate", {"critic_layernorm": False})])
def test_rollout_step_by_step_matches_the_learners_packed_sequence_forward(critic, q_baseline,
                                                                           critic_trunk, knobs):
    """What the env runner computes one step at a time with the carried state equals what the
    learner computes on the zero-padded chunks with SEQ_LENS (the packed LSTM path): logits,
    values (the GAE baseline and the loss path's prediction) and the state at each chunk's end.
    """
    module = small_module(critic=critic, q_baseline=q_baseline, critic_trunk=critic_trunk,
                          **knobs)
    B, T = 3, 6
    seq_lens = torch.tensor([6, 4, 2])
    real = torch.arange(T) < seq_lens[:, None]
    batch = random_batch(module, B=B, T=T)
    # Chunks that continue an episode start from its carried state, not zeros.
    gen = torch.Generator().manual_seed(1)
    batch[Columns.STATE_IN] = {k: torch.randn(v.shape, generator=gen)
                               for k, v in batch[Columns.STATE_IN].items()}
    # Zero padding past each chunk's length, as RLlib's AddTimeDimToBatchAndZeroPad writes it.
    for v in (*batch[Columns.OBS].values(), batch[Columns.ACTIONS]):
        v[~real] = 0
    learner_batch = {**batch, Columns.SEQ_LENS: seq_lens, Columns.LOSS_MASK: real}
    with torch.no_grad():
        seq = module.forward_train(learner_batch)
        seq_baseline = module.compute_values(learner_batch)
        seq_prediction = module.compute_values(learner_batch, seq[Columns.EMBEDDINGS])
        for row, length in enumerate(seq_lens.tolist()):
            state = {k: v[row:row + 1] for k, v in batch[Columns.STATE_IN].items()}
            for t in range(length):
                step = {Columns.OBS: {k: v[row:row + 1, t:t + 1]
                                      for k, v in batch[Columns.OBS].items()},
                        Columns.ACTIONS: batch[Columns.ACTIONS][row:row + 1, t:t + 1],
                        Columns.STATE_IN: state}
                out = module.forward_exploration(step)
                embeddings = module.forward_train(step)[Columns.EMBEDDINGS]
                assert torch.allclose(out[Columns.ACTION_DIST_INPUTS][0, 0],
                                      seq[Columns.ACTION_DIST_INPUTS][row, t], atol=1e-5)
                assert torch.allclose(module.compute_values(step)[0, 0],
                                      seq_baseline[row, t], atol=1e-5)
                assert torch.allclose(module.compute_values(step, embeddings)[0, 0],
                                      seq_prediction[row, t], atol=1e-5)
                state = out[Columns.STATE_OUT]
            # Every state key: the critic trunk's too when it has its own.
            assert set(state) == set(module.get_initial_state())
            for k in state:
                assert torch.allclose(state[k][0], seq[Columns.STATE_OUT][k][row], atol=1e-5)


@pytest.mark.parametrize("critic_trunk", ["mlp", "separate"])
def test_the_critics_layernorm_and_dropout_change_the_critic_only(critic_trunk):
    plain = small_module(critic_trunk=critic_trunk, critic_layernorm=False, critic_dropout=0.2)
    default = small_module(critic_trunk=critic_trunk)
    trunk_norms = [m for m in plain.critic_trunk.modules() if isinstance(m, torch.nn.LayerNorm)]
    drops = [m.p for m in [*plain.critic_trunk.modules(), *plain.value_head]
             if isinstance(m, torch.nn.Dropout)]
    # A dropout after the encoder, the mlp trunk's hidden layer, and each of the value head's 3
    # hidden layers; the value head keeps its own LayerNorms (value_head_layernorm).
    assert trunk_norms == [] and drops == [0.2] * (5 if critic_trunk == "mlp" else 4)
    assert any(isinstance(m, torch.nn.LayerNorm) for m in plain.value_head)
    # The policy is the same network, drawn with the same initial weights.
    policy = {k: v for k, v in default.state_dict().items()
              if not k.startswith(("critic_trunk", "value_head"))}
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in policy.items())
    assert [m for m in plain.feature_net if isinstance(m, torch.nn.LayerNorm)]


def test_dropout_acts_on_training_steps_only():
    module = small_module(critic_trunk="mlp", critic_dropout=0.5)
    batch = random_batch(module, T=1)
    module.train()
    with torch.no_grad():
        noisy = [module.compute_values(batch) for _ in range(2)]
    assert not torch.equal(*noisy)
    # Judging a critic and sampling see the same deterministic values; the mode comes back.
    with critic_training.judging(module):
        judged = [module.compute_values(batch) for _ in range(2)]
    assert module.training and torch.equal(*judged)
    sampled = [module.forward_exploration(batch)[CRITIC_OUT] for _ in range(2)]
    assert torch.equal(*sampled) and module.training
    with critic_training.judging(module):
        assert torch.equal(module.forward_exploration(batch)[CRITIC_OUT], sampled[0])


@pytest.mark.parametrize(("given", "message"), [
    ({"critic_layernorm": False},
     r"critic_layernorm'\]=False: needs a critic trunk of its own \(critic_trunk mlp or "
     r"separate\)"),
    ({"critic_dropout": 0.95}, r"critic_dropout.*0 <= float <= 0.9")])
def test_the_critics_knobs_are_checked(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model_config(given)


def test_logits_are_masked_and_the_batch_is_left_alone():
    module = small_module()
    batch = random_batch(module)
    obs_before = {k: v.clone() for k, v in batch[Columns.OBS].items()}
    with torch.no_grad():
        out = module.forward_train(batch)
        module.compute_values(batch)
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert bool((logits[..., Op.FOSSILIZE] < FLOAT_MIN / 2).all())
    assert bool((logits[..., Op.WAIT] > FLOAT_MIN / 2).all())
    assert batch[Columns.OBS].keys() == obs_before.keys()
    for k, v in obs_before.items():
        assert torch.equal(batch[Columns.OBS][k], v)
    dist_cls = module.get_train_action_dist_cls()
    assert issubclass(dist_cls, FactoredCategorical)
    assert dist_cls is module.get_exploration_action_dist_cls()
    assert dist_cls is module.get_inference_action_dist_cls()


def test_env_runner_outputs_carry_no_embeddings():
    module = small_module()
    batch = random_batch(module, T=1)
    assert Columns.EMBEDDINGS not in module.forward_exploration(batch)
    assert Columns.EMBEDDINGS not in module.forward_inference(batch)
    assert Columns.EMBEDDINGS in module.forward_train(batch)


def test_loss_path_values_are_q_of_the_op_taken():
    module = small_module()
    batch = random_batch(module)
    with torch.no_grad():
        emb = module.forward_train(batch)[Columns.EMBEDDINGS]
        q = module.q_all_ops(emb)
        values = module.compute_values(batch, emb)
    ops = batch[Columns.ACTIONS][..., 0]
    assert q.shape == (*ops.shape, N_OPS)
    assert q.std(-1).min() > 1e-3  # the op changes Q, so picking the right one matters
    assert torch.allclose(values, q.gather(-1, ops.unsqueeze(-1)).squeeze(-1), atol=1e-6)
    assert torch.allclose(module.value_of_ops(emb, ops), values)


def _q_of_every_op(q_baseline):
    """A module with this GAE baseline, a random batch, its training outputs and Q(s, op) of
    every op."""
    module = small_module(q_baseline=q_baseline)
    batch = random_batch(module)
    with torch.no_grad():
        out = module.forward_train(batch)
        q = module.q_all_ops(out[Columns.EMBEDDINGS])
    return module, batch, out, q


def test_expected_baseline_is_the_policy_weighted_q():
    module, batch, out, q = _q_of_every_op("expected")
    with torch.no_grad():
        baseline = module.compute_values(batch)
    op_logits = out[Columns.ACTION_DIST_INPUTS][..., :N_OPS]
    pi = torch.softmax(op_logits, -1)
    assert torch.count_nonzero(pi[..., Op.FOSSILIZE]) == 0
    assert torch.allclose(baseline, (pi * q).sum(-1), atol=1e-6)


def test_sampled_op_baseline_bootstraps_with_the_argmax_op():
    module, batch, out, q = _q_of_every_op("sampled_op")
    greedy = out[Columns.ACTION_DIST_INPUTS][..., :N_OPS].argmax(-1)
    # The artificial bootstrap step carries a stale op: make it differ from the argmax.
    batch[Columns.ACTIONS][:, -1, 0] = torch.where(greedy[:, -1] == Op.WAIT, Op.GERMINATE,
                                                   Op.WAIT)
    loss_mask = torch.ones(batch[Columns.ACTIONS].shape[:2], dtype=torch.bool)
    loss_mask[:, -1] = False
    with torch.no_grad():
        values = module.compute_values({**batch, Columns.LOSS_MASK: loss_mask})
    taken = batch[Columns.ACTIONS][..., 0]
    q_taken = q.gather(-1, taken.unsqueeze(-1)).squeeze(-1)
    q_greedy = q.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(values[:, :-1], q_taken[:, :-1], atol=1e-6)
    assert torch.allclose(values[:, -1], q_greedy[:, -1], atol=1e-6)
    assert not torch.allclose(q_taken[:, -1], q_greedy[:, -1])


def test_v_critic_is_a_state_value():
    module = small_module(critic="v")
    batch = random_batch(module)
    with torch.no_grad():
        emb = module.forward_train(batch)[Columns.EMBEDDINGS]
        assert torch.allclose(module.compute_values(batch), module.compute_values(batch, emb))
        other_ops = {**batch, Columns.ACTIONS: torch.zeros_like(batch[Columns.ACTIONS])}
        assert torch.allclose(module.compute_values(other_ops), module.compute_values(batch))
    with pytest.raises(ValueError, match="critic"):
        module.q_all_ops(emb)
    with pytest.raises(ValueError, match="critic"):
        module.value_of_ops(emb, batch[Columns.ACTIONS][..., 0])


def test_checkpoint_round_trip_keeps_config_and_weights(tmp_path):
    module = small_module(critic="v", value_head_depth=3)
    module.save_to_path(tmp_path)
    restored = RLModule.from_checkpoint(tmp_path)
    batch = random_batch(module)
    assert isinstance(restored, FactoredLSTM)
    assert restored.model_config == module.model_config
    with torch.no_grad():
        assert torch.equal(restored.compute_values(batch), module.compute_values(batch))


def test_model_config_defaults_and_rllib_keys():
    module = small_module()
    assert module.model_config["max_seq_len"] == SMALL["max_seq_len"]
    assert resolve_model_config({})["max_seq_len"] == REFERENCE_MAX_SEQ_LEN
    # PPOConfig merges vf_share_layers into every model_config.
    assert "vf_share_layers" not in resolve_model_config({"vf_share_layers": False})
    assert module.get_initial_state()["h"].shape == (SMALL["lstm_hidden"],)
    assert module.get_initial_state()["c"].dtype == np.float32


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lstm_size": 64}, "unknown key.*lstm_size.*known keys"),
    ({"critic": "q"}, "critic.*q_op.*v"),
    ({"q_baseline": "mean"}, "q_baseline.*sampled_op.*expected"),
    ({"lstm_hidden": 0}, "lstm_hidden.*int >= 1"),
    ({"value_head_depth": 2.0}, "value_head_depth.*int >= 1"),
    ({"value_head_depth": 7, "lstm_hidden": 32}, "value_head_depth.*at most 6"),
    ({"value_head_layernorm": "yes"}, "value_head_layernorm.*true \\| false"),
    ({"value_head_gain": -1}, "value_head_gain.*float > 0"),
    ({"blueprint_head_hidden": 256}, "blueprint_head_hidden.*comma-separated ints"),
])
def test_bad_model_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_module(**overrides)
