"""`esper/SeedMorphogenesis-v0`: grow seeds into a host CNN, one host epoch per step.

The env's card (spaces, masks, rewards, episode end, host and data) is the class docstring
below; docs/environment.md has it with every feature and reward term in tables.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding

from envs import observation as obs_mod
from envs.blueprints import build_blueprint
from envs.config import parse_env_kwargs
from envs.contract import (
    ALPHA_CURVES,
    ALPHA_SPEEDS,
    ALPHA_TARGETS,
    BLEND_STYLES,
    HEADS,
    TEMPOS,
    Op,
    Stage,
    action_space,
    observation_space,
)
from envs.datasets import augment_batch, load_task_data
from envs.governor import Governor
from envs.hosts import SLOT_SIZES, build_host
from envs.lifecycle import Lifecycle
from envs.rewards import (
    RunningStd,
    SeedView,
    Transition,
    potential,
    reward_components,
    zero_components,
)
from envs.seeded_model import SeededModel
from envs.training import (
    EXPLODING_NORM,
    VANISHING_NORM,
    EpochResult,
    Validation,
    host_optimizer,
    seed_optimizer,
    train_epochs,
    validate,
    validate_stacked,
)


@dataclass(frozen=True)
class _StepStart:
    """What a step's reward needs from before its action ran."""

    op: Op
    effective: Op
    valid: bool
    target_contribution: float | None  # the target slot's contribution before the action
    phi: float  # stage potential before the action
    val_acc: float
    seed_params: int
    alphas: list[float]


INFO_KEYS = (
    "epoch", "val_acc", "val_loss", "train_loss", "op", "effective_op", "action_valid",
    "slot_stages", "alphas", "contributions", "blueprints", "seed_params", "host_params",
    "n_fossils", "reward_components", "raw_reward", "rollback",
)


