"""The host CNN with a seed slot after each block, and prefix-shared counterfactual evaluation."""

from __future__ import annotations

import torch
from torch import nn

from envs.blending import SeedSlot


class SeededModel(nn.Module):
    """x -> block 0 -> slot r0c0 -> block 1 -> slot r0c1 -> block 2 -> slot r0c2 -> classifier."""

    def __init__(self, host: nn.Module) -> None:
        super().__init__()
        self.host = host
        self.slots = nn.ModuleList(SeedSlot(c) for c in host.slot_channels)

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    def host_parameters(self) -> list[nn.Parameter]:
        return list(self.host.parameters())

    def host_param_count(self) -> int:
        return sum(p.numel() for p in self.host.parameters())

    def _run(self, h: torch.Tensor, start: int, ablate: frozenset[int]) -> torch.Tensor:
        """Continue the forward pass from the input of block `start`."""
        for i in range(start, self.n_slots):
            h = self.slots[i](self.host.blocks[i](h), ablate=i in ablate)
        return self.host.classifier(h)

    def forward(self, x: torch.Tensor, ablate: frozenset[int] = frozenset()) -> torch.Tensor:
        """Logits; slots in `ablate` run with alpha forced to 0 (their output is the host's)."""
        return self._run(x, 0, frozenset(ablate))

    @torch.no_grad()
    def counterfactual_logits(
        self, x: torch.Tensor, configs: list[frozenset[int]]
    ) -> list[torch.Tensor]:
        """Logits for each ablation config, computing each shared prefix only once.

        The configurations differ only from their first ablated slot onward, so the main pass
        is run once and each config branches off at the block where it first differs.
        """
        block_out: list[torch.Tensor] = []  # features after block i, before slot i
        h = x
        for i in range(self.n_slots):
            h = self.host.blocks[i](h)
            block_out.append(h)
            h = self.slots[i](h)
        main = self.host.classifier(h)
        results = []
        for cfg in configs:
            if not cfg:
                results.append(main)
                continue
            first = min(cfg)
            h = block_out[first]  # identical to the main pass up to here; ablating gives h
            for i in range(first + 1, self.n_slots):
                h = self.slots[i](self.host.blocks[i](h), ablate=i in cfg)
            results.append(self.host.classifier(h))
        return results
