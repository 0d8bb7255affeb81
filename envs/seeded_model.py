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

        Configs that agree on which of slots 0..i-1 are ablated have the same input to block i,
        so each block runs once per distinct prefix (a trie over the configs): the main pass
        runs once, {0} and the all-ablated config share block 1, {2} is the main pass's block 2.
        """
        wanted = [tuple(i in cfg for i in range(self.n_slots)) for cfg in configs]
        features: dict[tuple[bool, ...], torch.Tensor] = {(): x}
        for i in range(self.n_slots):
            after: dict[tuple[bool, ...], torch.Tensor] = {}
            for prefix, h in features.items():
                h = self.host.blocks[i](h)
                for ablated in sorted({w[i] for w in wanted if w[:i] == prefix}):
                    after[(*prefix, ablated)] = self.slots[i](h, ablate=ablated)
            features = after
        logits = {path: self.host.classifier(h) for path, h in features.items()}
        return [logits[w] for w in wanted]