class SeedMorphogenesisEnv(gym.Env):
    """A host CNN trained one epoch per step; the agent germinates, blends, fossilizes and
    prunes seeds in its slots.

    ## Description
    A step runs the action (an illegal one runs as WAIT), ticks alpha ramps and cooldowns,
    trains the host (and its learning seeds) for one epoch, validates with counterfactuals
    (each blended seed's slot switched off: its contribution in pp), lets the governor roll
    back a diverged model, then pays the reward. The objective is final validation accuracy.

    ## Action space
    ``MultiDiscrete([6, 3, 13, 4, 3, 3, 4, 5])``, heads in ``contract.HEADS`` order: op (WAIT,
    GERMINATE, SET_ALPHA_TARGET, PRUNE, FOSSILIZE, ADVANCE), slot (r0c0-r0c2, after host block
    0-2), blueprint (13 names; 1-7 the buildable CNN ones), style (4 blend styles), tempo (3, 5,
    8 blend-in epochs), alpha_target (0.5, 0.7, 1.0), alpha_speed (0, 3, 5, 8 epochs),
    alpha_curve (5 curves). ``contract.RELEVANCE`` says which heads each op uses (the env ignores
    ``style`` for SET_ALPHA_TARGET: a seed's style is fixed at germination). Masks
    (``observation["action_mask"]``, 41 values, per head in that order): op = legal in at least
    one slot (``Lifecycle.legal``), blueprint = the CNN blueprints 1-7, every other head all 1.
    An (op, slot) pair the masks allow but the slot does not runs as WAIT (``action_valid``
    False). A malformed action (shape, non-integer, out of range) raises ValueError.

    ## Observation space
    ``Dict``: ``features`` Box(113,) float32 = 23 base features (epoch fraction, validation loss
    as log1p(loss)/log 16 and accuracy as a fraction, each with its 5 previous values, the
    fractions of slots TRAINING / BLENDING / HOLDING or FOSSILIZED, last action valid, one-hot of
    the last effective op) + 30 per slot (``observation.slot_features``: stage one-hot, alpha
    and its ramp, contribution and its change, interaction, gradient health, time in stage,
    freshness; all 0 when DORMANT); ``blueprints`` MultiDiscrete([14] * 3), 13 = no seed;
    ``action_mask`` Box(41,).

    ## Rewards
    ``aligned``: 0.1 x the step's accuracy change (pp) minus the change of 0.1 x log2(1 + seed
    params / host params); its return is 0.1 x the accuracy gained minus 0.1 per doubling of
    the parameter count the final seeds add; no normalisation. ``shaped`` (the reference's):
    attribution + stage-potential shaping + rent + action costs and bonuses + a terminal term,
    divided by the running std of raw rewards (clipped to +-10). Also ``sparse`` and
    ``accuracy_delta`` (``rewards.reward_components``). A rollback step adds -10 after
    normalisation.

    ## Starting state
    ``reset(seed)`` draws the host's initial weights, its minibatch order and augmentation, and
    new seeds' weights from the reset's seed; no seeds; the data set is fixed (``data_seed``).

    ## Episode end
    Never terminated; truncated after ``max_epochs`` steps. ``step`` after it raises
    RuntimeError. A rollback (a non-finite loss, or validation loss above 3x its running mean
    and mean + 6 std for 3 epochs) restores the last 5-epoch snapshot and goes on.

    ## Host and data
    ``hosts.HostCNN``: 3 conv-BN-ReLU-maxpool blocks, average pool, Linear to 10 classes;
    ``impaired`` 1x1 convs of 1/2/4 channels, ``baseline`` 3x3 of 8/16/32. Tasks (``tasks.py``):
    ``synth_*`` the embedded synthetic set (generated, 5,000/1,000 images, batch 128);
    ``cifar_*`` CIFAR-10 from local python-pickle files (``data_dir`` or $ESPER_DATA_DIR, never
    downloaded; 50,000/10,000, batch 512, crop and flip).

    Keyword arguments (all optional, validated; a bad one raises ValueError naming it):
    task, max_epochs, max_seeds, reward, reward_normalization, data_dir, device, n_train,
    n_val, seed, data_seed (which fixed data set), inject_nan_at_epoch (test hook: corrupt the
    host with a NaN before that epoch, 1-based, so the governor must roll back), host_kernel
    (auto: the fused CPU kernels of envs/fused.py for the 1x1 host, else PyTorch; torch; fused).

    ``reward_scale`` (RunningStd) is the running std that `running_std` normalisation divides
    by; it spans the env's episodes, so a trainer's checkpoint keeps it.

    Info keys (every step; the reset info has the same keys, zero/False for step-only ones):
      epoch (int): host epochs trained so far.
      val_acc (float): validation accuracy, percent.
      val_loss, train_loss (float): per-sample mean cross-entropy (train_loss 0 at reset).
      op (int): the op requested by the action; effective_op (int): the op that ran
        (WAIT when the requested (op, slot) was illegal); action_valid (bool).
      slot_stages (list[int]): Stage per slot; alphas (list[float]): alpha per slot.
      contributions (list[float | None]): counterfactual contribution (pp) measured this step
        per slot; None where not measured (no seed, or alpha 0). None rather than nan so that
        infos compare equal across identical runs (gymnasium's check_env requires it).
      blueprints (list[int]): blueprint index per slot, 13 = empty.
      seed_params (int): parameters of live + fossilized seeds (gates included);
        host_params (int); n_fossils (int).
      reward_components (dict[str, float]): every term of the reward; their sum is raw_reward
        except `rollback`, which is added after normalisation.
      raw_reward (float): reward before normalisation.
      rollback (bool): the governor rolled the model back this step.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = parse_env_kwargs(kwargs)
        self.n_slots = len(SLOT_SIZES)
        self.action_space = action_space(self.n_slots)
        self.observation_space = observation_space(self.n_slots)
        self._data = load_task_data(
            self.cfg.task, n_train=self.cfg.n_train, n_val=self.cfg.n_val,
            data_dir=self.cfg.data_dir, device=self.cfg.device, data_seed=self.cfg.data_seed)
        self._pending_seed = self.cfg.seed
        # Across resets: the reward scale is the run's (a checkpoint keeps it: ppo/algorithm.py).
        self.reward_scale = RunningStd()
        self._model: SeededModel | None = None
        self._done = True

    # ---- episode setup -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(0, 2**62))
        self._gen = torch.Generator(device=self.cfg.device).manual_seed(episode_seed)
        # New seeds' weights: a stream of the episode's own, so that the env's stream gives one
        # draw per episode whatever the policy germinates: the next episode's seed never
        # depends on this one's actions (a resumed run's episodes start as an uninterrupted
        # run's; every cell of a sweep meets the same hosts and data orders).
        self._module_rng = np.random.default_rng([episode_seed, 1])
        with torch.random.fork_rng(devices=[]):  # never touch the global RNG of the caller
            torch.manual_seed(episode_seed)
            host = build_host(self.cfg.task.host)
        self._model = SeededModel(host).to(self.cfg.device)
        self._host_opt = host_optimizer(self._model, self.cfg.task)
        self._seed_opts: dict[int, torch.optim.Optimizer] = {}
        self.lifecycle = Lifecycle(self.n_slots, self.cfg.max_seeds)
        self._governor = Governor()
        self._governor.snapshot(self._model, [])
        self.epoch = 0
        val = self._validate([])
        self._loss_hist = [val.loss]
        self._acc_hist = [val.acc]
        self._last_valid = True
        self._last_op: int | None = None
        self._done = False
        info = self._info(Op.WAIT, Op.WAIT, True, train_loss=0.0,
                          contributions=[None] * self.n_slots,
                          components=zero_components(self.cfg.reward), raw=0.0, rollback=False)
        return self._observation(), info

    # ---- step ----------------------------------------------------------------------------
    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        start = self._begin_step(action)
        augment = augment_batch if self._data.augment else None
        (epoch_result,) = train_epochs([self._model], [self._host_opt], [self._learners()],
                                       self._data.x_train, self._data.y_train,
                                       task=self.cfg.task, gen=self._gen, augment=augment,
                                       fused=self.cfg.fused)
        return self._end_step(start, epoch_result)

    # The step in two halves around the host epoch, so that the vector env (envs.vector_env)
    # runs the same halves per sub-env around one stacked epoch of all its hosts.
    def _begin_step(self, action: Any) -> _StepStart:
        """Validate and execute the action, tick alpha ramps and cooldowns, sync the model."""
        if self._done:
            raise RuntimeError("call reset() before step() (episode not started or finished)")
        act = self._check_action(action)
        op, slot = Op(int(act[0])), int(act[1])
        valid = self.lifecycle.legal(op, slot, blueprint=int(act[2]))
        effective = op if valid else Op.WAIT
        slots = self.lifecycle.slots
        start = _StepStart(op, effective, valid, slots[slot].contribution,
                           potential([s.stage for s in slots]), self._acc_hist[-1],
                           self._seed_params(), [s.alpha.alpha for s in slots])
        self._execute(effective, slot, act)
        self.lifecycle.tick()
        self._sync_model()
        if self.cfg.inject_nan_at_epoch == self.epoch + 1:
            with torch.no_grad():  # a real corruption, so the rollback has work to do
                next(self._model.host.parameters()).view(-1)[0] = math.nan
        return start

    def _end_step(self, start: _StepStart, epoch_result: EpochResult,
                  val: Validation | None = None
                  ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        """After the epoch: validate with counterfactuals, governor, reward, observation."""
        self.epoch += 1
        self.lifecycle.end_epoch()
        if val is None:  # the vector env passes the validation it computed for all its hosts
            val = self._validate(self._ablation_configs())
        rollback = self._governor.should_roll_back(epoch_result.train_loss, val.loss)
        if rollback:
            self._roll_back()
            val = self._validate([])
            contributions: list[float | None] = [None] * self.n_slots
        else:
            contributions = self._record_contributions(val)
            self._record_grads(epoch_result)
            self._governor.maybe_snapshot(self.epoch, self._model, self._fossil_slots())
        for s, before in zip(self.lifecycle.slots, start.alphas, strict=True):
            s.alpha_velocity = s.alpha.alpha - before if s.has_seed else 0.0
        self._loss_hist.append(val.loss)
        self._acc_hist.append(val.acc)

        truncated = self.epoch >= self.cfg.max_epochs
        components = reward_components(self.cfg.reward, self._transition(
            start.effective, start.target_contribution, start.phi, contributions,
            (start.val_acc, start.seed_params), truncated))
        raw = float(sum(components.values()))
        reward = raw
        if self.cfg.reward_normalization == "running_std":
            reward = self.reward_scale.normalize(raw)
        components["rollback"] = -self.cfg.reward.rollback_penalty if rollback else 0.0
        reward += components["rollback"]
        self._last_valid, self._last_op = start.valid, int(start.effective)
        self._done = truncated
        info = self._info(start.op, start.effective, start.valid,
                          train_loss=epoch_result.train_loss, contributions=contributions,
                          components=components, raw=raw, rollback=rollback)
        return self._observation(), float(reward), False, truncated, info

    def _check_action(self, action: Any) -> np.ndarray:
        arr = np.asarray(action)
        if arr.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape} (heads {HEADS}),"
                             f" got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not (np.issubdtype(arr.dtype, np.number) and np.all(np.isfinite(arr))
                    and np.all(arr == np.round(arr))):
                raise ValueError(f"action must hold integers, got {action!r}")
            arr = arr.astype(np.int64)
        bad = [(h, int(v), int(n)) for h, v, n in zip(HEADS, arr, self.action_space.nvec,
                                                            strict=True)
               if not 0 <= v < n]
        if bad:
            h, v, n = bad[0]
            raise ValueError(f"action head {h!r} must be in [0, {n - 1}], got {v}")
        return arr.astype(np.int64)

    def _execute(self, op: Op, slot: int, act: np.ndarray) -> None:
        lc = self.lifecycle
        style = BLEND_STYLES[act[3]]
        if op == Op.GERMINATE:
            lc.germinate(slot, int(act[2]), style, TEMPOS[act[4]], ALPHA_TARGETS[act[5]],
                         self._acc_hist[-1])
            self._install_seed(slot, int(act[2]), style)
        elif op == Op.ADVANCE:
            lc.advance(slot)
        elif op == Op.SET_ALPHA_TARGET:
            # The contract marks `style` relevant here (as in the reference), but a seed's blend
            # style is fixed at germination: its seed/gate were built for that style.
            lc.set_alpha_target(slot, ALPHA_TARGETS[act[5]], ALPHA_SPEEDS[act[6]],
                                ALPHA_CURVES[act[7]])
        elif op == Op.PRUNE:
            lc.prune(slot, ALPHA_SPEEDS[act[6]], ALPHA_CURVES[act[7]])
        elif op == Op.FOSSILIZE:
            lc.fossilize(slot)

    def _install_seed(self, slot: int, blueprint: int, style: str) -> None:
        module = self._model.slots[slot]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._module_rng.integers(0, 2**62)))
            seed = build_blueprint(blueprint, module.channels,
                                   zero_last=style == "LINEAR_MULTIPLY")
            module.install(seed, style)
        module.to(self.cfg.device)
        self._seed_opts[slot] = seed_optimizer(module.seed_parameters(), self.cfg.task)

    def _sync_model(self) -> None:
        """Mirror lifecycle stages into the model's slots; drop removed seeds."""
        for i, (s, module) in enumerate(zip(self.lifecycle.slots, self._model.slots,
                                                            strict=True)):
            if not s.has_seed:
                if module.seed is not None:
                    module.remove()
                    self._seed_opts.pop(i, None)
                continue
            module.in_forward = s.stage != Stage.GERMINATED
            module.straight_through = s.stage == Stage.TRAINING
            module.frozen = s.pruning
            module.alpha = s.alpha.alpha

    def _learners(self) -> dict[int, torch.optim.Optimizer]:
        """The optimiser of every seed that learns this epoch (in the forward pass, not frozen)."""
        return {i: self._seed_opts[i] for i, m in enumerate(self._model.slots)
                if m.seed is not None and m.in_forward and not m.frozen}

    # ---- measurement ---------------------------------------------------------------------
    def _validate(self, configs: list[frozenset[int]]) -> Validation:
        """This host's validation with ``configs``' counterfactuals (the fused kernels where
        they apply: the same function)."""
        if self.cfg.fused:
            return validate_stacked([self._model], self._data.x_val, self._data.y_val,
                                    [configs])[0]
        return validate(self._model, self._data.x_val, self._data.y_val, configs)

    def _measured_slots(self) -> list[int]:
        return [i for i, m in enumerate(self._model.slots)
                if m.seed is not None and m.in_forward and not m.straight_through
                and m.alpha > 0]

    def _ablation_configs(self) -> list[frozenset[int]]:
        """One config per measured slot, plus all of them at once (for the interaction)."""
        measured = self._measured_slots()
        configs = [frozenset({i}) for i in measured]
        if len(measured) > 1:
            configs.append(frozenset(measured))
        return configs

    def _record_contributions(self, val: Validation) -> list[float | None]:
        measured = self._measured_slots()
        contributions: list[float | None] = [None] * self.n_slots
        for i, acc in zip(measured, val.config_accs, strict=False):
            contributions[i] = val.acc - acc
        interaction = 0.0
        if len(measured) > 1:  # joint effect minus the sum of individual effects
            interaction = (val.acc - val.config_accs[-1]) - sum(contributions[i]
                                                                for i in measured)
        for i in measured:
            s = self.lifecycle.slots[i]
            if s.contribution is not None:
                s.contribution_velocity = contributions[i] - s.contribution
            s.contribution = contributions[i]
            s.epochs_since_measured = 0
            s.interaction = interaction
        return contributions

    def _record_grads(self, result: EpochResult) -> None:
        for i, s in enumerate(self.lifecycle.slots):
            stats = result.seed_grads.get(i)
            if stats is None:
                continue
            s.prev_grad_health = s.grad_health
            s.grad_norm = stats.mean_norm
            s.grad_health = stats.health
            s.vanishing = stats.mean_norm < VANISHING_NORM
            s.exploding = not math.isfinite(stats.mean_norm) or stats.mean_norm > EXPLODING_NORM

    def _fossil_slots(self) -> list[int]:
        return [i for i, s in enumerate(self.lifecycle.slots) if s.stage == Stage.FOSSILIZED]

    def _roll_back(self) -> None:
        """Prune every live seed, restore host and snapshot fossils, reset optimiser state."""
        kept = set(self._governor.restore(self._model))
        for i, s in enumerate(self.lifecycle.slots):
            if s.has_seed and not (s.stage == Stage.FOSSILIZED and i in kept):
                self.lifecycle.remove(i)
        self._sync_model()
        self._host_opt = host_optimizer(self._model, self.cfg.task)
        for i in self._seed_opts:
            self._seed_opts[i] = seed_optimizer(self._model.slots[i].seed_parameters(),
                                                self.cfg.task)

    # ---- reward, observation, info ------------------------------------------------------
    def _transition(self, op: Op, target_c: float | None, phi_before: float,
                    contributions: list[float | None], before: tuple[float, int],
                    last: bool) -> Transition:
        """``before``: val_acc and seed params before this step's op."""
        seeds = []
        for s, module, c in zip(self.lifecycle.slots, self._model.slots, contributions,
                                strict=True):
            if s.has_seed:
                seeds.append(SeedView(s.stage, s.alpha.alpha, module.param_count(),
                                      c,
                                      self._acc_hist[-1] - s.acc_at_germination))
        threshold = self.cfg.reward.fossilize_bonus_min_pp
        good_fossils = sum(1 for s in self.lifecycle.slots if s.stage == Stage.FOSSILIZED
                           and (s.fossil_contribution or 0.0) >= threshold)
        return Transition(
            op=op, target_contribution=target_c, phi_before=phi_before,
            phi_after=potential([s.stage for s in self.lifecycle.slots]), seeds=seeds,
            host_params=self._model.host_param_count(), val_acc=self._acc_hist[-1],
            prev_val_acc=before[0], last_epoch=last, n_good_fossils=good_fossils,
            seed_params=self._seed_params(), prev_seed_params=before[1])

    def _seed_params(self) -> int:
        return sum(m.param_count() for m in self._model.slots if m.seed is not None)

    def _observation(self) -> dict[str, np.ndarray]:
        view = obs_mod.EpisodeView(
            epoch=self.epoch, max_epochs=self.cfg.max_epochs, val_loss=self._loss_hist[-1],
            val_acc=self._acc_hist[-1], loss_history=self._loss_hist[:-1],
            acc_history=self._acc_hist[:-1], last_action_valid=self._last_valid,
            last_op=self._last_op)
        return obs_mod.observation(view, self.lifecycle)

    def _info(self, op: Op, effective: Op, valid: bool, *, train_loss: float,
              contributions: list[float | None], components: dict[str, float], raw: float,
              rollback: bool) -> dict[str, Any]:
        slots = self.lifecycle.slots
        return {
            "epoch": self.epoch,
            "val_acc": float(self._acc_hist[-1]),
            "val_loss": float(self._loss_hist[-1]),
            "train_loss": float(train_loss),
            "op": int(op),
            "effective_op": int(effective),
            "action_valid": bool(valid),
            "slot_stages": [int(s.stage) for s in slots],
            "alphas": [float(s.alpha.alpha) for s in slots],
            "contributions": [None if c is None else float(c) for c in contributions],
            "blueprints": [int(b) for b in obs_mod.blueprints(self.lifecycle)],
            "seed_params": self._seed_params(),
            "host_params": self._model.host_param_count(),
            "n_fossils": len(self._fossil_slots()),
            "reward_components": {k: float(v) for k, v in components.items()},
            "raw_reward": float(raw),
            "rollback": bool(rollback),
        }

    # ---- helpers for policies, tests and benchmarks --------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> SeedMorphogenesisEnv:
        """A branch of this env: same state, RNGs and normaliser, so the same actions give the
        same future (the EV ceiling branches episodes this way; ``redraw_future`` gives a branch
        its own dice). The data set is read-only and shared rather than copied."""
        memo[id(self._data)] = self._data
        branch = self.__class__.__new__(self.__class__)
        memo[id(self)] = branch
        for key, value in self.__dict__.items():
            branch.__dict__[key] = copy.deepcopy(value, memo)
        return branch

    def redraw_future(self, seed: int) -> None:
        """Draw this env's future random stream afresh from ``seed``: ``np_random``, the stream
        of new seed modules' initialisations and the torch generator of the host's minibatch
        order and augmentation. The state is untouched (host and seed weights, optimisers, slots and
        lifecycle, governor snapshot, epoch, histories, reward normaliser): a branch that calls
        it continues from the same state with other dice, as the EV ceiling's Markov-state
        continuations do."""
        if self._model is None:
            raise RuntimeError("call reset() first")
        self._np_random, self._np_random_seed = seeding.np_random(seed)
        self._gen = torch.Generator(device=self.cfg.device).manual_seed(
            int(self.np_random.integers(0, 2**62)))
        self._module_rng = np.random.default_rng([int(self.np_random.integers(0, 2**62)), 1])

    @property
    def model(self) -> SeededModel:
        if self._model is None:
            raise RuntimeError("call reset() first")
        return self._model
