"""Robust standardisation of the observation's float features, and their piecewise-linear
encoding for the critic, each fitted once from data.

Why: the env's features are on fixed, hand-chosen scales (``envs.observation``), and on the
synthetic tasks the most telling of them barely move: on 2,000 episodes of random play the
validation-loss feature's 10-90% range is 0.428-0.433 of a 0.32-0.69 span (the host sits near
chance), while one-hot features jump by 1. A network's first Linear + LayerNorm cannot read a
0.005 signal beside unit steps; a tree model can (it only compares values). Centring each feature
on its median and dividing by its median absolute deviation (x 1.4826, the normal's sigma) puts
every feature's typical spread at 1 whatever its outliers; the clip at +-``CLIP`` keeps the rare
ones (a spike in the loss, a rare one-hot) from dominating.

Statistics: per feature, of the rows given to ``fit`` (real steps only). A feature whose MAD is 0
(most one-hot and stage features: their median is their usual value) is scaled by its standard
deviation instead, and a constant one by 1. They are fitted once, from the first data the module
is trained on, and then fixed, like a data-dependent initialisation: the learner fits them from
its first batch before the first gradient step, when the policy's and critic's outputs are ~0
whatever the input (their output gains are 0.01), so the batch's sampled log-probabilities and
values stay valid; critic-fit fits them from its training episodes. Fixed statistics never shift
the policy's inputs under PPO's clipped step. They are buffers: checkpoints and the weights sent
to env runners carry them.

Piecewise-linear encoding (``critic_feature_bins``; Gorishniy, Rubachev and Babenko, "On
Embeddings for Numerical Features in Tabular Deep Learning", 2022). Gradient-boosted trees read
about a quarter more of the return from the current observation than any smooth network tried
on the same inputs (docs/results/critic-opt-quick-aligned): they split on fine thresholds of a
few features. Encoding each feature as its position in each of N quantile bins, (x - lo) /
(hi - lo) clipped to [0, 1] (the first bin open below, the last above; a bin of zero width, a
tie, is a step at its edge), lets the first Linear layer weigh each bin of each feature on its
own. Edges: per feature, the quantiles of the (normalised) features of the rows given to
``fit``, fitted when ``FeatureNorm`` is and fixed after; before that, N equal bins over +-CLIP.
Each position is centred on its mean over those rows: uncentred, about half of the positions
are 1 on every row, a constant that dominates the first layer's outputs, and the LayerNorm after
it then scales the features' variation down to a few percent (the critic barely moved in its
first steps).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CLIP = 5.0
# The MAD of a normal distribution is 0.6745 sigma: this factor makes the scale a sigma.
MAD_TO_SIGMA = 1.4826


class FeatureNorm(nn.Module):
    """x -> clip((x - median) / scale, +-CLIP). Before it is fitted the centre is 0 and the scale
    1: the identity on the env's features (all well inside +-CLIP), with no check of ``fitted``
    in the forward pass (on a GPU that would be a device sync per step)."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.center) / self.scale).clamp(-CLIP, CLIP)

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Sets the statistics from ``features`` (N, F), the rows of real steps."""
        x = features.detach().reshape(-1, self.center.numel()).to(self.center.dtype)
        if len(x) == 0:
            return
        center = x.median(dim=0).values
        scale = (x - center).abs().median(dim=0).values * MAD_TO_SIGMA
        std = x.std(dim=0, unbiased=False) if len(x) > 1 else torch.zeros_like(center)
        scale = torch.where(scale > 0, scale, std)
        self.center.copy_(center)
        self.scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))
        self.fitted.fill_(True)


class PiecewiseLinearEncoding(nn.Module):
    """(..., F) -> (..., F x bins): each feature's position in each of its quantile bins, less
    its mean position."""

    def __init__(self, n_features: int, bins: int) -> None:
        super().__init__()
        edges = torch.linspace(-CLIP, CLIP, bins + 1).expand(n_features, bins + 1)
        self.register_buffer("edges", edges.clone())
        self.register_buffer("center", torch.zeros(n_features, bins))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        return (self._positions(x) - self.center).flatten(-2)

    def _positions(self, x: Tensor) -> Tensor:
        lo, hi = self.edges[:, :-1], self.edges[:, 1:]
        width = hi - lo
        x = x.unsqueeze(-1)
        inside = (x - lo) / width.clamp_min(1e-12)
        position = torch.where(width > 0, inside, (x >= hi).to(x.dtype))
        # Open ends: below the first edge and above the last, the position goes on linearly.
        position = torch.cat([position[..., :1].clamp(max=1.0),
                              position[..., 1:-1].clamp(0.0, 1.0),
                              position[..., -1:].clamp(min=0.0)], dim=-1)
        return position

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Sets each feature's edges to the quantiles of ``features`` (N, F), and the centres to
        the mean positions of those rows."""
        x = features.detach().reshape(-1, self.edges.shape[0]).to(self.edges.dtype)
        if len(x) == 0:
            return
        levels = torch.linspace(0.0, 1.0, self.edges.shape[1], dtype=x.dtype)
        self.edges.copy_(torch.quantile(x, levels, dim=0).T)
        self.center.copy_(self._positions(x).mean(dim=0))
        self.fitted.fill_(True)
