"""The critic recipe knobs: the value phase after the PPO steps (``critic_steps``), its replay of
earlier batches (``critic_replay``) and a critic trunk of its own (``critic_trunk=separate``).

Real learners on the probe envs at tiny sizes (tests/helpers/learners.py, modules.py).
"""

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from esper_rllib.cli import main
from esper_rllib.model.model_config import resolve_model_config
from esper_rllib.model.module import CRITIC_OUT, CRITIC_STATE
from esper_rllib.ppo.learner_config import resolve_learner_config
from esper_rllib.ppo.metric_names import CRITIC_PHASE_METRICS
from esper_rllib.run.config import ConfigError, resolve_knobs
from tests.helpers.learners import (
    around_value_phase as watch_value_phase,
)
from tests.helpers.learners import (
    config_of,
    learn,
    make_config,
    module_of,
    sample,
    snapshot,
)
from tests.helpers.modules import random_batch, small_module


def learner_of(critic_trunk="shared", env="Probe2", **learner_config):
    return config_of(critic_trunk, env, **learner_config).build_learner()


def episodes_of(learner, critic_trunk="shared", env="Probe2"):
    """8 episodes of the learner's policy, sampled by a runner whose module matches it."""
    return sample(learner, SingleAgentEnvRunner(config=config_of(critic_trunk, env)), 8)


def around_value_phase(learner, episodes):
    """One update; the module's parameters just before and just after its value phase."""
    kept, metrics = watch_value_phase(
        learner, episodes, lambda module_id, module, batch: {"before": snapshot(module)})
    return kept["before"], kept["after"], metrics


def moved(before, after):
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.fixture(scope="module")
def episodes():
    return episodes_of(learner_of())


def test_value_phase_moves_only_the_value_head(episodes):
    learner = learner_of(critic_steps=16)
    before, after, m = around_value_phase(learner, episodes)
    value_head = {f"value_head.{n}" for n, _ in module_of(learner).value_head.named_parameters()}
    # Every value-head tensor moves; the policy heads and the shared trunk stay bit-identical.
    assert moved(before, after) == value_head
    assert m["critic_phase_steps"] == 16 and m["gradient_steps"] == 1
    assert set(CRITIC_PHASE_METRICS) <= set(m)
    # The phase fits the batch it just saw better than the PPO step alone did.
    assert m["critic_phase_explained_variance_post"] > m["explained_variance_post"]


@pytest.mark.parametrize(("critic_trunk", "own_part"), [("separate", "critic_trunk.lstm."),
                                                       ("mlp", "critic_trunk.hidden.")])
def test_own_trunk_value_phase_moves_the_critic_trunk_and_head_not_the_actor(critic_trunk,
                                                                            own_part):
    # Probe 3's two-step episodes, so that the recurrent weights get a gradient too.
    learner = learner_of(critic_trunk=critic_trunk, env="Probe3", critic_steps=4)
    before, after, _ = around_value_phase(learner, episodes_of(learner, critic_trunk, "Probe3"))
    module = module_of(learner)
    critic = {n for n, p in module.named_parameters()
              if any(p is q for q in module.critic_parameters())}
    assert any(n.startswith(own_part) for n in critic)
    assert any(n.startswith("critic_trunk.feature_net.") for n in critic)
    changed = moved(before, after)
    assert changed == critic
    assert not any(n.startswith(("lstm.", "feature_net.", "policy_heads.")) for n in changed)


def test_replay_trains_on_the_stored_batches_and_stays_bounded():
    runner = SingleAgentEnvRunner(config=config_of())
    plain, replay = learner_of(critic_steps=3), learner_of(critic_steps=3, critic_replay=2)
    module_of(replay).load_state_dict(module_of(plain).state_dict())
    batches = [sample(plain, runner, 8) for _ in range(4)]
    seen, losses = [], []
    for episodes in batches:
        m_plain, _ = learn(plain, episodes)
        m_replay, _ = learn(replay, episodes)
        seen.append((m_plain["critic_phase_episodes"], m_replay["critic_phase_episodes"]))
        losses.append((m_plain["critic_phase_value_loss"], m_replay["critic_phase_value_loss"]))
    # 8 one-sequence episodes per batch; the replay adds the last two batches and no more.
    assert seen == [(8, 8), (8, 16), (8, 24), (8, 24)]
    assert len(replay._replay[DEFAULT_MODULE_ID]) == 2 and not plain._replay[DEFAULT_MODULE_ID]
    # Nothing to replay at first: the same phase; then it trains on other episodes.
    assert losses[0][0] == losses[0][1]
    assert losses[1][0] != losses[1][1]


