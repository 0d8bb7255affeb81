"""PopArt value-target normalisation (van Hasselt et al. 2016, "Learning values across many
orders of magnitude"): the critic learns normalised targets while its unnormalised predictions
are preserved across statistics updates.

The module keeps running statistics of the value targets as buffers (so they live in the module
state: checkpoints and the weights sent to env runners carry them) and turns the value head's
raw output ``n`` into the unnormalised value ``std * n + mean``. Each statistics update rescales
the head's output layer so that ``std' * n' + mean' == std * n + mean`` for every input ("Preserve
Outputs Precisely"); the learner then regresses ``n`` on ``(G - mean) / std`` ("Adaptively
Rescaling Targets"). Adam's moment estimates of the rescaled layer are left as they are (the
paper derives the rescale for SGD; keeping Adam's state is the usual practice).

Statistics: a running average of the batches' target mean and mean square, which turns into an
exponential moving average over about the last ``1 / BETA`` batches once more have been seen (the
targets drift as the policy and any reward normalisation change).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BETA = 0.1
# Floor of the target std: a constant return (std 0) would otherwise make the normalised error
# of any prediction unbounded and swamp the policy loss under the shared gradient clip.
STD_MIN = 1e-2


class PopArt(nn.Module):
    """Target statistics and the output-preserving rescale of the value head's last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("mean_sq", torch.ones(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def std(self) -> Tensor:
        return (self.mean_sq - self.mean ** 2).clamp(min=0.0).sqrt().clamp(min=STD_MIN)

    def denormalize(self, normalized: Tensor) -> Tensor:
        return normalized * self.std + self.mean

    def normalize(self, values: Tensor) -> Tensor:
        return (values - self.mean) / self.std

    @torch.no_grad()
    def update(self, targets: Tensor, output_layer: nn.Linear) -> None:
        """Fold one batch of (real-step) targets into the statistics and rescale
        ``output_layer`` so the unnormalised predictions are unchanged."""
        targets = targets.detach().to(self.mean.dtype)
        if targets.numel() == 0:
            return
        old_mean, old_std = self.mean.clone(), self.std
        weight = max(BETA, 1.0 / (int(self.updates) + 1))
        self.mean.lerp_(targets.mean(), weight)
        self.mean_sq.lerp_((targets ** 2).mean(), weight)
        self.updates += 1
        new_std = self.std
        output_layer.weight.mul_(old_std / new_std)
        output_layer.bias.mul_(old_std).add_(old_mean - self.mean).div_(new_std)
