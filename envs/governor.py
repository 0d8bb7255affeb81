"""The governor: periodic snapshots of host and fossils, and the rollback decision."""

from __future__ import annotations

import math

import torch

from envs.seeded_model import SeededModel

SNAPSHOT_EVERY = 5  # epochs
DIVERGE_MEAN_FACTOR = 3.0
DIVERGE_STDS = 6.0
DIVERGE_EPOCHS = 3  # consecutive diverging epochs before a rollback


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Governor:
    """Rolls the model back when a loss is NaN/Inf or keeps diverging.

    Divergence: the validation loss is above 3x its running mean and above mean + 6 std
    (both over healthy epochs) for 3 epochs running.
    """

    def __init__(self) -> None:
        self.host_state: dict[str, torch.Tensor] | None = None
        self.fossil_states: dict[int, dict[str, torch.Tensor]] = {}
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._strikes = 0

    def snapshot(self, model: SeededModel, fossil_slots: list[int]) -> None:
        self.host_state = _copy_state(model.host)
        self.fossil_states = {i: _copy_state(model.slots[i]) for i in fossil_slots}

    def maybe_snapshot(self, epoch: int, model: SeededModel, fossil_slots: list[int]) -> None:
        if epoch % SNAPSHOT_EVERY == 0:
            self.snapshot(model, fossil_slots)

    def should_roll_back(self, *losses: float) -> bool:
        """Record a finished epoch's losses (train, val); True if it must be rolled back."""
        if not all(math.isfinite(v) for v in losses):
            return True
        val_loss = losses[-1]
        std = math.sqrt(self._m2 / self._count) if self._count else 0.0
        diverging = self._count > 0 and val_loss > DIVERGE_MEAN_FACTOR * self._mean \
            and val_loss > self._mean + DIVERGE_STDS * std
        self._strikes = self._strikes + 1 if diverging else 0
        if self._strikes >= DIVERGE_EPOCHS:
            return True
        if not diverging:  # diverging epochs would drag the baseline up
            self._count += 1
            delta = val_loss - self._mean
            self._mean += delta / self._count
            self._m2 += delta * (val_loss - self._mean)
        return False

    def restore(self, model: SeededModel) -> list[int]:
        """Load the snapshot into host and the fossils it holds; returns those fossils' slots."""
        if self.host_state is None:
            raise RuntimeError("governor has no snapshot to restore")
        model.host.load_state_dict(self.host_state)
        for i, state in self.fossil_states.items():
            model.slots[i].load_state_dict(state)
        self._strikes = 0
        return list(self.fossil_states)
