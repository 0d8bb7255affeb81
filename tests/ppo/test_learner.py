"""The reference PPO loss on hand-made tensors, and FactoredPPOLearner as a real RLlib Learner
(small FactoredLSTM, episodes sampled by a real env runner on the probe envs).

The seed document: docs/seed-document.md."""

import math

import numpy as np
import pytest
import torch
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from envs.contract import HEADS, RELEVANCE, Op
from esper_rllib.ppo import loss
from esper_rllib.ppo.gae import learner_metric_key
from esper_rllib.ppo.learner import HEAD_ENTROPY_COEFS
from esper_rllib.ppo.learner_config import LEARNER_DEFAULTS, resolve_learner_config
from tests.helpers.learners import SMALL_MODEL, build, learn, make_config, sample, update

H = len(HEADS)
COEFS = torch.tensor(list(HEAD_ENTROPY_COEFS.values()))


def rel(*ops):
    return torch.as_tensor(RELEVANCE[list(ops)])


# -- the loss on hand-made tensors --------------------------------------------------------------


def test_per_head_and_joint_ratios():
    # Two real steps: a WAIT (only the op head relevant) and a PRUNE (op, slot, alpha_speed,
    # alpha_curve), advantages +1 and -1.
    relevance = rel(Op.WAIT, Op.PRUNE).unsqueeze(0)  # (1, 2, H)
    old = torch.zeros(1, 2, H)
    new = torch.zeros(1, 2, H)
    new[0, 0, 0] = math.log(1.1)   # WAIT step: op ratio 1.1 (inside the clip range)
    new[0, 1, 0] = math.log(1.5)   # PRUNE step: op ratio 1.5
    new[0, 1, 1] = math.log(0.5)   # slot ratio 0.5
    new[0, 1, 2] = math.log(9.0)   # blueprint: irrelevant for PRUNE
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)

    per_head = loss.policy_loss(new, old, relevance, adv, mask, 0.2, "per_head")
    # op head over both steps: mean(-min(1.1, 1.1), -min(-1.5, -1.2)) = mean(-1.1, 1.5);
    # slot (PRUNE only): -min(-0.5, -0.8) = 0.8; alpha_speed, alpha_curve: ratio 1 -> 1.0 each.
    assert float(per_head) == pytest.approx((-1.1 + 1.5) / 2 + 0.8 + 1.0 + 1.0)

    joint = loss.policy_loss(new, old, relevance, adv, mask, 0.2, "joint")
    # Joint ratios: 1.1 and 1.5 * 0.5 = 0.75 (blueprint ignored): mean(-1.1, -min(-0.75, -0.8)).
    assert float(joint) == pytest.approx((-1.1 + 0.8) / 2)

    with pytest.raises(ValueError, match="ratio_mode"):
        loss.policy_loss(new, old, relevance, adv, mask, 0.2, "bogus")


@pytest.mark.parametrize("mode", loss.RATIO_MODES)
def test_irrelevant_heads_and_padding_add_nothing(mode):
    torch.manual_seed(0)
    relevance = rel(Op.WAIT, Op.FOSSILIZE, Op.GERMINATE).unsqueeze(0)
    mask = torch.tensor([[True, True, False]])  # the GERMINATE step is padding
    old = torch.randn(1, 3, H)
    adv = torch.tensor([[0.7, -0.3, 5.0]])
    entropy, legal = torch.rand(1, 3, H), torch.full((1, 3, H), 4)
    new = (old + 0.1 * torch.randn(1, 3, H)).requires_grad_()
    base = loss.policy_loss(new, old, relevance, adv, mask, 0.2, mode)
    bonus, _ = loss.entropy_bonus(entropy, legal, relevance, mask, COEFS)
    base.backward()
    # No gradient reaches an irrelevant head or a padded step...
    assert torch.all(new.grad[relevance.bool() == 0] == 0)
    assert torch.all(new.grad[~mask] == 0)
    # ... and changing them changes neither the policy loss nor the entropy bonus.
    irrelevant = (relevance == 0) | ~mask.unsqueeze(-1)
    noise = torch.where(irrelevant, torch.randn(1, 3, H), torch.zeros(1, 3, H))
    changed = loss.policy_loss(new.detach() + noise, old, relevance, adv, mask, 0.2, mode)
    assert float(changed) == pytest.approx(base.item())
    bonus2, _ = loss.entropy_bonus(entropy + noise.abs(), legal, relevance, mask, COEFS)
    assert float(bonus2) == pytest.approx(float(bonus))


