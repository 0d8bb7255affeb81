"""Blend styles and the seed slot: how a seed's output is mixed into the host's features."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from envs.contract import BLEND_STYLES


class Gate(nn.Module):
    """GATED_GATE's gate on pooled features: sigmoid(Linear(h', 1) o relu o Linear(C, h'))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 4)
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.net(h.mean(dim=(2, 3))))
        return g[:, :, None, None]


def blend(style: str, h: torch.Tensor, s: torch.Tensor, alpha: float,
          gate: Gate | None = None) -> torch.Tensor:
    """Mix seed output s into host features h with weight alpha (alpha = 0 gives h exactly)."""
    if style in ("LINEAR_ADD", "SIGMOID_ADD"):  # the two differ only in their alpha ramp
        return h + alpha * (s - h)
    if style == "LINEAR_MULTIPLY":
        return h * (1.0 + alpha * torch.tanh(s - h))
    if style == "GATED_GATE":
        if gate is None:
            raise ValueError("GATED_GATE needs a gate module")
        return h + alpha * gate(h.detach()) * (s - h)
    raise ValueError(f"blend style must be one of {BLEND_STYLES}, got {style!r}")


class SeedSlot(nn.Module):
    """One slot between host blocks; holds at most one seed (and its gate).

    The seed always sees a detached copy of the host features (gradient isolation): the host
    upstream of the slot never receives gradient through the seed. In straight-through mode
    (TRAINING) the output equals the host's features exactly while the seed receives the
    gradient it would get as a residual branch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.seed: nn.Module | None = None
        self.gate: Gate | None = None
        self.style = BLEND_STYLES[0]
        self.alpha = 0.0
        self.in_forward = False  # GERMINATED seeds and empty slots are skipped
        self.straight_through = False
        self.frozen = False  # a seed ramping down to a prune no longer learns

    def install(self, seed: nn.Module, style: str) -> None:
        if style not in BLEND_STYLES:
            raise ValueError(f"blend style must be one of {BLEND_STYLES}, got {style!r}")
        self.seed = seed
        self.style = style
        self.gate = Gate(self.channels) if style == "GATED_GATE" else None
        self.alpha = 0.0
        self.in_forward = False
        self.straight_through = False
        self.frozen = False

    def remove(self) -> None:
        self.seed = None
        self.gate = None
        self.alpha = 0.0
        self.in_forward = False
        self.straight_through = False
        self.frozen = False

    def seed_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the seed's own optimiser (seed and gate)."""
        mods = [m for m in (self.seed, self.gate) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def param_count(self) -> int:
        return sum(p.numel() for p in self.seed_parameters())

    def forward(self, h: torch.Tensor, ablate: bool = False) -> torch.Tensor:
        if ablate or self.seed is None or not self.in_forward:
            return h
        grad_ctx = torch.no_grad() if self.frozen else contextlib.nullcontext()
        with grad_ctx:
            s = self.seed(h.detach())
        if self.straight_through:
            # s - s.detach() is exactly zero in value but carries d(loss)/d(output) to the seed.
            return h + (s - s.detach())
        return blend(self.style, h, s, self.alpha, self.gate)
