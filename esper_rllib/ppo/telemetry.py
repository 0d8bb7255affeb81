"""The telemetry formulas (docs/design.md, Metrics), as pure torch functions.

Every statistic is taken over the *valid* steps only (a boolean mask: no LSTM zero-padding, no
artificial bootstrap step), because RLlib's own versions look at padding too or at t=0 only.
Standard deviations are population ones (ddof 0) so a single valid step gives 0, not NaN.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from envs.contract import HEADS

# Below this return variance, explained variance is meaningless (0/0): report NaN plus a flag.
EV_MIN_RETURN_VAR = 1e-8
# Guards the division in advantage normalisation (the reference adds 1e-8 to the std).
ADV_NORM_EPS = 1e-8


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the steps where ``mask`` is true (NaN when none is)."""
    return x[mask].mean() if mask.any() else x.new_tensor(float("nan"))


def masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population standard deviation of ``x`` over the valid steps (NaN when none is)."""
    return x[mask].std(correction=0) if mask.any() else x.new_tensor(float("nan"))


def explained_variance(
    returns: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> tuple[float, bool]:
    """1 - Var(G - V) / Var(G) over the valid steps, unclamped (it can be far below 0).

    Returns ``(ev, undefined)``: ``(nan, True)`` when Var(G) < 1e-8 or no step is valid, since a
    constant return leaves nothing to explain (the seed document reads a negative value as
    "worse than predicting the mean", which needs a non-degenerate mean).
    """
    mask = mask.bool()
    if not mask.any():
        return float("nan"), True
    g = returns[mask].double()
    var_g = g.var(correction=0)
    if var_g < EV_MIN_RETURN_VAR:
        return float("nan"), True
    residual = g - values[mask].double()
    return float(1.0 - residual.var(correction=0) / var_g), False


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} for every step t of an episode that ended."""
    out = np.zeros(len(rewards))
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Standardise with the mean/std of the valid steps only (RLlib's GAE includes bootstrap
    steps in these statistics); invalid steps are normalised too but never used."""
    mask = mask.bool()
    return (advantages - masked_mean(advantages, mask)) / (
        masked_std(advantages, mask) + ADV_NORM_EPS
    )


def q_spread(q_all: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over valid steps of max_op Q(s, op) - min_op Q(s, op); ``q_all`` is (..., n_ops)."""
    spread = q_all.max(dim=-1).values - q_all.min(dim=-1).values
    return float(masked_mean(spread, mask.bool()))


def normalized_head_entropy(
    head_entropy: torch.Tensor, legal_counts: torch.Tensor
) -> torch.Tensor:
    """Each head's entropy divided by ln(number of legal values): 0..1 per head.

    0 where at most one value is legal (nothing to choose, so nothing to reward); this also
    covers padded steps, whose all-zero masks leave no legal value.
    """
    counts = legal_counts.to(head_entropy.dtype)
    log_counts = torch.log(counts.clamp(min=2.0))
    return torch.where(counts > 1, head_entropy / log_counts, torch.zeros_like(head_entropy))


def ratio_stats(
    ratios: torch.Tensor, relevant: torch.Tensor, clip_param: float
) -> dict[str, float]:
    """Clip fraction, mean and max of per-head probability ratios over relevant entries, and
    each head's clip fraction (``clip_fraction_<head>``, NaN where the head was never relevant).

    ``ratios`` and ``relevant`` are (..., n_heads); ``relevant`` already excludes invalid steps.
    """
    relevant = relevant.bool()
    clipped = (ratios < 1.0 - clip_param) | (ratios > 1.0 + clip_param)
    counts = relevant.flatten(0, -2).sum(0)
    per_head = ((clipped & relevant).flatten(0, -2).sum(0) / counts).tolist()
    heads = {f"clip_fraction_{h}": (c if n else float("nan"))
             for h, c, n in zip(HEADS, per_head, counts.tolist(), strict=True)}
    if not relevant.any():
        nan = float("nan")
        return {"clip_fraction": nan, "ratio_mean": nan, "ratio_max": nan, **heads}
    r = ratios[relevant]
    return {
        "clip_fraction": float(clipped[relevant].float().mean()),
        "ratio_mean": float(r.mean()),
        "ratio_max": float(r.max()),
        **heads,
    }


def approx_kl(logp_new: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> float:
    """The reference's approximate KL, mean of (r - 1) - log r over valid steps (k3 estimator:
    non-negative, exactly 0 while the policy is unchanged)."""
    log_ratio = logp_new - logp_old
    return float(masked_mean(torch.expm1(log_ratio) - log_ratio, mask.bool()))


def global_norm(grads: Iterable[torch.Tensor | None]) -> float:
    """L2 norm over all given gradient tensors together (missing gradients skipped)."""
    norms = [g.detach().norm(2) for g in grads if g is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def mean_row_norm(x: torch.Tensor) -> float:
    """Mean L2 norm of the rows of ``x`` (B, H), e.g. the LSTM state at the end of sequences."""
    return float(x.norm(dim=-1).mean()) if x.numel() else math.nan