def test_value_loss_and_reference_clipping():
    targets = torch.tensor([[10.0, 0.0, 3.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, 0.5, 99.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    # Unclipped: 0.5 x mean((1-10)^2, 0.5^2) over real steps.
    assert loss.value_loss(values, targets, old, mask, None).item() == pytest.approx(
        0.5 * (81 + 0.25) / 2)
    # Clipped (c = 0.2): V_clip = (0.2, 0.2); max of squared errors: (max(81, 96.04),
    # max(0.25, 0.04)).
    clipped = loss.value_loss(values, targets, old, mask, 0.2)
    assert clipped.item() == pytest.approx(0.5 * (96.04 + 0.25) / 2)
    clipped.backward()
    # Step 0: the clipped error wins and V is outside V_old +- c, so no gradient (PPO2-style);
    # step 1: the unclipped error wins and trains; padding never does.
    assert values.grad[0, 0] == 0
    assert values.grad[0, 1] != 0
    assert values.grad[0, 2] == 0
    # An error of 9 with c = 10: the reference still trains it, whereas RLlib's clamp of the
    # squared error at vf_clip_param = 10 would give no gradient at all.
    big_error = torch.tensor([[1.0]], requires_grad=True)
    loss.value_loss(big_error, torch.tensor([[10.0]]), torch.tensor([[0.5]]),
                    torch.tensor([[True]]), 10.0).backward()
    assert float(big_error.grad) == pytest.approx(-9.0)  # d/dV 0.5 (V - 10)^2 at V = 1


def test_entropy_bonus_is_normalised_and_weighted():
    # Uniform heads: normalised entropy 1 everywhere; GERMINATE's relevant heads sum to
    # 1 + 1 + 1.3 + 1.2 + 1.3 + 1.2 = 7.0, and a head with one legal value contributes 0.
    legal = torch.tensor([6, 3, 13, 4, 3, 3, 4, 5]).expand(1, 1, H).clone()
    entropy = torch.log(legal.float())
    relevance = rel(Op.GERMINATE).view(1, 1, H)
    mask = torch.ones(1, 1, dtype=torch.bool)
    bonus, per_head = loss.entropy_bonus(entropy, legal, relevance, mask, COEFS)
    assert float(bonus) == pytest.approx(7.0)
    assert per_head.tolist() == pytest.approx([1, 1, 1, 1, 1, 1, 0, 0])
    legal[..., 2] = 1  # only one blueprint legal: nothing to choose
    bonus, _ = loss.entropy_bonus(torch.where(legal > 1, entropy, 0.0), legal, relevance, mask,
                                  COEFS)
    assert float(bonus) == pytest.approx(7.0 - 1.3)
    assert sum(HEAD_ENTROPY_COEFS.values()) == pytest.approx(9.4)


def test_learner_config_validation():
    assert resolve_learner_config(None) == LEARNER_DEFAULTS
    assert resolve_learner_config({"value_clip": 10, "ratio_mode": "joint"})["value_clip"] == 10.0
    with pytest.raises(ValueError, match="unknown key.*'vf_coef'.*known keys"):
        resolve_learner_config({"vf_coef": 1.0})
    with pytest.raises(ValueError, match="ratio_mode.*per_head"):
        resolve_learner_config({"ratio_mode": "sum"})
    with pytest.raises(ValueError, match="entropy_coef"):
        resolve_learner_config({"entropy_coef": -0.1})
    with pytest.raises(ValueError, match="value_clip.*none"):
        resolve_learner_config({"value_clip": "big"})


# -- a real RLlib Learner -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probe3():
    return build(make_config())


def test_one_gradient_step_kl_after_step_while_approx_kl_pre_is_zero(probe3):
    m, results, _ = update(*probe3)
    # One gradient step: the policy at that step is the rollout's.
    assert m["gradient_steps"] == 1
    assert m["approx_kl_pre"] == pytest.approx(0.0, abs=1e-9)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m["clip_fraction"] == 0.0
    # The seed document's "KL ~ 0" came from measuring before the step; after it, it is not 0.
    assert m["kl"] > 1e-5
    # The op head is relevant at every step: its KL is measured and the step moved it.
    assert m["kl_op"] > 0 and m["clip_fraction_op"] == 0.0
    assert m["explained_variance_post"] != m["explained_variance"]
    assert m["lstm_h_norm"] > 0 and m["lstm_c_norm"] > 0
    # Every learner metric arrives, once, with a per-iteration reduce (not the sticky EMA).
    from esper_rllib.ppo.metric_names import LEARNER_METRICS, OPTIONAL_LEARNER_METRICS
    assert set(LEARNER_METRICS) - set(OPTIONAL_LEARNER_METRICS) <= set(m)
    assert not set(OPTIONAL_LEARNER_METRICS) & set(m)  # PopArt and the value phase are off
    # One item per iteration (per-step values are reduced over the iteration's steps first),
    # cleared when the iteration's results are reduced.
    reduces = {k: type(s).__name__ for k, s in results[DEFAULT_MODULE_ID]["esper"].items()}
    assert set(reduces.values()) == {"ItemStats"}


def test_metrics_are_per_iteration_means_not_sticky(probe3):
    learner, runner = probe3
    norms = []
    original = learner.postprocess_gradients_for_module

    def spy(**kw):
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [g.norm() for g in kw["module_gradients_dict"].values()]))))
        return original(**kw)

    learner.postprocess_gradients_for_module = spy
    try:
        update(learner, runner)  # an earlier iteration must not leak into the next one
        norms.clear()
        m, _, _ = update(learner, runner, num_epochs=3)
    finally:
        del learner.postprocess_gradients_for_module
    assert len(norms) == 3
    assert m["grad_norm_pre_clip"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert m["clip_ratio"] == pytest.approx(np.mean(norms) / 1.0, rel=1e-5)
    # Later epochs see a changed policy: the ratio moves away from 1 and approx_kl_pre stays
    # the first step's 0.
    assert m["ratio_max"] > 1.0
    assert m["approx_kl_pre"] == pytest.approx(0.0, abs=1e-9)


def test_lstm_state_norms_are_taken_at_the_last_real_step(probe3):
    learner, runner = probe3
    kept = []
    original = learner._make_batch_if_necessary
    learner._make_batch_if_necessary = lambda **kw: kept.append(original(**kw)) or kept[-1]
    try:
        m, _, _ = update(learner, runner)
    finally:
        del learner._make_batch_if_necessary
    batch = kept[0].policy_batches[DEFAULT_MODULE_ID]
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    real_steps = batch[Columns.LOSS_MASK].sum(-1)
    # Each chunk of the learner batch ends with RLlib's artificial bootstrap step: its state
    # is one step past the episode. Expected: the updated module run step by step over the
    # chunk's real steps only.
    assert bool((real_steps < batch[Columns.SEQ_LENS]).any())
    norms = {"h": [], "c": []}
    with torch.no_grad():
        for row, n_real in enumerate(real_steps.tolist()):
            state = {k: v[row:row + 1] for k, v in batch[Columns.STATE_IN].items()}
            for t in range(n_real):
                obs = {k: v[row:row + 1, t:t + 1] for k, v in batch[Columns.OBS].items()}
                state = module.forward_inference({Columns.OBS: obs, Columns.STATE_IN: state})[
                    Columns.STATE_OUT]
            if n_real:
                for k in norms:
                    norms[k].append(float(state[k].norm()))
    assert m["lstm_h_norm"] == pytest.approx(np.mean(norms["h"]), rel=1e-5)
    assert m["lstm_c_norm"] == pytest.approx(np.mean(norms["c"]), rel=1e-5)


def test_clip_ratio_and_head_norms_from_a_known_gradient(probe3):
    learner, _ = probe3
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    params = list(module.parameters())
    # Every gradient entry 1: the global norm is sqrt(number of parameters).
    grads = {learner.get_param_ref(p): torch.ones_like(p) for p in params}
    n_params = sum(p.numel() for p in params)
    config = learner.config.get_config_for_module(DEFAULT_MODULE_ID)
    clipped = learner.postprocess_gradients_for_module(
        module_id=DEFAULT_MODULE_ID, config=config, module_gradients_dict=grads)
    learner.after_gradient_based_update(timesteps={})  # the iteration's metrics are logged
    logged = learner.metrics.reduce()[DEFAULT_MODULE_ID]["esper"]
    assert logged["grad_norm_pre_clip"].peek() == pytest.approx(math.sqrt(n_params), rel=1e-5)
    assert logged["clip_ratio"].peek() == pytest.approx(math.sqrt(n_params) / config.grad_clip,
                                                        rel=1e-5)
    n_value = sum(p.numel() for p in module.value_head.parameters())
    assert logged["grad_norm_value"].peek() == pytest.approx(math.sqrt(n_value), rel=1e-5)
    n_op = sum(p.numel() for p in module.policy_heads["op"].parameters())
    assert logged["grad_norm_op"].peek() == pytest.approx(math.sqrt(n_op), rel=1e-5)
    # Then RLlib's global-norm clip applies: the gradient leaves with norm max_grad_norm.
    after = torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped.values()]))
    assert float(after) == pytest.approx(config.grad_clip, rel=1e-4)


