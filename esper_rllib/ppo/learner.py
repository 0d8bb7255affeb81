"""``FactoredPPOLearner``: the reference PPO loss and its telemetry on RLlib 2.60's learner.

Replaces RLlib's PPO loss with ``ppo/loss.py``'s (why: RLlib's value clipping clamps the squared
error, its explained variance is t=0 only, its KL is 0 without the KL penalty, its GAE
normalises over bootstrap steps). Settings come from
``config.learners(learner_config_dict={...})`` (keys and defaults: ``learner_config``) plus
RLlib's ``clip_param``, ``grad_clip`` (max_grad_norm, global norm), ``gamma``, ``lambda_``,
``num_epochs`` and ``lr``. The RLlib hooks overridden here, three of them private, and the
learner's private attributes they use are listed in ``esper_rllib.rllib_seam`` (which reaches the
attributes); ``docs/design.md`` draws when each runs in an iteration.

Optimisation (``esper_rllib.ppo.critic_training``, which critic-fit uses too): one AdamW over
all parameters, the critic (value head, and critic trunk if separate) in its own parameter group
at ``lr x critic_lr_scale`` with decoupled weight decay ``critic_weight_decay`` (RLlib's lr
schedule sets both groups). RLlib clips gradients per
optimizer (``Learner.postprocess_gradients_for_module``), so a single optimizer keeps
``max_grad_norm`` one global norm over every parameter. Each epoch (``num_epochs``) is split into
``minibatches`` gradient steps on whole episodes (``esper_rllib.ppo.minibatches``); RLlib's
``minibatch_size`` counts env steps and would cut through the LSTM sequences, so it must be unset
when ``minibatches > 1``.

With ``feature_norm="robust"`` the module's feature statistics are fitted from the first batch
(real steps), before its first gradient step, and fixed after (``esper_rllib.model.feature_norm``).

With PopArt (model_config ``value_target_norm="popart"``, ``esper_rllib.model.value_norm``) the
target statistics are updated once per batch, after GAE and before the first gradient step, and the
value loss is computed on normalised values and targets (``value_clip`` is then in normalised
units). Every reported value metric stays on the unnormalised (return) scale, comparable across
cells: EV, value and return mean/std, and ``value_loss`` (the optimised normalised loss times
std^2); ``popart_mean`` / ``popart_std`` are the statistics after the batch's update.

Metrics (names of ``metric_names.LEARNER_METRICS``) are logged once per training iteration with
explicit reduces under ``learners/<module id>/esper/<name>``:
- before the update (the GAE pass, ``esper_rllib.ppo.gae``): EV, return/value/advantage statistics,
  q_spread; the PopArt statistics after their update;
- per gradient step, averaged over the iteration's steps: losses, entropies, ratio statistics,
  gradient norms and clip ratio (``ratio_max`` is the max);
- before the first gradient step: ``approx_kl_pre``;
- after the last gradient step (``after_gradient_based_update``): ``kl``,
  ``explained_variance_post`` and the LSTM state norms, on the whole train batch.

The value phase (``critic_steps`` > 0; Phasic Policy Gradient's, Cobbe et al. 2021): after the
PPO steps of a batch (and after the post-update metrics above, which so describe the PPO steps
alone), ``critic_steps`` value-only gradient steps on whole-episode minibatches of the current
batch plus the last ``critic_replay`` batches (kept here, with the value targets and
predictions GAE gave them when they were collected; their LSTM states re-run from each
sequence's stored STATE_IN, the initial state with the builder's whole-episode sequences).
Each step: the PPO phase's value loss (``value_clip`` against each batch's own rollout
predictions, PopArt), without ``value_coef`` (no other term to weigh it against), the same Adam
(the critic's group at lr x critic_lr_scale) and the same global-norm clip, with gradients on
the critic's parameters only (the value head, plus the critic trunk with
``critic_trunk="separate"``). A shared trunk is NOT trained here: it is the policy's too, and
moving it would move the policy outside PPO's clipped step. Metrics:
``metric_names.CRITIC_PHASE_METRICS``, logged only when the phase runs. With
``critic_stop_fraction`` the current batch's last episodes are held back and the phase stops
early on them (``critic_training.EarlyStop``; ``critic_phase_steps`` counts the steps taken).
The stored batches are not in the learner's checkpointed state: a restored run's value phase
starts from none.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from envs.contract import HEADS
from esper_rllib import rllib_seam
from esper_rllib.ppo import critic_training, loss, telemetry
from esper_rllib.ppo.critic_training import (
    clip_by_global_norm_,
    finite_grad_norms,
    on_return_scale,
)
from esper_rllib.ppo.gae import RETURN_TO_GO, FactoredGAE, log_learner_metrics
from esper_rllib.ppo.learner_batch import REPLACED_PIECES, EpisodesToSequences
from esper_rllib.ppo.learner_config import resolve_learner_config
from esper_rllib.ppo.minibatches import episode_minibatches

# The columns the value phase reads: all a stored batch keeps (ACTIONS for Q(s, op taken)).
VALUE_PHASE_COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.STATE_IN, Columns.SEQ_LENS,
                       Columns.LOSS_MASK, Postprocessing.VALUE_TARGETS, Columns.VF_PREDS,
                       RETURN_TO_GO)

# Per-head entropy weights of the reference (sum 9.4: the ceiling of the `entropy` metric).
HEAD_ENTROPY_COEFS: dict[str, float] = {
    "op": 1.0, "slot": 1.0, "blueprint": 1.3, "style": 1.2, "tempo": 1.3,
    "alpha_target": 1.2, "alpha_speed": 1.2, "alpha_curve": 1.2,
}
assert tuple(HEAD_ENTROPY_COEFS) == HEADS

# RLlib's own loss coefficients, which our loss never reads, and the learner_config_dict key
# that takes their place.
IGNORED_RLLIB_SETTINGS: dict[str, str] = {"entropy_coeff": "entropy_coef",
                                          "vf_loss_coeff": "value_coef"}


def check_rllib_loss_settings(config: Any) -> None:
    """ValueError when the PPOConfig sets one of RLlib's loss coefficients away from its
    default: our loss would silently ignore it."""
    defaults = PPOConfig()
    for name, ours in IGNORED_RLLIB_SETTINGS.items():
        value = getattr(config, name)
        if value != getattr(defaults, name):
            raise ValueError(
                f"training({name}={value!r}) is ignored by FactoredPPOLearner; set "
                f"learners(learner_config_dict={{{ours!r}: ...}}) (the {ours!r} knob) instead")


class StepMetrics:
    """Values of each gradient step of one iteration, reduced over its steps (the mean, NaN
    values skipped as RLlib's "mean" does, the max or the sum) and logged once."""

    _REDUCE = {"mean": lambda v: sum(v) / len(v), "max": max, "sum": sum}

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[str, list[float]]] = {}

    def add(self, module_id: str, values: Mapping[str, float], reduce: str = "mean") -> None:
        for name, value in values.items():
            self._values.setdefault((module_id, name), (reduce, []))[1].append(value)

    def log(self, metrics: Any) -> None:
        for (module_id, name), (reduce, values) in self._values.items():
            finite = [v for v in values if not math.isnan(v)]
            log_learner_metrics(metrics, module_id, {
                name: self._REDUCE[reduce](finite) if finite else math.nan})
        self._values.clear()


