"""The one critic-training path (``esper_rllib.ppo.critic_training``): the learner's value phase
and the offline critic fit train a critic alike, and both stop early on held-back episodes.

Real learners on the probe envs at tiny sizes (tests/helpers/learners.py).
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.evaluation.postprocessing import Postprocessing

from envs.contract import action_space, observation_space
from esper_rllib.offline import critic_fit
from esper_rllib.offline.behaviour import make_behaviour
from esper_rllib.offline.dataset import EpisodeRecord
from esper_rllib.offline.record import play_episode
from esper_rllib.ppo import critic_training, telemetry
from esper_rllib.run.config import resolve_knobs
from tests.helpers.learners import around_value_phase, config_of, module_of, sample, snapshot

GAMMA = 0.9
LR = 1e-2
# Away from the defaults, so that a path that ignored one of them would train differently.
LEARNER = {"critic_lr_scale": 2.0, "critic_weight_decay": 0.1, "minibatches": 1}
# The learner's critic trunk -> the critic-fit trunk that trains the same parameters: an own
# trunk is itself; a shared trunk stays fixed in the value phase, which is critic-fit's frozen.
FIT_TRUNK = {"separate": "separate", "mlp": "mlp", "shared": "frozen"}
# test_learner's SMALL_MODEL as knobs.
SMALL_KNOBS = {"lstm_hidden": 32, "feature_dim": 16, "head_hidden": 16,
               "blueprint_head_hidden": (16, 8)}


def fit_knobs(critic_trunk="shared", **overrides):
    """critic-fit's knobs for the learner of ``learner_of`` (same lr, clip, gamma, loss knobs)."""
    return resolve_knobs("quick", overrides={
        **LEARNER, "lr": LR, "max_grad_norm": 1.0, "gamma": GAMMA, "critic_trunk": critic_trunk,
        **overrides})


def learner_of(critic_trunk, env="Probe3", **learner_config):
    # lambda 1: GAE's value target of a terminated episode is its discounted return-to-go,
    # critic-fit's target.
    config = config_of(critic_trunk, env, **{**LEARNER, **learner_config}).training(
        lr=LR, gamma=GAMMA, lambda_=1.0)
    return config.build_learner(), SingleAgentEnvRunner(config=config)


def records_of(episodes):
    """The sampled episodes as critic-fit reads a recording (the observations the actions saw)."""
    records = []
    for i, e in enumerate(episodes):
        assert e.is_terminated  # whole episodes: the return-to-go is the value target
        obs = e.get_observations()  # each field (T + 1, ...): the last one no action saw
        records.append(EpisodeRecord(
            episode_id=i, env_seed=i, obs={k: np.asarray(v)[:-1] for k, v in obs.items()},
            actions=np.asarray(e.get_actions()), logp=np.zeros(len(e)),
            rewards=np.asarray(e.get_rewards(), np.float64), terminated=True, truncated=False,
            final_acc=float("nan")))
    return records


def value_phase_inputs(learner, episodes):
    """One update; what its value phase starts from (a copy of the module, the batch, the
    optimiser's state of each critic parameter by name) and the module after it."""

    def inputs(module_id, module, batch):
        names = {id(p): n for n, p in module.named_parameters()}
        optimizer = learner.get_optimizer(module_id)
        return {"module": copy.deepcopy(module), "batch": batch,
                "adam": {names[id(p)]: copy.deepcopy(optimizer.state[p])
                         for p in module.critic_parameters() if p in optimizer.state}}

    return around_value_phase(learner, episodes, inputs)