def test_non_finite_gradient_entries_become_zero(probe3):
    learner, _ = probe3
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    params = list(module.parameters())
    grads = {learner.get_param_ref(p): torch.full_like(p, 1e-3) for p in params}
    bad = grads[learner.get_param_ref(params[0])]
    bad.view(-1)[0], bad.view(-1)[-1] = float("nan"), float("inf")
    config = learner.config.get_config_for_module(DEFAULT_MODULE_ID)
    clipped = learner.postprocess_gradients_for_module(
        module_id=DEFAULT_MODULE_ID, config=config, module_gradients_dict=grads)
    learner.after_gradient_based_update(timesteps={})
    logged = learner.metrics.reduce()[DEFAULT_MODULE_ID]["esper"]
    assert all(bool(torch.isfinite(g).all()) for g in clipped.values())
    assert bad.view(-1)[0] == 0 and bad.view(-1)[-1] == 0 and bad.view(-1)[1] == 1e-3
    n_finite = sum(p.numel() for p in params) - 2
    assert logged["grad_norm_pre_clip"].peek() == pytest.approx(1e-3 * math.sqrt(n_finite),
                                                                rel=1e-4)


def test_gae_statistics_over_real_steps_only():
    # Probe 1: one step, reward +1, terminated. Every real step's return is exactly 1; the
    # artificial bootstrap steps (which RLlib's statistics would include) are ignored.
    learner, runner = build(make_config(env="Probe1"))
    m, _, _ = update(learner, runner, n_episodes=12)
    assert m["return_mean"] == pytest.approx(1.0)
    assert m["return_std"] == pytest.approx(0.0, abs=1e-6)
    # Constant returns: explained variance is undefined, reported as NaN with the flag.
    assert math.isnan(m["explained_variance"]) and m["explained_variance_undefined"] == 1.0
    # Raw advantage = 1 - V(s, a): its statistics mirror the critic's.
    assert m["pre_norm_advantage_mean"] == pytest.approx(1.0 - m["value_mean"], abs=1e-6)
    assert m["pre_norm_advantage_std"] == pytest.approx(m["value_std"], rel=1e-3, abs=1e-7)
    assert m["q_spread"] >= 0 and not math.isnan(m["q_spread_start"])