class FactoredPPOLearner(PPOTorchLearner):
    """PPO with per-head (or joint) clipped ratios, reference value clipping, a normalised
    weighted entropy bonus, and the seed document's telemetry."""

    def build(self) -> None:
        self.esper_config = resolve_learner_config(self.config.learner_config_dict)
        if self.config.use_kl_loss:
            raise ValueError("use_kl_loss: FactoredPPOLearner implements the reference loss, "
                             "which has no KL penalty; set training(use_kl_loss=False)")
        check_rllib_loss_settings(self.config)
        if self.esper_config["critic_steps"] and self.config.num_learners > 1:
            # The value phase steps the local module directly, outside DDP's gradient
            # all-reduce: several learners would drift apart.
            raise ValueError(f"learner_config_dict['critic_steps']="
                             f"{self.esper_config['critic_steps']}: needs num_learners <= 1, "
                             f"got {self.config.num_learners}")
        super().build()
        if rllib_seam.learner_connector(self) is not None:
            self._replace_learner_pipeline()
        self._train_batch = None
        self._before_first_step = False
        self._step_metrics = StepMetrics()
        # Per module, the value phase's earlier batches (VALUE_PHASE_COLUMNS only), newest
        # first, at most critic_replay of them.
        self._replay: dict[str, deque[dict[str, Any]]] = {}

    def _replace_learner_pipeline(self) -> None:
        """RLlib's default pieces -> ``EpisodesToSequences`` (the same batch, one numpy pass),
        then our GAE in place of RLlib's."""
        pipeline = rllib_seam.learner_connector(self)
        names = tuple(type(piece).__name__ for piece in pipeline.connectors)
        if names != (*REPLACED_PIECES, "GeneralAdvantageEstimation"):
            raise ValueError(f"FactoredPPOLearner: expected RLlib's default PPO learner "
                             f"connector pieces {REPLACED_PIECES}, got {names} (custom learner "
                             "connectors are not supported)")
        for name in names:
            pipeline.remove(name)
        pipeline.append(EpisodesToSequences(device=self.device))
        pipeline.append(FactoredGAE(
            gamma=self.config.gamma, lambda_=self.config.lambda_,
            truncation_bootstrap=self.esper_config["truncation_bootstrap"],
            value_target=self.esper_config["value_target"]))

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        # RLlib's default is Adam with eps 1e-8; the reference uses 1e-5. One optimizer (so the
        # gradient clip stays global), the critic in a group of its own lr multiplier and
        # weight decay (critic_training.param_groups, as critic-fit builds it).
        params = self.get_parameters(self.module[module_id])
        groups = critic_training.param_groups(
            params, self.module[module_id].unwrapped(), self.esper_config["critic_lr_scale"],
            self.esper_config["critic_weight_decay"])
        # The lr, or an RLlib schedule's first ([[timestep 0, lr], ...]); registering sets it
        # again, and the schedule moves it, through _set_optimizer_lr.
        lr = config.lr[0][1] if isinstance(config.lr, list) else config.lr
        self.register_optimizer(
            module_id=module_id,
            optimizer=critic_training.make_optimizer(groups, lr),
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    @staticmethod
    def _set_optimizer_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
        # RLlib sets (and schedules) one lr per optimizer; each group takes it times its scale.
        critic_training.set_lr(optimizer, lr)

    # -- the loss ---------------------------------------------------------------------------
    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        cfg = self.esper_config
        module = self.module[module_id].unwrapped()
        dist_cls = module.get_train_action_dist_cls()
        new = dist_cls.from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        old = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
        actions = batch[Columns.ACTIONS]
        mask = batch[Columns.LOSS_MASK].bool()
        relevance = new.relevance(actions)
        head_logp, head_logp_old = new.head_logps(actions), old.head_logps(actions)

        policy = loss.policy_loss(head_logp, head_logp_old, relevance,
                                  batch[Postprocessing.ADVANTAGES], mask, config.clip_param,
                                  cfg["ratio_mode"])
        value, values = self._value_loss(module, batch, fwd_out[Columns.EMBEDDINGS])
        coefs = torch.tensor(list(HEAD_ENTROPY_COEFS.values()), device=values.device)
        entropy, head_entropy = loss.entropy_bonus(new.head_entropies(), new.legal_counts(),
                                                   relevance, mask, coefs)
        total = policy + cfg["value_coef"] * value - cfg["entropy_coef"] * entropy

        with torch.no_grad():
            relevant = relevance.bool() & mask.unsqueeze(-1)
            step_metrics = {
                "policy_loss": float(policy),
                "value_loss": on_return_scale(module, value),
                "total_loss": float(total), "entropy": float(entropy),
                **{f"entropy_{h}": float(e) if relevant[..., i].any() else float("nan")
                   for i, (h, e) in enumerate(zip(HEADS, head_entropy, strict=True))},
            }
            ratios = telemetry.ratio_stats(torch.exp(head_logp - head_logp_old), relevant,
                                           config.clip_param)
            ratio_max = ratios.pop("ratio_max")
            self._step_metrics.add(module_id, {**step_metrics, **ratios})
            self._step_metrics.add(module_id, {"ratio_max": ratio_max}, reduce="max")
            if self._before_first_step:
                # The reference's approx KL: at the first step the policy equals the rollout's,
                # so this is 0 by construction with one gradient step per batch.
                kl_pre = telemetry.approx_kl((head_logp * relevance).sum(-1),
                                             (head_logp_old * relevance).sum(-1), mask)
                self._step_metrics.add(module_id, {"approx_kl_pre": kl_pre})
        return total

    def _value_loss(self, module: Any, batch: Mapping[str, Any],
                    embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the value loss optimised, the (B, T) values), in the PPO and the value phase."""
        values = module.compute_values(batch, embeddings=embeddings)
        value = critic_training.value_loss(
            module, values, batch[Postprocessing.VALUE_TARGETS], batch[Columns.VF_PREDS],
            batch[Columns.LOSS_MASK], self.esper_config["value_clip"])
        return value, values

    # -- gradient norms, clipping, the step ---------------------------------------------------
    def postprocess_gradients_for_module(
        self, *, module_id: str, config: Any = None, module_gradients_dict: dict[Any, Any]
    ) -> dict[Any, Any]:
        """Logs the gradient norms and clips by global norm, from one norm per gradient tensor
        (RLlib's own clipping and its non-finite checks would take every norm again)."""
        self._before_first_step = False
        module = self.module[module_id].unwrapped()
        refs = [ref for ref, g in module_gradients_dict.items() if g is not None]
        grads = [module_gradients_dict[ref] for ref in refs]
        norms = finite_grad_norms(grads)
        index = {ref: i for i, ref in enumerate(refs)}
        parts = {f"grad_norm_{h}": module.policy_heads[h] for h in HEADS}
        parts["grad_norm_value"] = module.value_head
        values = {
            name: [index[r] for r in map(self.get_param_ref, part.parameters()) if r in index]
            for name, part in parts.items()
        }
        pre_clip = torch.linalg.vector_norm(norms)
        logged = {name: torch.linalg.vector_norm(norms[i]) for name, i in values.items()}
        logged["grad_norm_pre_clip"] = pre_clip
        if config.grad_clip:
            # Mean over the iteration's steps of norm / max = mean norm / max_grad_norm.
            logged["clip_ratio"] = pre_clip / config.grad_clip
            clip_by_global_norm_(grads, pre_clip, config.grad_clip)
        self._step_metrics.add(module_id, dict(zip(
            logged, torch.stack(list(logged.values())).tolist(), strict=True)))
        # The reference takes one gradient step per batch: count them rather than trust settings.
        self._step_metrics.add(module_id, {"gradient_steps": 1}, reduce="sum")
        return dict(module_gradients_dict)

    def apply_gradients(self, gradients_dict: dict[Any, Any]) -> None:
        # RLlib's version checks every gradient tensor for NaN/inf, twice; ours were made
        # finite where their norms were taken.
        params = rllib_seam.learner_params(self)
        for ref, grad in gradients_dict.items():
            params[ref].grad = grad
        for optimizer in rllib_seam.learner_optimizers(self):
            optimizer.step()

    # -- before / after the iteration's gradient steps -----------------------------------------
    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._before_first_step = True
        self._step_metrics = StepMetrics()

    def _make_batch_if_necessary(self, training_data: Any) -> Any:
        # Keep the iteration's whole train batch (after the learner connector, GAE included) for
        # the post-update measurements; RLlib 2.60 builds it inside `update()` and drops it.
        batch = super()._make_batch_if_necessary(training_data)
        if training_data.episodes is not None:
            # RLlib counts the episodes' steps after its own pipeline has appended a bootstrap
            # step to each, and its minibatch iterator needs that count (the batch's rows);
            # EpisodesToSequences leaves the episodes as they are.
            batch = MultiAgentBatch(batch.policy_batches,
                                    env_steps=batch.count + len(training_data.episodes))
        self._train_batch = batch
        self._fit_feature_norms(batch)
        self._update_value_norms(batch)
        return batch

    def _fit_feature_norms(self, batch: Any) -> None:
        """``feature_norm="robust"``, ``critic_feature_bins``: fitted from the first batch's real
        steps, before its first gradient step, then fixed (``esper_rllib.model.feature_norm``)."""
        for module_id, module_batch in batch.policy_batches.items():
            mask = module_batch[Columns.LOSS_MASK].bool()
            self.module[module_id].unwrapped().fit_features(
                module_batch[Columns.OBS]["features"][mask])

    def _update_value_norms(self, batch: Any) -> None:
        """PopArt: fold the batch's value targets (real steps) into each module's statistics
        before any gradient step; the pre-update predictions in the batch stay valid."""
        for module_id, module_batch in batch.policy_batches.items():
            module = self.module[module_id].unwrapped()
            if module.value_norm is None:
                continue
            mask = module_batch[Columns.LOSS_MASK].bool()
            module.value_norm.update(module_batch[Postprocessing.VALUE_TARGETS][mask],
                                     module.value_head[-1])
            log_learner_metrics(self.metrics, module_id, {
                "popart_mean": float(module.value_norm.mean),
                "popart_std": float(module.value_norm.std)})

    def _create_iterator_if_necessary(self, *, training_data: Any, num_epochs: int = 1,
                                      minibatch_size: int | None = None, **kwargs) -> Any:
        minibatches = self.esper_config["minibatches"]
        if minibatches == 1:
            return super()._create_iterator_if_necessary(
                training_data=training_data, num_epochs=num_epochs,
                minibatch_size=minibatch_size, **kwargs)
        if minibatch_size:
            raise ValueError(f"minibatch_size={minibatch_size}: counts env steps and cuts LSTM "
                             f"sequences; with learner_config_dict minibatches={minibatches} "
                             "set training(minibatch_size=None)")
        batch = self._make_batch_if_necessary(training_data=training_data)
        return episode_minibatches(rllib_seam.slice_by_sequence(self, batch), num_epochs,
                                   minibatches)

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        self._step_metrics.log(self.metrics)
        batch, self._train_batch = self._train_batch, None
        for module_id, module_batch in (batch.policy_batches.items() if batch else ()):
            module = self.module[module_id].unwrapped()
            log_learner_metrics(self.metrics, module_id,
                                self._post_update_metrics(module, module_batch))
            if self.esper_config["critic_steps"]:
                self._value_phase(module_id, module, module_batch)
        # Last: here RLlib moves the lr schedule on to the next update, and the value phase
        # steps at this update's lr.
        super().after_gradient_based_update(timesteps=timesteps)

    def _value_phase(self, module_id: str, module: Any, batch: Any) -> None:
        """``critic_steps`` value-only gradient steps on the current batch and the stored ones
        (the module docstring says what trains; the loop is ``critic_training.train_critic``),
        then its metrics; the current batch is stored afterwards, so the next phases replay it."""
        cfg = self.esper_config
        stored = self._replay.setdefault(module_id, deque(maxlen=cfg["critic_replay"]))
        current = {k: batch[k] for k in VALUE_PHASE_COLUMNS}
        # Early stopping (critic_stop_fraction): the current batch's last episodes are held
        # back from the steps to judge them (each row is one whole episode).
        n_current = len(current[Columns.SEQ_LENS])
        n_fit = n_current - critic_training.stop_rows(n_current, cfg["critic_stop_fraction"])
        data = _concat_rows([slice_rows(current, 0, n_fit), *stored])
        n_seqs = len(data[Columns.SEQ_LENS])
        # About as many episodes per step as a PPO step: each batch in `minibatches` groups.
        groups = cfg["minibatches"] * (1 + len(stored))
        data = rllib_seam.slice_by_sequence(
            self, MultiAgentBatch({module_id: SampleBatch(data, _zero_padded=True)}, n_seqs))
        # A shared trunk is the policy's: its output is taken without gradients, so that only
        # the value head moves. A separate critic trunk trains with the head.
        train_trunk = module.critic_trunk is not None

        def value_loss(mb: Mapping[str, Any]) -> torch.Tensor:
            with torch.set_grad_enabled(train_trunk and torch.is_grad_enabled()):
                embeddings = module.critic_embeddings(mb)
            return self._value_loss(module, mb, embeddings)[0]

        def loss_on_return(mb: Mapping[str, Any]) -> torch.Tensor:
            """The held-back episodes' value loss against the return the env paid."""
            values = module.compute_values(mb, embeddings=module.critic_embeddings(mb))
            returns = mb[RETURN_TO_GO]
            return critic_training.value_loss(
                module, values, returns.nan_to_num(), mb[Columns.VF_PREDS],
                mb[Columns.LOSS_MASK].bool() & returns.isfinite(), cfg["value_clip"])

        steps = StepMetrics()

        def log_step(step: int, value: torch.Tensor, pre_clip: float) -> None:
            steps.add(module_id, {"critic_phase_value_loss": on_return_scale(module, value),
                                  "critic_phase_grad_norm_pre_clip": pre_clip})
            steps.add(module_id, {"critic_phase_steps": 1}, reduce="sum")

        minibatches = episode_minibatches(data, -(-cfg["critic_steps"] // groups), groups)
        critic_training.train_critic(
            module, module.critic_parameters(), self.get_optimizer(module_id),
            loss=value_loss,
            minibatches=(mb.policy_batches[module_id] for mb in minibatches),
            steps=cfg["critic_steps"],
            max_norm=self.config.get_config_for_module(module_id).grad_clip,
            held_back=slice_rows(current, n_fit, n_current) if n_fit < n_current else None,
            patience=cfg["critic_stop_patience"], after_step=log_step,
            judge=loss_on_return if cfg["critic_stop_target"] == "return_to_go" else None)
        steps.log(self.metrics)
        if cfg["critic_replay"]:
            stored.appendleft(current)  # the oldest falls off at maxlen
        with critic_training.judging(module):
            values = module.compute_values(batch, embeddings=module.critic_embeddings(batch))
            ev_post, _ = telemetry.explained_variance(
                batch[Postprocessing.VALUE_TARGETS], values, batch[Columns.LOSS_MASK].bool())
        log_learner_metrics(self.metrics, module_id, {
            "critic_phase_episodes": float(n_seqs),
            "critic_phase_explained_variance_post": ev_post})

    @staticmethod
    def _post_update_metrics(module: Any, batch: Any) -> dict[str, float]:
        """kl(pi_old, pi_new) with causal relevance, EV of the updated critic, LSTM state norms
        (at each chunk's last real step): on the whole batch, after the iteration's last
        gradient step."""
        with torch.inference_mode(), critic_training.judging(module):
            mask = batch[Columns.LOSS_MASK].bool()
            # Sequences cut at their last real step, so the returned state is not advanced by
            # RLlib's artificial bootstrap step; the masked metrics below never read past it.
            real_steps = mask.sum(-1)
            fwd = module._forward({**batch, Columns.SEQ_LENS: real_steps.clamp(min=1)})
            dist_cls = module.get_train_action_dist_cls()
            old = dist_cls.from_logits(batch[Columns.ACTION_DIST_INPUTS])
            new = dist_cls.from_logits(fwd[Columns.ACTION_DIST_INPUTS])
            values = module.compute_values(batch, embeddings=fwd[Columns.EMBEDDINGS])
            ev_post, _ = telemetry.explained_variance(
                batch[Postprocessing.VALUE_TARGETS], values, mask)
            relevant = old.relevance(batch[Columns.ACTIONS]).bool() & mask.unsqueeze(-1)
            head_kls = old.head_kls(new)
            metrics = {
                "kl": float(telemetry.masked_mean(old.kl(new), mask)),
                **{f"kl_{h}": float(telemetry.masked_mean(head_kls[..., i], relevant[..., i]))
                   for i, h in enumerate(HEADS)},
                "explained_variance_post": ev_post,
            }
            state = fwd.get(Columns.STATE_OUT)
            if state:
                # A chunk holding only a bootstrap step has no real state to report.
                has_real = real_steps > 0
                metrics["lstm_h_norm"] = telemetry.mean_row_norm(state["h"][has_real])
                metrics["lstm_c_norm"] = telemetry.mean_row_norm(state["c"][has_real])
        return metrics


def slice_rows(batch: Mapping[str, Any], start: int, end: int) -> dict[str, Any]:
    """Rows ``start:end`` of a sequence batch's columns (nested dicts of (rows, ...) arrays);
    critic-fit slices its episodes with it too."""
    return {k: (slice_rows(v, start, end) if isinstance(v, Mapping) else v[start:end])
            for k, v in batch.items()}


def _concat_rows(batches: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Sequence batches' columns (nested dicts of (rows, ...) tensors) stacked by row."""
    first = batches[0]
    if len(batches) == 1:
        return dict(first)
    return {k: (_concat_rows([b[k] for b in batches]) if isinstance(first[k], Mapping)
                else torch.cat([torch.as_tensor(b[k]) for b in batches])) for k in first}
