"""The reference PPO loss terms as pure torch functions.

All tensors are (B, T) or (B, T, n_heads) in ``envs.contract.HEADS`` order; ``mask`` marks the
real steps (RLlib's LOSS_MASK: no zero-padding, no artificial bootstrap step) and ``relevance``
the heads that matter for the op taken (causal relevance), so an irrelevant head adds nothing.
"""

from __future__ import annotations

import torch

from esper_rllib.ppo.learner_config import RATIO_MODES
from esper_rllib.ppo.telemetry import masked_mean, normalized_head_entropy


def mean_per_head(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(n_heads,): mean of ``x`` (..., n_heads) over the entries where ``weight`` is 1.

    A head with no such entry gives 0 (not 0/0, whose NaN would leak into the gradient).
    """
    dims = tuple(range(x.dim() - 1))
    return (x * weight).sum(dims) / weight.sum(dims).clamp(min=1.0)


def _clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_param: float) -> torch.Tensor:
    return -torch.min(ratio * adv, ratio.clamp(1.0 - clip_param, 1.0 + clip_param) * adv)


def policy_loss(
    head_logp: torch.Tensor,
    head_logp_old: torch.Tensor,
    relevance: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_param: float,
    ratio_mode: str,
) -> torch.Tensor:
    """Clipped PPO surrogate.

    ``per_head`` (the reference): r_h = exp(logp_h - logp_h_old), clipped per head; the sum over
    heads of the mean, over the real steps where head h is relevant, of -min(r_h A, clip(r_h) A).
    ``joint``: one ratio of the relevance-weighted summed log-probs, mean over real steps.
    """
    if ratio_mode == "per_head":
        ratio = torch.exp(head_logp - head_logp_old)
        surrogate = _clipped_surrogate(ratio, advantages.unsqueeze(-1), clip_param)
        return mean_per_head(surrogate, relevance * mask.unsqueeze(-1)).sum()
    if ratio_mode == "joint":
        log_ratio = ((head_logp - head_logp_old) * relevance).sum(-1)
        return masked_mean(_clipped_surrogate(torch.exp(log_ratio), advantages, clip_param), mask)
    raise ValueError(f"ratio_mode: must be one of {RATIO_MODES}, got {ratio_mode!r}")


def value_loss(
    values: torch.Tensor,
    targets: torch.Tensor,
    old_values: torch.Tensor,
    mask: torch.Tensor,
    value_clip: float | None,
) -> torch.Tensor:
    """0.5 x mean squared error over real steps.

    With ``value_clip`` c, the reference's clipping: V_clip = V_old + clamp(V - V_old, -c, c)
    and the elementwise max of the two squared errors (not RLlib's clamp of the squared error,
    which zeroes the gradient wherever the error is large).
    """
    err = (values - targets) ** 2
    if value_clip is not None:
        clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        err = torch.max(err, (clipped - targets) ** 2)
    return 0.5 * masked_mean(err, mask)


def entropy_bonus(
    head_entropy: torch.Tensor,
    legal_counts: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor,
    head_coefs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted sum, per-head means): sum over heads of c_h x the mean, over the real steps
    where the head is relevant, of its entropy / ln(legal count) (0 with one legal value).

    The weighted sum is at most sum(c_h) (9.4 with the reference coefficients).
    """
    per_head = mean_per_head(
        normalized_head_entropy(head_entropy, legal_counts), relevance * mask.unsqueeze(-1)
    )
    return (head_coefs * per_head).sum(), per_head