def test_gae_normalises_over_real_steps_only():
    # Probe 2: one step, reward = an observation feature, terminated, so G = r exactly.
    learner, runner = build(make_config(env="Probe2"))
    m, _, rewards = update(learner, runner, n_episodes=16)
    assert m["return_mean"] == pytest.approx(rewards.mean(), rel=1e-5)
    assert m["return_std"] == pytest.approx(rewards.std(), rel=1e-4)
    assert m["explained_variance_undefined"] == 0.0 and math.isfinite(m["explained_variance"])
    # Normalised with the real steps' statistics: exactly mean 0, std 1 there (RLlib's GAE,
    # which also counts the 16 bootstrap steps, would not give this).
    assert m["advantage_mean"] == pytest.approx(0.0, abs=1e-5)
    assert m["advantage_std"] == pytest.approx(1.0, abs=1e-4)
    assert m["pre_norm_advantage_std"] > 0.05


@pytest.mark.parametrize(("option", "metric"), [({"ratio_mode": "joint"}, "policy_loss"),
                                               ({"value_clip": 1e-6}, "value_loss")])
def test_other_loss_options_train_and_change_the_loss(option, metric):
    # The same weights and episodes with and without the option: two epochs, so that the
    # second sees ratios away from 1 and predictions away from the rollout's.
    reference, runner = build(make_config(env="Probe4"))
    learner = make_config(env="Probe4", **option).build_learner()
    weights = reference.get_state(components=COMPONENT_RL_MODULE)[COMPONENT_RL_MODULE]
    learner.set_state({COMPONENT_RL_MODULE: weights})
    episodes = sample(reference, runner)
    m_ref, _ = learn(reference, episodes, num_epochs=2)
    m, _ = learn(learner, episodes, num_epochs=2)
    assert all(math.isfinite(m[k]) for k in ("policy_loss", "value_loss", "total_loss", "kl"))
    assert m["kl"] > 0
    # An ignored option would give the reference's loss to the digit.
    assert m[metric] != pytest.approx(m_ref[metric], rel=1e-6, abs=1e-9)