def fit_as_critic_fit(monkeypatch, module, trunk, knobs, episodes, steps, adam=None):
    """``fit_critic`` on ``episodes`` for ``steps`` steps, its critic ``module`` itself (not one
    built from ``seed``), its AdamW started from ``adam`` (state by parameter name) if given."""
    monkeypatch.setattr(critic_fit.Critic, "build",
                        classmethod(lambda cls, *a, **kw: cls(module, trunk)))
    make_optimizer = critic_training.make_optimizer

    def with_state(groups, *args, **kwargs):
        optimizer = make_optimizer(groups, *args, **kwargs)
        names = {id(p): n for n, p in module.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if adam and names[id(p)] in adam:
                    optimizer.state[p] = copy.deepcopy(adam[names[id(p)]])
        return optimizer

    monkeypatch.setattr(critic_training, "make_optimizer", with_state)
    try:
        return critic_fit.fit_critic(knobs, episodes, episodes, seed=0, trunk=trunk, steps=steps,
                                     observation_space=observation_space(3),
                                     action_space=action_space(3))
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("critic_trunk", ["separate", "mlp", "shared"])
def test_value_phase_and_critic_fit_train_one_critic_alike(monkeypatch, critic_trunk):
    """One critic trained both ways on the same batch gets the same parameters.

    What differs by design and is made equal here: the value phase continues the Adam moments
    (and step count) the batch's PPO step left in the learner's one optimiser, critic-fit starts
    a fresh AdamW; critic-fit's optimiser is handed the learner's state of each critic parameter.
    PopArt (statistics updated before the PPO step online, before the fit offline) and
    ``value_clip`` (against the rollout's predictions online, the predictions before the fit
    offline; the PPO step moved the critic in between) are off. Equal at float tolerance, not
    bit for bit: the targets are GAE's recursion online and ``returns_to_go`` offline, and the
    learner's rows carry RLlib's bootstrap step (masked) so sums run over other shapes.
    """
    steps = 3
    learner, runner = learner_of(critic_trunk, critic_steps=steps)
    episodes = sample(learner, runner, 8)
    kept, metrics = value_phase_inputs(learner, episodes)
    assert metrics["critic_phase_steps"] == steps and metrics["critic_phase_episodes"] == 8

    offline = critic_fit.to_episodes(records_of(episodes), GAMMA)
    batch = kept["batch"]
    # The same episodes, in the same order, with the same targets on the same real steps.
    mask = batch[Columns.LOSS_MASK].bool()
    assert torch.equal(batch[Columns.SEQ_LENS] - 1, offline.batch[Columns.SEQ_LENS])
    assert torch.equal(mask[:, :offline.mask.shape[1]], offline.mask)
    assert torch.allclose(batch[Postprocessing.VALUE_TARGETS][mask], offline.targets[offline.mask],
                          atol=1e-6)
    for k, v in offline.batch[Columns.OBS].items():
        assert torch.equal(batch[Columns.OBS][k][:, :v.shape[1]][offline.mask], v[offline.mask])

    module = kept["module"]
    before = snapshot(module)
    assert kept["adam"]  # the PPO step left moments on the critic's parameters
    fit_as_critic_fit(monkeypatch, module, FIT_TRUNK[critic_trunk], fit_knobs(critic_trunk),
                      offline, steps, adam=kept["adam"])
    online, fitted = kept["after"], snapshot(module)
    critic = {n for n, p in module.named_parameters()
              if any(p is q for q in module.critic_parameters())}
    moved = {n for n in before if not torch.equal(before[n], online[n])}
    assert moved == critic  # the value phase moved every critic tensor and nothing else
    assert {n for n in before if not torch.equal(before[n], fitted[n])} == critic
    for name in critic:  # 1 ulp apart at most, where the phase moved them by ~0.05
        assert torch.allclose(fitted[name], online[name], rtol=1e-5, atol=1e-6), name
    # The comparison tells: critic-fit from a fresh AdamW (its own default) lands elsewhere.
    module.load_state_dict(before)
    fit_as_critic_fit(monkeypatch, module, FIT_TRUNK[critic_trunk], fit_knobs(critic_trunk),
                      offline, steps)
    fresh = snapshot(module)
    assert not all(torch.allclose(fresh[n], online[n], rtol=1e-5, atol=1e-6) for n in critic)


# -- early stopping ------------------------------------------------------------------------------


def test_stop_rows_holds_back_a_fraction_never_all():
    assert critic_training.stop_rows(16, 0.25) == 4
    assert critic_training.stop_rows(8, 0.01) == 1  # at least one when the fraction is not 0
    assert critic_training.stop_rows(2, 0.5) == 1
    assert critic_training.stop_rows(1, 0.5) == 0  # never all of them
    assert critic_training.stop_rows(16, 0.0) == 0


def _parameter():
    return torch.nn.Parameter(torch.zeros(3))


def test_early_stop_keeps_the_best_step_and_stops_after_patience():
    p = _parameter()
    stop = critic_training.EarlyStop([p], patience=2)
    verdicts = []
    for step, held_back_loss in enumerate([5.0, 4.0, 3.0, 3.0, 6.0, 1.0]):
        with torch.no_grad():
            p.fill_(step)  # the parameters after `step` steps
        verdicts.append(stop.update(step, held_back_loss))
    # Step 2 is the best; an equal loss (step 3) is no improvement; 2 without one: stop at 4.
    # (Called on anyway, step 5's better loss becomes the best again.)
    assert verdicts == [False, False, False, False, True, False]
    assert (stop.best_step, stop.best_loss) == (5, 1.0)

    stop = critic_training.EarlyStop([p], patience=2)
    for step, held_back_loss in enumerate([5.0, 4.0, 3.0, 3.0, 6.0]):
        with torch.no_grad():
            p.fill_(step)
        stopped = stop.update(step, held_back_loss)
    assert stopped and stop.best_step == 2
    stop.restore()
    assert torch.equal(p.detach(), torch.full((3,), 2.0))


def test_early_stop_counts_the_initial_state_as_a_candidate():
    p = _parameter()
    stop = critic_training.EarlyStop([p], patience=3)
    assert not stop.update(0, 1.0)  # before any step
    for step in (1, 2):
        with torch.no_grad():
            p.add_(1.0)
        assert not stop.update(step, 2.0)
    stop.restore()  # the steps ran out first: still the best, here the initial parameters
    assert stop.best_step == 0 and torch.equal(p.detach(), torch.zeros(3))


def test_early_stop_restore_with_nothing_seen_leaves_the_parameters():
    p = _parameter()
    with torch.no_grad():
        p.fill_(7.0)
    critic_training.EarlyStop([p], patience=1).restore()
    assert torch.equal(p.detach(), torch.full((3,), 7.0))


class RecordingStop(critic_training.EarlyStop):
    """EarlyStop that keeps the parameters at every update and the last instance made."""

    last = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = {}
        RecordingStop.last = self

    def update(self, step, held_back_loss):
        self.seen[step] = ([p.detach().clone() for p in self.params], held_back_loss)
        return super().update(step, held_back_loss)


def _probe_records(env, n, first_seed):
    e = gym.make(f"envs:esper/{env}-v0").unwrapped
    behaviour = make_behaviour("random", None, tuple(int(k) for k in e.action_space.nvec))
    return [play_episode(e, behaviour, i, first_seed + i) for i in range(n)]


def test_critic_fit_stops_on_held_back_training_episodes_and_keeps_the_best_step(monkeypatch):
    # Probe 2 (reward = the observed signal) with a V critic: at this lr and seed the held-back
    # loss is best after 3 steps and worse for the next 3 (patience 3): it stops after 6.
    knobs = resolve_knobs("quick", overrides={
        "env": "esper/Probe2-v0", "critic": "v", "value_head_gain": 1.0, "lr": 0.003,
        "critic_stop_fraction": 0.25, "critic_stop_patience": 3, **SMALL_KNOBS})
    train = critic_fit.to_episodes(_probe_records("Probe2", 16, 0), knobs["gamma"])
    heldout = critic_fit.to_episodes(_probe_records("Probe2", 8, 1000), knobs["gamma"])
    n_fit = 16 - 4
    built, losses, n_steps = {}, [], []
    build = critic_fit.Critic.build
    monkeypatch.setattr(critic_fit.Critic, "build", classmethod(
        lambda cls, *a, **kw: built.setdefault("critic", build(*a, **kw))))
    value_loss = critic_fit._value_loss

    def spy_loss(critic, episodes, old_values, value_clip):
        losses.append((torch.is_grad_enabled(), episodes))
        return value_loss(critic, episodes, old_values, value_clip)

    clipped_step = critic_training.clipped_step
    monkeypatch.setattr(critic_fit, "_value_loss", spy_loss)
    monkeypatch.setattr(critic_training, "EarlyStop", RecordingStop)
    monkeypatch.setattr(critic_training, "clipped_step",
                        lambda *a: n_steps.append(1) or clipped_step(*a))
    steps = 128
    curve = critic_fit.fit_critic(knobs, train, heldout, seed=0, trunk="shared", steps=steps,
                                  observation_space=observation_space(3),
                                  action_space=action_space(3))
    monkeypatch.undo()
    stop = RecordingStop.last

    def same(a, b):
        return len(a) == len(b) and torch.equal(a.targets, b.targets)

    # Every step trains on the first 12 training episodes; the last 4 judge the steps (after
    # each, and before the first); the held-out episodes never enter a loss.
    trained = [e for grad, e in losses if grad]
    judged = [e for grad, e in losses if not grad and len(e) == 4]
    assert len(trained) == len(n_steps) and all(same(e, train.rows(0, n_fit)) for e in trained)
    assert len(judged) == len(n_steps) + 1
    assert all(same(e, train.rows(n_fit, 16)) for e in judged)
    assert not any(same(e, heldout) for _, e in losses)
    # It stopped early, patience steps after its best step, which was not the last.
    assert len(n_steps) < steps and len(n_steps) == stop.best_step + 3
    assert sorted(stop.seen) == list(range(len(n_steps) + 1))
    assert stop.seen[stop.best_step][1] == min(loss for _, loss in stop.seen.values())
    # The critic the fit gives, and its final curve point, are the best step's.
    critic = built["critic"]
    best = stop.seen[stop.best_step][0]
    assert all(torch.equal(p.detach(), b) for p, b in zip(critic.parameters(), best, strict=True))
    final = curve[-1]
    assert final.step == steps
    assert final.heldout_ev == critic_fit.critic_ev(critic, heldout)
    assert final.train_ev == critic_fit.critic_ev(critic, train)
    # Points between the best step and the stop measure other critics; those after the stop
    # all measure the best one.
    assert any(p.heldout_ev != final.heldout_ev for p in curve
               if stop.best_step < p.step < len(n_steps))
    after = [p for p in curve if p.step >= len(n_steps)]
    assert len(after) >= 2 and len({(p.heldout_ev, p.train_ev) for p in after}) == 1


@pytest.mark.parametrize(("held_back_losses", "best_step"), [
    ([5.0, 4.0, 3.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0], 2),
    ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 0),  # no step helps: the phase undoes all
])
def test_value_phase_stops_on_held_back_episodes_and_restores_the_best_step(
        monkeypatch, held_back_losses, best_step):
    patience, critic_steps = 3, 8
    learner, runner = learner_of("separate", env="Probe2", critic_steps=critic_steps,
                                 critic_stop_fraction=0.25, critic_stop_patience=patience)
    episodes = sample(learner, runner, 8)
    module = module_of(learner)
    critic = module.critic_parameters()
    judged, trained, after_step = [], [], []  # after_step[i]: the critic after step i + 1
    original = learner._value_loss

    def scripted(module, batch, embeddings):
        """The held-back loss (the value phase's only loss taken without gradients) scripted."""
        value, values = original(module, batch, embeddings)
        if torch.is_grad_enabled():
            trained.append(len(batch[Columns.SEQ_LENS]))
            return value, values
        judged.append(len(batch[Columns.SEQ_LENS]))
        return torch.tensor(held_back_losses[len(judged) - 1]), values

    clipped_step = critic_training.clipped_step

    def step_and_keep(*args):
        pre_clip = clipped_step(*args)
        after_step.append([p.detach().clone() for p in critic])
        return pre_clip

    learner._value_loss = scripted
    monkeypatch.setattr(critic_training, "clipped_step", step_and_keep)
    try:
        kept, metrics = value_phase_inputs(learner, episodes)
    finally:
        del learner._value_loss
    before = [p.detach().clone() for p in kept["module"].critic_parameters()]
    # 2 of the batch's 8 episodes held back (judged before the first step and after each),
    # the 6 others trained on; stopped `patience` steps after the best, before critic_steps.
    taken = best_step + patience
    assert metrics["critic_phase_steps"] == taken < critic_steps
    assert metrics["critic_phase_episodes"] == 6
    assert judged == [2] * (taken + 1)
    assert trained[1:] == [6] * taken  # the first: the PPO step's loss on the whole batch
    # The critic leaves the phase as it was after its best step (step 0: as it came in).
    best = after_step[best_step - 1] if best_step else before
    names = {id(p): n for n, p in module.named_parameters()}
    for p, b in zip(critic, best, strict=True):
        assert torch.equal(kept["after"][names[id(p)]], b)
    assert len(after_step) == taken
    assert not any(torch.equal(a, b) for a, b in zip(after_step[-1], best, strict=True))


