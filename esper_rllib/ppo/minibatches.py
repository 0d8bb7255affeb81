"""Minibatches of whole episodes for the learner (``learner_config_dict["minibatches"]``).

The learner batch holds one zero-padded LSTM sequence per episode (``max_seq_len`` covers an
episode plus RLlib's bootstrap step). RLlib's ``minibatch_size`` counts env steps and converts
them to a number of sequences through the padded batch length, so it cannot promise whole,
equally sized groups of episodes; here each epoch is split into ``minibatches`` contiguous,
near-equal groups of sequences, in batch order (no shuffling: every epoch sees the same groups).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch


def episode_minibatches(batch: MultiAgentBatch, num_epochs: int,
                        minibatches: int) -> Iterator[MultiAgentBatch]:
    """``num_epochs x minibatches`` minibatches of ``batch``, whose module batches must slice
    by sequence (RLlib's ``Learner._set_slicing_by_batch_id(batch, value=True)``)."""
    bounds = {}
    for module_id, module_batch in batch.policy_batches.items():
        n_seqs = len(module_batch[Columns.SEQ_LENS])
        try:
            bounds[module_id] = minibatch_bounds(n_seqs, minibatches)
        except ValueError as err:
            raise ValueError(f"{err} (the batch of module {module_id!r})") from None
    for _ in range(num_epochs):
        for i in range(minibatches):
            yield MultiAgentBatch(
                {mid: b[bounds[mid][i]:bounds[mid][i + 1]]
                 for mid, b in batch.policy_batches.items()},
                batch.env_steps())


def minibatch_bounds(n_seqs: int, minibatches: int) -> np.ndarray:
    """(minibatches + 1,) boundaries that split ``n_seqs`` sequences into ``minibatches``
    contiguous, near-equal groups (also the offline critic fit's minibatches)."""
    if minibatches > n_seqs:
        raise ValueError(f"minibatches={minibatches}: only {n_seqs} episodes; allowed: "
                         f"1..{n_seqs}")
    return np.linspace(0, n_seqs, minibatches + 1).round().astype(int)