def test_state_value_critic_has_no_q_spread():
    config = make_config(env="Probe2")
    config.rl_module(model_config={**SMALL_MODEL, "critic": "v"})
    learner, runner = build(config)
    m, _, _ = update(learner, runner)
    assert "q_spread" not in m and math.isfinite(m["explained_variance_post"])


def test_bad_settings_fail_at_build():
    with pytest.raises(ValueError, match="use_kl_loss"):
        make_config(use_kl_loss=True).build_learner()
    with pytest.raises(ValueError, match="learner_config_dict.*unknown"):
        make_config(value_coeff=1.0).build_learner()


@pytest.mark.parametrize(("setting", "ours"), [({"entropy_coeff": 0.01}, "entropy_coef"),
                                               ({"entropy_coeff": [[0, 0.1], [100, 0.0]]},
                                                "entropy_coef"),
                                               ({"vf_loss_coeff": 0.5}, "value_coef")])
def test_rllib_loss_coefficients_are_refused_naming_ours(setting, ours):
    # Our loss never reads RLlib's coefficients: a run setting them would silently differ from
    # what its config says.
    with pytest.raises(ValueError, match=f"{next(iter(setting))}.*ignored.*'{ours}'"):
        make_config().training(**setting).build_learner()


def test_learner_metric_key_is_namespaced():
    # Apart from RLlib's own learners/<module>/total_loss etc.
    assert learner_metric_key("default_policy", "total_loss") == (
        "default_policy", "esper", "total_loss")