def test_critic_fit_fits_the_feature_statistics_from_the_episodes_it_trains_on(monkeypatch):
    # feature_norm=robust: the statistics come from the fitted episodes' real steps (not the
    # held-back ones, not the held-out set), before the first step, once.
    knobs = resolve_knobs("quick", overrides={
        "env": "esper/Probe2-v0", "critic": "v", "feature_norm": "robust",
        "critic_stop_fraction": 0.25, **SMALL_KNOBS})
    train = critic_fit.to_episodes(_probe_records("Probe2", 16, 0), knobs["gamma"])
    heldout = critic_fit.to_episodes(_probe_records("Probe2", 8, 1000), knobs["gamma"])
    built = {}
    build = critic_fit.Critic.build
    monkeypatch.setattr(critic_fit.Critic, "build", classmethod(
        lambda cls, *a, **kw: built.setdefault("critic", build(*a, **kw))))
    critic_fit.fit_critic(knobs, train, heldout, seed=0, trunk="shared", steps=4,
                          observation_space=observation_space(3), action_space=action_space(3))
    norm = built["critic"].module.feature_norm
    fitted = train.rows(0, 12)
    rows = fitted.batch[Columns.OBS]["features"][fitted.mask.bool()].float()
    assert bool(norm.fitted)
    assert torch.equal(norm.center, rows.median(dim=0).values)


