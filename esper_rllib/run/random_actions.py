"""Uniformly random legal actions: each head samples among the values its mask allows.

Used by ``esper-rllib check-env`` and the sampling benchmark's raw env loop.
"""

from __future__ import annotations

import numpy as np

from envs.contract import head_sizes


def random_legal_action(mask: np.ndarray, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """One action (per head a legal value, uniformly) for a concatenated per-head 0/1 mask."""
    action = []
    start = 0
    for size in head_sizes(n_slots):
        legal = np.flatnonzero(mask[start:start + size] > 0)
        # A head with nothing legal is irrelevant at this step: any value will do.
        action.append(rng.choice(legal) if legal.size else 0)
        start += size
    return np.asarray(action, dtype=np.int64)