# -- critic learning rate, minibatches, PopArt ------------------------------------------------


def twin_learners(env="Probe3", model_overrides=(None, None), **learner_configs):
    """Two learners with the same weights; ``learner_configs`` maps "a"/"b" to each one's
    learner_config_dict, ``model_overrides`` gives each one's extra model_config."""
    learners = []
    for name, extra in zip("ab", model_overrides, strict=True):
        config = make_config(env=env, **learner_configs.get(name, {}))
        config.rl_module(model_config={**SMALL_MODEL, **(extra or {})})
        learners.append(config.build_learner())
    a, b = (lr.module[DEFAULT_MODULE_ID].unwrapped() for lr in learners)
    b.load_state_dict(a.state_dict(), strict=False)  # PopArt buffers exist in one only
    return learners


def params_of(module):
    value = [p.detach().clone() for p in module.value_head.parameters()]
    value_ids = {id(p) for p in module.value_head.parameters()}
    rest = [p.detach().clone() for p in module.parameters() if id(p) not in value_ids]
    return value, rest


def test_critic_lr_scale_multiplies_the_value_heads_step_only():
    plain, scaled = twin_learners(a={}, b={"critic_lr_scale": 10.0})
    runner = SingleAgentEnvRunner(config=make_config())
    episodes = sample(plain, runner)
    steps = {}
    for name, learner in (("plain", plain), ("scaled", scaled)):
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        before = params_of(module)
        learn(learner, episodes)
        after = params_of(module)
        steps[name] = [torch.cat([(y - x).flatten() for x, y in zip(b, a, strict=True)])
                       for b, a in zip(before, after, strict=True)]
    # Same weights and batch, so the same gradients: Adam's step is lr-proportional per entry.
    assert torch.allclose(steps["scaled"][0], 10 * steps["plain"][0], rtol=1e-3, atol=1e-9)
    assert steps["plain"][0].abs().max() > 0
    assert torch.allclose(steps["scaled"][1], steps["plain"][1], rtol=1e-4, atol=1e-9)


def test_lr_schedule_drives_both_groups_keeping_the_critic_scale():
    schedule = [[0, 1e-2], [16, 1e-3]]
    learner, runner = build(make_config(lr=schedule, critic_lr_scale=3.0))
    optimizer = learner.get_optimizer(DEFAULT_MODULE_ID)
    group_lrs = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(2):
        update(learner, runner)
        group_lrs.append([g["lr"] for g in optimizer.param_groups])
    assert group_lrs[0] == pytest.approx([1e-2, 3e-2])
    assert group_lrs[-1][0] < group_lrs[0][0]  # the schedule moved the lr ...
    assert all(lrs[1] == pytest.approx(3 * lrs[0]) for lrs in group_lrs)  # ... and the scale
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {
        id(p) for p in module.value_head.parameters()}


def test_gradient_clip_stays_one_global_norm_with_a_critic_lr_scale():
    # RLlib clips per optimizer: with the critic in a second optimizer, each part would be
    # clipped to max_grad_norm alone. One optimizer with two groups keeps one global norm.
    learner, _ = build(make_config(critic_lr_scale=10.0))
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    value_ids = {id(p) for p in module.value_head.parameters()}
    grads = {learner.get_param_ref(p): torch.full_like(p, 3.0 if id(p) in value_ids else 1.0)
             for p in module.parameters()}
    config = learner.config.get_config_for_module(DEFAULT_MODULE_ID)
    clipped = learner.postprocess_gradients_for_module(
        module_id=DEFAULT_MODULE_ID, config=config, module_gradients_dict=grads)
    learner.metrics.reduce()
    after = torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped.values()]))
    assert float(after) == pytest.approx(config.grad_clip, rel=1e-4)
    ratios = {float(g.flatten()[0]) for g in clipped.values()}
    assert len(ratios) == 2 and max(ratios) / min(ratios) == pytest.approx(3.0)


