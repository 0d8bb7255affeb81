"""Fitting one critic on recorded episodes (``esper-rllib critic-fit``'s trials).

The critic is the project's ``FactoredLSTM`` that a run of the knobs trains
(``run.config.module_spec``), and it is trained as the learner's value phase trains it
(``critic_steps``), by the same loop (``ppo.critic_training.train_critic``), its settings the
knobs' learner and optimiser sections (``run.config.sections``; no PPOConfig is built): the value
loss (``ppo.loss.value_loss``, clipped against the predictions before training when
``value_clip`` is set; PopArt on normalised values), without ``value_coef`` (no other term to
weigh it against); AdamW with the critic's parameters at
``lr x critic_lr_scale`` and ``critic_weight_decay``, the others at ``lr``; one global
gradient-norm clip at ``max_grad_norm``; PopArt statistics updated once from the training targets
before the first step when ``value_target_norm=popart``; and each gradient step on one of
``minibatches`` contiguous groups of whole episodes (``ppo.minibatches.minibatch_bounds``);
with ``critic_stop_fraction`` the last of the training episodes are held back to stop the
training early (``critic_training.EarlyStop``), the curve's later points then measuring the
best step's critic.
The prediction is ``module.compute_values(batch, embeddings)``, the learner's loss path: Q(s, op
taken) for ``q_op``, V(s) for ``v``. The target is the discounted return-to-go of the recorded
episode (no bootstrap: each episode is whole), the G of the EV ceiling.

Trunks (``TRUNKS``): ``shared`` trains the module's feature net and LSTM with its value head by
the value loss (as PPO does, here without the policy loss); ``frozen`` keeps them at their
initialisation and trains the value head alone; ``separate`` is the module's own critic trunk
(model knob ``critic_trunk=separate``: an encoder and LSTM of the critic's, initialised after
every other layer). Offline, with no policy loss on the trunk, ``separate`` differs from
``shared`` only in the trunk's initial weights. ``mlp`` is the module's feed-forward critic trunk
(``critic_trunk=mlp``): the current observation alone.

Explained variance is the project's one definition (``ppo.telemetry.explained_variance``):
unclamped, over real steps only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from esper_rllib.offline.behaviour import build_module
from esper_rllib.offline.dataset import EpisodeRecord
from esper_rllib.ppo import critic_training, telemetry
from esper_rllib.ppo.learner import slice_rows
from esper_rllib.ppo.minibatches import minibatch_bounds
from esper_rllib.run.config import sections

TRUNKS = ("shared", "frozen", "separate", "mlp")
# Trunks that are the module's own critic trunk (model knob critic_trunk of the same name).
OWN_TRUNKS = ("separate", "mlp")


@dataclass
class Episodes:
    """Recorded episodes as one zero-padded (B, T) batch and their return-to-go targets."""

    batch: dict[str, Any]  # OBS (a dict), ACTIONS, SEQ_LENS, STATE_IN (filled per module)
    targets: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) bool: real steps

    def __len__(self) -> int:
        return len(self.mask)

    def rows(self, start: int, end: int) -> Episodes:
        return Episodes(slice_rows(self.batch, start, end), self.targets[start:end],
                        self.mask[start:end])


def to_episodes(records: Sequence[EpisodeRecord], gamma: float) -> Episodes:
    """The batch of ``records`` (padded to the longest), targets G_t with discount ``gamma``."""
    lens = np.array([len(r) for r in records])
    T = int(lens.max())

    def padded(arrays: Sequence[np.ndarray]) -> torch.Tensor:
        first = arrays[0]
        out = np.zeros((len(arrays), T, *first.shape[1:]), first.dtype)
        for i, a in enumerate(arrays):
            out[i, :len(a)] = a
        return torch.from_numpy(out)

    obs = {k: padded([r.obs[k] for r in records]) for k in records[0].obs}
    batch = {Columns.OBS: obs, Columns.ACTIONS: padded([r.actions for r in records]),
             Columns.SEQ_LENS: torch.from_numpy(lens)}
    targets = padded([telemetry.returns_to_go(r.rewards, gamma).astype(np.float32)
                      for r in records])
    mask = torch.arange(T)[None] < torch.from_numpy(lens)[:, None]
    return Episodes(batch, targets, mask)


def log_spaced_steps(total: int) -> list[int]:
    """0 and round(2^(k/2)) up to ``total``, with ``total`` itself: every power of 2 (8, 64, 512,
    ...) is among them."""
    steps = {0, total}
    k = 0
    while (s := round(2 ** (k / 2))) < total:
        steps.add(s)
        k += 1
    return sorted(steps)


class Critic:
    """A module's critic with the trunk it is trained with (``separate`` exactly when the
    module has a critic trunk of its own)."""

    def __init__(self, module: Any, trunk: str) -> None:
        if trunk not in TRUNKS:
            raise ValueError(f"trunk: must be one of {TRUNKS}, got {trunk!r}")
        own = module.model_config["critic_trunk"]
        if (own if own in OWN_TRUNKS else "shared") != (trunk if trunk in OWN_TRUNKS
                                                        else "shared"):
            raise ValueError(f"trunk {trunk!r} with a module whose critic_trunk is {own!r}")
        self.trunk, self.module = trunk, module
        self._frozen: dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, knobs: Mapping[str, Any], seed: int, trunk: str, observation_space: Any,
              action_space: Any) -> Critic:
        """A fresh critic of ``knobs``, initialised from ``seed``."""
        return cls(build_module(knobs, seed, observation_space, action_space), trunk)

    @classmethod
    def trained(cls, module: Any) -> Critic:
        """A trained run's critic as it is (its own trunk if it has one)."""
        own = module.model_config["critic_trunk"]
        return cls(module, own if own in OWN_TRUNKS else "shared")

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the value loss trains: the value head, and the trunk it reads unless frozen."""
        m = self.module
        if self.trunk == "frozen":
            return list(m.value_head.parameters())
        if self.trunk in OWN_TRUNKS:
            return m.critic_parameters()
        return [*m.value_head.parameters(), *m.blueprint_embedding.parameters(),
                *m.feature_net.parameters(), *m.lstm.parameters(), *m.lstm_norm.parameters()]

    def values(self, episodes: Episodes) -> torch.Tensor:
        """(B, T) predictions of the regressed quantity (the learner's loss path)."""
        return self.module.compute_values(episodes.batch, embeddings=self._embed(episodes))

    def _embed(self, episodes: Episodes) -> torch.Tensor:
        if self.trunk == "frozen":
            key = id(episodes)
            if key not in self._frozen:  # the frozen trunk's embeddings are computed once
                with torch.no_grad():
                    self._frozen[key] = self._trunk_forward(episodes)
            return self._frozen[key]
        return self._trunk_forward(episodes)

    def _trunk_forward(self, episodes: Episodes) -> torch.Tensor:
        batch = dict(episodes.batch)
        batch[Columns.STATE_IN] = {  # every episode starts from the initial state
            k: torch.as_tensor(v).expand(len(episodes), -1)
            for k, v in self.module.get_initial_state().items()}
        return self.module.critic_embeddings(batch)


def critic_ev(critic: Critic, episodes: Episodes) -> float:
    """EV of ``critic``'s predictions of ``episodes``' return-to-go (real steps only)."""
    with critic_training.judging(critic.module):
        ev, _ = telemetry.explained_variance(episodes.targets, critic.values(episodes),
                                             episodes.mask)
    return ev


@dataclass(frozen=True)
class CurvePoint:
    step: int
    heldout_ev: float
    train_ev: float
    value_loss: float  # on the training episodes, the return scale


def fit_critic(knobs: Mapping[str, Any], train: Episodes, heldout: Episodes, *, seed: int,
               trunk: str, steps: int, observation_space: Any, action_space: Any,
               report: Callable[[CurvePoint], None] | None = None) -> list[CurvePoint]:
    """Trains the critic of ``knobs`` for ``steps`` gradient steps on ``train``; the curve at
    ``log_spaced_steps(steps)`` (``report`` gets each point as it is measured)."""
    torch.set_num_threads(1)
    run = sections(knobs)  # the learner's and the optimiser's knobs, as PPO gets them
    cfg = run.learner
    critic = Critic.build(knobs, seed, trunk, observation_space, action_space)
    module, norm = critic.module, critic.module.value_norm
    # Early stopping (critic_stop_fraction): the last episodes of the training set (in the
    # seed's order) are held back from the steps to judge them; the held-out set is untouched.
    n_fit = len(train) - critic_training.stop_rows(len(train), cfg["critic_stop_fraction"])
    fitted = train.rows(0, n_fit)
    # As the learner: the feature statistics from the data trained on, first.
    module.fit_features(fitted.batch[Columns.OBS]["features"][fitted.mask.bool()])
    if norm is not None:
        norm.update(fitted.targets[fitted.mask], module.value_head[-1])
    with critic_training.judging(module):
        old_values = critic.values(train)
    params = critic.parameters()
    optimizer = critic_training.make_optimizer(critic_training.param_groups(
        params, module, cfg["critic_lr_scale"], cfg["critic_weight_decay"]), run.optimiser.lr)
    bounds = minibatch_bounds(n_fit, cfg["minibatches"])
    minibatches = [(fitted.rows(s, e), old_values[s:e]) for s, e in zip(bounds[:-1], bounds[1:],
                                                                        strict=True)]
    curve: list[CurvePoint] = []
    checkpoints = log_spaced_steps(steps)

    def measure(step: int, *_: Any) -> None:
        if step in checkpoints[len(curve):]:
            curve.append(_measure(critic, train, heldout, step, cfg["value_clip"], old_values))
            if report is not None:
                report(curve[-1])

    measure(0)
    critic_training.train_critic(
        module, params, optimizer,
        loss=lambda batch: _value_loss(critic, *batch, cfg["value_clip"]),
        minibatches=cycle(minibatches), steps=steps, max_norm=run.optimiser.grad_clip,
        held_back=((train.rows(n_fit, len(train)), old_values[n_fit:]) if n_fit < len(train)
                   else None),
        patience=cfg["critic_stop_patience"], after_step=measure)
    # After an early stop the critic is final (its best step's): later points measure it.
    for step in checkpoints[len(curve):]:
        measure(step)
    return curve


def _value_loss(critic: Critic, episodes: Episodes, old_values: torch.Tensor,
                value_clip: float | None) -> torch.Tensor:
    """The value phase's loss (``critic_training.value_loss``) on ``episodes``."""
    return critic_training.value_loss(critic.module, critic.values(episodes), episodes.targets,
                                      old_values, episodes.mask, value_clip)


def _measure(critic: Critic, train: Episodes, heldout: Episodes, step: int,
             value_clip: float | None, old_values: torch.Tensor) -> CurvePoint:
    train_ev, heldout_ev = critic_ev(critic, train), critic_ev(critic, heldout)
    with critic_training.judging(critic.module):
        value = _value_loss(critic, train, old_values, value_clip)
    return CurvePoint(step, heldout_ev, train_ev,
                      critic_training.on_return_scale(critic.module, value))