@pytest.mark.parametrize("critic_trunk", ["shared", "separate"])
def test_replayed_targets_are_those_of_their_collection(critic_trunk):
    learner = learner_of(critic_trunk=critic_trunk, critic_steps=2, critic_replay=1)
    episodes = episodes_of(learner, critic_trunk)
    kept = []
    original = learner._make_batch_if_necessary
    learner._make_batch_if_necessary = lambda **kw: kept.append(original(**kw)) or kept[-1]
    try:
        learn(learner, episodes)
    finally:
        del learner._make_batch_if_necessary
    (stored,) = learner._replay[DEFAULT_MODULE_ID]
    batch = kept[0].policy_batches[DEFAULT_MODULE_ID]
    for key in ("value_targets", Columns.VF_PREDS, Columns.SEQ_LENS):
        assert torch.equal(stored[key], batch[key])
    assert set(stored[Columns.STATE_IN]) == set(module_of(learner).get_initial_state())


def test_default_knobs_give_todays_update_bit_for_bit(episodes):
    # critic_steps 0 (replay then does nothing) and the shared trunk: the same update as a
    # learner built without any of the recipe's keys.
    today = make_config(env="Probe2").build_learner()
    recipe = learner_of(critic_trunk="shared", critic_steps=0, critic_replay=3)
    module_of(recipe).load_state_dict(module_of(today).state_dict())
    for _ in range(2):
        m_today, _ = learn(today, episodes)
        m_recipe, _ = learn(recipe, episodes)
    a, b = snapshot(module_of(today)), snapshot(module_of(recipe))
    assert a.keys() == b.keys() and not moved(a, b)
    assert m_today == m_recipe
    assert not set(CRITIC_PHASE_METRICS) & set(m_recipe)
    assert not recipe._replay  # nothing stored without a value phase


@pytest.mark.parametrize(("critic_trunk", "state", "own_part"), [
    ("separate", {"h", "c", *CRITIC_STATE.values()}, "lstm"), ("mlp", {"h", "c"}, "hidden")])
def test_own_trunk_values_do_not_depend_on_the_actor_trunk(critic_trunk, state, own_part):
    module = small_module(critic_trunk=critic_trunk)
    assert set(module.get_initial_state()) == state
    batch = {**random_batch(module), Columns.SEQ_LENS: torch.tensor([6, 6, 6])}
    step = {Columns.OBS: {k: v[:, :1] for k, v in batch[Columns.OBS].items()},
            Columns.ACTIONS: batch[Columns.ACTIONS][:, :1], Columns.STATE_IN: batch[
                Columns.STATE_IN]}

    def outputs():
        with torch.no_grad():
            fwd = module.forward_train(batch)
            return (module.compute_values(batch, fwd[Columns.EMBEDDINGS]),
                    module.forward_exploration(step)[CRITIC_OUT], fwd[Columns.ACTION_DIST_INPUTS])

    values, critic_out, logits = outputs()
    with torch.no_grad():
        for part in (module.lstm, module.feature_net, module.blueprint_embedding):
            for p in part.parameters():
                p.add_(torch.randn_like(p))
    new_values, new_critic_out, new_logits = outputs()
    assert torch.equal(values, new_values) and torch.equal(critic_out, new_critic_out)
    assert not torch.allclose(logits, new_logits)
    # The PPO loss's terms split the same way: the value loss reaches the critic trunk only.
    fwd = module.forward_train(batch)
    module.compute_values(batch, fwd[Columns.EMBEDDINGS]).sum().backward()
    assert all(p.grad is None for p in module.lstm.parameters())
    assert all(p.grad is not None for p in module.critic_trunk[own_part].parameters())