def test_minibatches_hold_whole_episodes_and_count_as_gradient_steps():
    learner, runner = build(make_config(minibatches=2))
    seen = []
    original = learner.compute_loss_for_module

    def spy(**kw):
        seen.append((kw["batch"][Columns.SEQ_LENS].tolist(),
                     int(kw["batch"][Columns.LOSS_MASK].sum())))
        return original(**kw)

    learner.compute_loss_for_module = spy
    try:
        m, _, _ = update(learner, runner, num_epochs=3, n_episodes=8)
    finally:
        del learner.compute_loss_for_module
    # Probe 3: 2-step episodes, one sequence each (2 real steps + the bootstrap step).
    assert m["gradient_steps"] == 3 * 2
    assert seen == [([3, 3, 3, 3], 8)] * 6


def test_minibatch_settings_that_would_cut_episodes_are_refused():
    learner, runner = build(make_config(minibatches=2))
    episodes = sample(learner, runner, n_episodes=4)
    with pytest.raises(ValueError, match=r"minibatch_size=8: .*\(minibatch_size=None\)"):
        learn(learner, episodes, minibatch_size=8)
    learner, runner = build(make_config(minibatches=5))
    with pytest.raises(ValueError, match="minibatches=5: .*only 4 episodes; allowed: 1..4"):
        learn(learner, sample(learner, runner, n_episodes=4))
    with pytest.raises(ValueError, match="critic_lr_scale.*> 0"):
        resolve_learner_config({"critic_lr_scale": 0})
    with pytest.raises(ValueError, match="minibatches.*int >= 1"):
        resolve_learner_config({"minibatches": 1.5})


def test_popart_reports_on_the_return_scale_and_learns_on_the_normalised_one():
    # Probe 2: G = r, a feature of the observation. Same weights and batch with and without
    # PopArt: the first statistics update preserves the critic's outputs, so every reported
    # number of the first iteration is the same; only the optimised loss differs.
    raw, popart = twin_learners(env="Probe2", model_overrides=(None, {"value_target_norm":
                                                                       "popart"}))
    runner = SingleAgentEnvRunner(config=make_config(env="Probe2"))
    episodes = sample(raw, runner, n_episodes=16)
    m_raw, _ = learn(raw, episodes)
    m_pop, _ = learn(popart, episodes)
    for name in ("value_loss", "explained_variance", "value_mean", "value_std", "return_std"):
        assert m_pop[name] == pytest.approx(m_raw[name], rel=1e-4, abs=1e-7), name
    # The statistics after one batch are that batch's targets' mean and (population) std.
    assert m_pop["popart_mean"] == pytest.approx(m_pop["return_mean"], rel=1e-5)
    assert m_pop["popart_std"] == pytest.approx(m_pop["return_std"], rel=1e-4)
    assert "popart_mean" not in m_raw
    norm = popart.module[DEFAULT_MODULE_ID].unwrapped().value_norm
    assert float(norm.mean) == pytest.approx(m_pop["popart_mean"])
    # Normalised targets of std 1 instead of ~0.3: the value head takes a different step.
    value_raw, _ = params_of(raw.module[DEFAULT_MODULE_ID].unwrapped())
    value_pop, _ = params_of(popart.module[DEFAULT_MODULE_ID].unwrapped())
    assert not torch.allclose(value_raw[0], value_pop[0])


def test_popart_critic_learns_the_probe():
    config = make_config(env="Probe2")
    config.rl_module(model_config={**SMALL_MODEL, "critic": "v", "value_target_norm": "popart"})
    learner, runner = build(config)
    history = [update(learner, runner, num_epochs=4, n_episodes=16)[0] for _ in range(8)]
    assert history[-1]["explained_variance_post"] > 0.8
    assert history[-1]["popart_std"] == pytest.approx(history[-1]["return_std"], rel=0.5)