def test_value_phase_judged_against_the_return_to_go(monkeypatch):
    """critic_stop_target=return_to_go: the held-back episodes are judged against the discounted
    return the env paid, not against GAE's targets (which, at lambda 0, are r + gamma V(s'): the
    critic's own values)."""
    config = config_of("separate", "Probe3", **{
        **LEARNER, "critic_steps": 4, "critic_stop_fraction": 0.25, "critic_stop_patience": 2,
        "critic_stop_target": "return_to_go"}).training(lr=LR, gamma=GAMMA, lambda_=0.0)
    learner, runner = config.build_learner(), SingleAgentEnvRunner(config=config)
    episodes = sample(learner, runner, 8)
    judged = []
    value_loss = critic_training.value_loss

    def recording(module, values, targets, old_values, mask, value_clip):
        if not torch.is_grad_enabled():  # the held-back loss: the phase's only one without
            judged.append(targets[mask.bool()].clone())
        return value_loss(module, values, targets, old_values, mask, value_clip)

    monkeypatch.setattr(critic_training, "value_loss", recording)
    kept, metrics = value_phase_inputs(learner, episodes)
    held_back = episodes[-2:]  # the batch's last 2 of its 8 episodes
    paid = np.concatenate([telemetry.returns_to_go(np.asarray(e.get_rewards()), GAMMA)
                           for e in held_back])
    assert len(judged) == metrics["critic_phase_steps"] + 1  # before the first step, after each
    for targets in judged:
        np.testing.assert_allclose(targets.numpy(), paid, rtol=1e-6)
    gae = kept["batch"][Postprocessing.VALUE_TARGETS][-2:]
    assert not np.allclose(gae[kept["batch"][Columns.LOSS_MASK][-2:].bool()].numpy(), paid)