def test_shared_trunk_state_and_values_are_todays():
    shared, default = small_module(critic_trunk="shared"), small_module()
    assert shared.critic_trunk is None and set(shared.get_initial_state()) == {"h", "c"}
    a, b = shared.state_dict(), default.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # A separate trunk is built last: every other layer starts from the same weights.
    separate = small_module(critic_trunk="separate").state_dict()
    assert all(torch.equal(separate[k], b[k]) for k in b)


def test_bad_values_are_refused_below_the_knob_table_too():
    with pytest.raises(ConfigError, match="critic_replay=-1: not allowed; allowed: int >= 0"):
        resolve_knobs("quick", overrides={"critic_replay": -1})
    with pytest.raises(ValueError, match=r"\[.critic_steps.\]=1.5: not allowed; allowed: "
                                         r"int >= 0"):
        resolve_learner_config({"critic_steps": 1.5})
    with pytest.raises(ValueError, match=r"\['critic_replay'\]=True: not allowed; allowed: "
                                         r"int >= 0"):
        resolve_learner_config({"critic_replay": True})
    with pytest.raises(ValueError, match=r"\['critic_trunk'\]='own': not allowed; allowed: shared "
                                         r"\| separate \| mlp"):
        resolve_model_config({"critic_trunk": "own"})


def test_cli_lists_the_knobs_and_refuses_a_bad_one_in_one_line(capsys, tmp_path):
    assert main(["knobs"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"critic_steps", "critic_replay", "critic_trunk"} <= listed
    assert main(["train", "--profile", "quick", "--set", "critic_steps=-2",
                 "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "critic_steps=-2" in err and "int >= 0" in err
    assert not (tmp_path / "runs").exists()


def test_budget_sweep_crosses_trunk_and_value_steps_on_the_fix_with_replay():
    from tuning.plan import plan_sweep
    from tuning.sweeps import SEED_DOCUMENT_FIX

    plan = plan_sweep("budget", "quick", resolve_knobs, seeds=5)
    assert plan.axes == {"critic_trunk": ["shared", "separate"], "critic_steps": [0, 32, 128],
                         "rng_seed": [0, 1, 2, 3, 4]}
    assert plan.n_trials == 2 * 3 * 5
    assert all(plan.base[k] == v for k, v in SEED_DOCUMENT_FIX.items())
    assert plan.base["critic_replay"] == 3
    # The report's baseline is the first cell when there is no broken run: the fix itself
    # (no value phase, so the replay does nothing).
    first = next(iter(plan.trials()))
    assert (first["critic_trunk"], first["critic_steps"]) == ("shared", 0)
    assert plan.trial_label(first) == "trunk=shared,critic_steps=0,rng_seed=0"


def test_horizon_sweep_crosses_the_truncation_bootstrap_and_value_steps_on_the_fix():
    from tuning.plan import plan_sweep

    plan = plan_sweep("horizon", "quick", resolve_knobs, seeds=5)
    assert plan.axes == {"truncation_bootstrap": [True, False], "critic_steps": [0, 128],
                         "rng_seed": [0, 1, 2, 3, 4]}
    assert (plan.base["critic_replay"], plan.base["critic_trunk"]) == (3, "shared")
    first = next(iter(plan.trials()))
    assert plan.trial_label(first) == "bootstrap=True,critic_steps=0,rng_seed=0"


@pytest.mark.parametrize("critic_trunk", ["shared", "mlp"])
def test_weight_decay_reaches_only_the_critics_parameters(critic_trunk):
    from esper_rllib.ppo import critic_training

    module = small_module(critic_trunk=critic_trunk)
    params = list(module.parameters())
    groups = critic_training.param_groups(params, module, critic_lr_scale=2.0,
                                          critic_weight_decay=0.5)
    optimizer = critic_training.make_optimizer(groups, lr=0.1)
    before = {id(p): p.detach().clone() for p in params}
    # A zero objective with a gradient on every parameter: AdamW's step is its decay alone.
    critic_training.clipped_step(optimizer, params, sum((p * 0).sum() for p in params), 1.0)
    critic = {id(p) for p in module.critic_parameters()}
    for p in params:
        # Decoupled decay: w <- w (1 - lr x critic_lr_scale x decay) on the critic's alone.
        expected = before[id(p)] * (1 - 0.1 * 2.0 * 0.5) if id(p) in critic else before[id(p)]
        assert torch.allclose(p.detach(), expected), p.shape
