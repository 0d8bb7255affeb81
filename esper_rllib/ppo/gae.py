"""GAE that keeps what RLlib's drops: the pre-normalisation statistics.

Replaces RLlib's ``GeneralAdvantageEstimation`` in the learner pipeline (``FactoredPPOLearner.
build``). Differences, each on purpose:
- it runs no forward pass: the critic's outputs were taken at rollout by the env runner (every
  step's ``module.CRITIC_OUT``, and each unfinished episode's bootstrap value in its
  ``custom_data``, ``env_runner.bootstrap_value``), with the very weights the learner holds
  before this iteration's update (PPO samples, then updates, then syncs weights);
- advantages are normalised with the statistics of the REAL steps (RLlib's include the
  artificial bootstrap steps);
- it records, once per training iteration and before the update: raw advantage mean/std,
  return (value target) mean/std, the critic's prediction mean/std, explained variance,
  q_spread and q_spread_start (the seed document's run lacked these);
- and ``explained_variance_return``: the same prediction against the discounted return the env
  paid from each step (the offline fits' and the EV ceiling's target). The verdict's
  ``explained_variance`` is against the GAE targets, which carry the critic's own values (and
  its bootstrap at the horizon), so a critic can score well on it by agreeing with itself;
- it stores the critic's pre-update prediction in the batch (``Columns.VF_PREDS``) for reference
  value clipping and the post-update explained variance;
- it stores that return in the batch (``RETURN_TO_GO``; NaN on the steps of episodes that did
  not end in this batch), for the value phase to judge its early stop against
  (``critic_stop_target="return_to_go"``);
- ``value_target="return_to_go"`` makes the critic's regression target (``VALUE_TARGETS``,
  which the PPO steps and the value phase train on, and which ``explained_variance``,
  ``return_mean`` and ``return_std`` describe) the discounted return the env paid from each
  step instead of GAE's lambda-return; the advantages stay GAE's.

The GAE baseline is ``module.baseline_value`` (the critic's configured baseline: V(s), or for the
Q(s, op) critic the sampled op's Q or the policy's expectation over ops); the prediction the
critic regresses (and whose quality EV measures) is ``module.predicted_value``.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
from ray.rllib.utils.postprocessing.zero_padding import (
    split_and_zero_pad_n_episodes,
    unpad_data_if_necessary,
)

from envs.contract import N_OPS
from esper_rllib.model.module import CRITIC_OUT
from esper_rllib.ppo import telemetry
from esper_rllib.ppo.env_runner import bootstrap_value
from esper_rllib.ppo.learner_config import VALUE_TARGETS
from esper_rllib.ppo.metric_names import RESULT_KEY

# The discounted return the env paid from each step, (B, T) as the value targets: NaN where the
# step's episode did not end in this batch.
RETURN_TO_GO = "esper_return_to_go"


def learner_metric_key(module_id: str, name: str) -> tuple[str, str, str]:
    """Where our learner metrics live in the learner's MetricsLogger (results: learners/<module
    id>/esper/<name>), apart from RLlib's own keys such as ``total_loss``."""
    return (module_id, RESULT_KEY, name)


def log_learner_metrics(
    metrics: MetricsLogger, module_id: str, values: Mapping[str, float], reduce: str = "item"
) -> None:
    """Log one value per training iteration: an item, cleared when the iteration's results are
    reduced (RLlib's default is a sticky EMA(0.01) that carries over iterations and makes a
    metric look frozen; its "mean" costs ~0.2 ms per metric and update, an item next to
    nothing). Values of each gradient step are reduced by the learner before they get here."""
    for name, value in values.items():
        metrics.log_value(learner_metric_key(module_id, name), value, reduce=reduce)


def has_q_critic(module: Any) -> bool:
    return module.model_config.get("critic") == "q_op"


def _as_batch_rows(flat: np.ndarray, episode_lens: Sequence[int], module: Any) -> np.ndarray:
    """Per-step values of the episodes, one after another, in the train batch's layout: for an
    LSTM module, zero-padded rows of max_seq_len."""
    if not module.is_stateful():
        return flat
    return np.stack(split_and_zero_pad_n_episodes(
        flat, episode_lens=list(episode_lens), max_seq_len=module.model_config["max_seq_len"]))


class FactoredGAE(GeneralAdvantageEstimation):
    """Drop-in for RLlib's GAE connector piece (its ``gamma``, ``lambda_``), plus
    ``truncation_bootstrap``: False values an episode's end at max_epochs as 0 (nothing follows
    the horizon) where RLlib bootstraps it with the critic's own, never-trained value of the
    last observation. Chunks cut mid-episode by the sampler still bootstrap.

    ``value_target`` (``learner_config.VALUE_TARGETS``): what the critic regresses. "gae" (the
    reference): GAE's lambda-return, advantage + baseline, which holds the critic's own values
    at every later step and at the horizon. "return_to_go": G_t = sum_k gamma^k r_{t+k} to the
    episode's end (Monte-Carlo: lambda 1, nothing after max_epochs whatever
    ``truncation_bootstrap`` says); only a chunk cut by the sampler, whose return is not known
    yet, adds gamma^(n - t) x the critic's value where it was cut (never in complete_episodes
    mode). The advantages are GAE's either way."""

    def __init__(self, *args: Any, truncation_bootstrap: bool = True, value_target: str = "gae",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if value_target not in VALUE_TARGETS:
            raise ValueError(f"value_target: {value_target!r}; allowed: {VALUE_TARGETS}")
        self.truncation_bootstrap = truncation_bootstrap
        self.value_target = value_target

    def __call__(
        self,
        *,
        rl_module: Any,
        episodes: list[Any],
        batch: dict[str, Any],
        metrics: MetricsLogger | None = None,
        **kwargs,
    ) -> dict[str, Any]:
        sa_episodes = list(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        )
        for module_id, module_batch in batch.items():
            module = rl_module[module_id].unwrapped()
            if not isinstance(module, ValueFunctionAPI):
                continue
            module_episodes = [e for e in sa_episodes if e.module_id in (None, module_id)]
            stats = self._estimate(module, module_batch, module_episodes)
            if metrics is not None:
                log_learner_metrics(metrics, module_id, stats)
        return batch

    def _estimate(
        self, module: Any, batch: dict[str, Any], episodes: Sequence[Any]
    ) -> dict[str, float]:
        """Adds advantages, value targets and pre-update predictions to ``batch``; returns the
        iteration's pre-update statistics."""
        # Each episode's rows hold its steps and RLlib's artificial bootstrap step.
        episode_lens = [len(e) + 1 for e in episodes]
        if CRITIC_OUT not in batch:
            raise ValueError(f"FactoredGAE: the train batch has no {CRITIC_OUT!r} column (the "
                             "critic's outputs at rollout); sample with FactoredLSTM")
        with torch.no_grad():
            critic_out = batch[CRITIC_OUT]
            predicted = module.predicted_value(critic_out, batch)
            # On the artificial bootstrap steps this is stale (a copy of the last real step):
            # the env runner's bootstrap value replaces it below.
            baseline = module.baseline_value(critic_out,
                                             batch[Columns.ACTION_DIST_INPUTS][..., :N_OPS],
                                             batch[Columns.ACTIONS][..., 0])
            q_all = critic_out if has_q_critic(module) else None

        def flat(x: Any) -> np.ndarray:
            return unpad_data_if_necessary(episode_lens, convert_to_numpy(x))

        values = np.array(flat(baseline))  # a copy: the bootstrap steps are overwritten
        values[np.cumsum(episode_lens) - 1] = [
            0.0 if e.is_truncated and not self.truncation_bootstrap else bootstrap_value(e)
            for e in episodes]
        targets = compute_value_targets(
            values=values,
            rewards=flat(batch[Columns.REWARDS]),
            terminateds=flat(batch[Columns.TERMINATEDS]),
            truncateds=flat(batch[Columns.TRUNCATEDS]),
            gamma=self.gamma,
            lambda_=self.lambda_,
        )
        targets = torch.as_tensor(_as_batch_rows(targets, episode_lens, module),
                                  device=baseline.device)
        mask = batch[Columns.LOSS_MASK].bool()
        raw_advantages = targets - baseline
        advantages = telemetry.normalize_advantages(raw_advantages, mask)
        if self.value_target == "return_to_go":
            tails = [bootstrap_value(e) if not e.is_done else 0.0 for e in episodes]
            targets = torch.as_tensor(_as_batch_rows(self._discounted_returns(episodes, tails),
                                                     episode_lens, module),
                                      device=baseline.device)

        batch[Postprocessing.ADVANTAGES] = advantages
        batch[Postprocessing.VALUE_TARGETS] = targets
        batch[Columns.VF_PREDS] = predicted

        ev, ev_undefined = telemetry.explained_variance(targets, predicted, mask)
        returns, ended = self._returns_to_go(episodes, episode_lens, module)
        returns, ended = returns.to(predicted.device), ended.to(mask.device)
        ev_return, _ = telemetry.explained_variance(returns, predicted, mask & ended)
        batch[RETURN_TO_GO] = torch.where(ended, returns, float("nan"))
        stats = {
            "pre_norm_advantage_mean": float(telemetry.masked_mean(raw_advantages, mask)),
            "pre_norm_advantage_std": float(telemetry.masked_std(raw_advantages, mask)),
            "advantage_mean": float(telemetry.masked_mean(advantages, mask)),
            "advantage_std": float(telemetry.masked_std(advantages, mask)),
            "return_mean": float(telemetry.masked_mean(targets, mask)),
            "return_std": float(telemetry.masked_std(targets, mask)),
            "value_mean": float(telemetry.masked_mean(predicted, mask)),
            "value_std": float(telemetry.masked_std(predicted, mask)),
            "explained_variance": ev,
            "explained_variance_undefined": float(ev_undefined),
            "explained_variance_return": ev_return,
        }
        if q_all is not None:
            stats["q_spread"] = telemetry.q_spread(q_all, mask)
            stats["q_spread_start"] = self._q_spread_start(q_all, episodes, episode_lens)
        return stats

    def _returns_to_go(
        self, episodes: Sequence[Any], episode_lens: Sequence[int], module: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The discounted return the env paid from each step, laid out as the batch, and which
        rows have one: the steps of episodes that ended in this batch (in complete_episodes
        mode, all)."""
        returns = self._discounted_returns(episodes, [0.0] * len(episodes))
        ended = np.concatenate([np.full(n, e.is_done) for e, n in zip(episodes, episode_lens,
                                                                        strict=True)])
        return (torch.as_tensor(_as_batch_rows(returns, episode_lens, module)),
                torch.as_tensor(_as_batch_rows(ended, episode_lens, module)).bool())

    def _discounted_returns(self, episodes: Sequence[Any], tails: Sequence[float]
                            ) -> np.ndarray:
        """Per episode, sum_k gamma^k r_{t+k} from each step to its last, plus gamma^(n - t) x
        its ``tail`` (the value after its last step), and on its bootstrap row the tail: one
        flat float32 array, episodes one after another."""
        return np.concatenate([
            telemetry.returns_to_go(np.append(np.asarray(e.get_rewards()), tail), self.gamma)
            for e, tail in zip(episodes, tails, strict=True)]).astype(np.float32)

    @staticmethod
    def _q_spread_start(
        q_all: torch.Tensor, episodes: Sequence[Any], episode_lens: Sequence[int]
    ) -> float:
        """The reference's Q-spread: at the first step of the first episode that starts in this
        batch (chunks continuing an earlier episode are skipped); NaN if none starts here."""
        spread = q_all.max(dim=-1).values - q_all.min(dim=-1).values
        flat_spread = unpad_data_if_necessary(list(episode_lens), convert_to_numpy(spread))
        offset = 0
        for episode, length in zip(episodes, episode_lens, strict=True):
            if episode.t_started == 0:
                return float(flat_spread[offset])
            offset += length
        return float("nan")
