"""``EpisodesToSequences``: the learner's train batch built from episodes in one numpy pass.

RLlib 2.60's PPO learner pipeline turns episodes into the padded sequence batch with six pieces
(AddOneTsToEpisodesAndTruncate, AddObservationsFromEpisodesToBatch,
AddColumnsFromEpisodesToTrainBatch, AddTimeDimToBatchAndZeroPad, AddStatesFromEpisodesToBatch,
BatchIndividualItems) and NumpyToTensor, which move every step of every column through Python
one item at a time and time each piece: several milliseconds per update, as much as the whole
gradient step of the ``quick`` network. This piece writes the same batch (same columns, dtypes,
shapes and values; ``tests/ppo/test_learner_batch.py`` compares them) with one array copy per column
and episode, for single-agent episodes and a stateful module (``FactoredLSTM``):

- each episode gets RLlib's artificial bootstrap step: its final observation, a copy of its last
  action and model outputs, reward 0, LOSS_MASK False; its last real step is marked terminated
  or truncated (an unfinished chunk counts as truncated) so GAE bootstraps from the next one;
- the extended episode is cut into rows of ``max_seq_len`` steps, the last one zero-padded,
  with SEQ_LENS and, per row, STATE_IN: the initial state where the episode begins, else the
  STATE_OUT of the step before the row;
- everything becomes a tensor on the learner's device.

Unlike RLlib's pieces it leaves the episodes as they are (no appended step, same ids).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

# RLlib's PPO learner pipeline in 2.60, GAE excluded: what this piece stands in for.
REPLACED_PIECES = (
    "AddOneTsToEpisodesAndTruncate",
    "AddObservationsFromEpisodesToBatch",
    "AddColumnsFromEpisodesToTrainBatch",
    "AddTimeDimToBatchAndZeroPad",
    "AddStatesFromEpisodesToBatch",
    "BatchIndividualItems",
    "NumpyToTensor",
)
# Read by RLlib's Learner so the SampleBatch knows its rows are zero-padded sequences.
ZERO_PADDED_KEY = f"_zero_padded_for_mid={DEFAULT_MODULE_ID}"


class EpisodesToSequences(ConnectorV2):
    def __init__(self, *args: Any, device: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._device = device

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        module = rl_module[DEFAULT_MODULE_ID] if isinstance(rl_module, MultiRLModule) else rl_module
        episodes = [e if e.is_numpy else e.to_numpy() for e in episodes]
        if any(e.module_id not in (None, DEFAULT_MODULE_ID) for e in episodes):
            raise ValueError("EpisodesToSequences: single-agent episodes only")
        max_seq_len = module.model_config["max_seq_len"]
        rows = [-(-(len(e) + 1) // max_seq_len) for e in episodes]  # ceil: bootstrap included
        starts = np.cumsum([0, *rows])

        def sequences(per_episode: list[np.ndarray]) -> torch.Tensor:
            """(episode len + 1, ...) arrays -> (rows, max_seq_len, ...), zero-padded."""
            first = per_episode[0]
            out = np.zeros((starts[-1] * max_seq_len, *first.shape[1:]), first.dtype)
            for data, start in zip(per_episode, starts[:-1], strict=True):
                out[start * max_seq_len:start * max_seq_len + len(data)] = data
            return self._tensor(out.reshape(starts[-1], max_seq_len, *first.shape[1:]))

        def with_copy_of_last(data: np.ndarray) -> np.ndarray:
            return np.concatenate([data, data[-1:]])

        columns: dict[str, Any] = {}
        obs = [e.get_observations() for e in episodes]  # the final one included: L + 1
        columns[Columns.OBS] = {k: sequences([o[k] for o in obs]) for k in obs[0]}
        columns[Columns.ACTIONS] = sequences([with_copy_of_last(e.get_actions())
                                              for e in episodes])
        columns[Columns.REWARDS] = sequences([np.append(e.get_rewards(), 0.0).astype(np.float32)
                                              for e in episodes])
        flags = {Columns.TERMINATEDS: [], Columns.TRUNCATEDS: [], Columns.LOSS_MASK: []}
        for e in episodes:
            last = np.zeros(len(e) + 1, bool)
            last[len(e) - 1] = True
            flags[Columns.TERMINATEDS].append(last & bool(e.is_terminated))
            flags[Columns.TRUNCATEDS].append(last & (not e.is_terminated))
            flags[Columns.LOSS_MASK].append(np.arange(len(e) + 1) < len(e))
        columns.update({k: sequences(v) for k, v in flags.items()})
        for key in episodes[0].extra_model_outputs:
            if key != Columns.STATE_OUT:
                columns[key] = sequences([with_copy_of_last(e.get_extra_model_outputs(key))
                                          for e in episodes])
        columns[Columns.SEQ_LENS] = self._tensor(np.concatenate([
            np.minimum(len(e) + 1 - max_seq_len * np.arange(n), max_seq_len)
            for e, n in zip(episodes, rows, strict=True)]))
        columns[Columns.STATE_IN] = self._state_in(module, episodes, rows, max_seq_len)
        if shared_data is not None:
            shared_data[ZERO_PADDED_KEY] = True
        return {DEFAULT_MODULE_ID: columns}

    def _state_in(self, module: Any, episodes: list[Any], rows: list[int],
                  max_seq_len: int) -> dict[str, torch.Tensor]:
        initial = module.get_initial_state()
        states: dict[str, list[np.ndarray]] = {k: [] for k in initial}
        for episode, n in zip(episodes, rows, strict=True):
            outs = episode.get_extra_model_outputs(Columns.STATE_OUT)
            if episode.t_started == 0:
                before = initial
            else:  # a chunk continuing an earlier one: the state it ended with
                before = episode.get_extra_model_outputs(Columns.STATE_OUT, indices=-1,
                                                         neg_index_as_lookback=True)
            for k in states:
                # Row r starts at step r x max_seq_len: the state after the step before it.
                states[k].append(before[k][None])
                states[k].append(outs[k][max_seq_len - 1:(n - 1) * max_seq_len:max_seq_len])
        return {k: self._tensor(np.concatenate(v)) for k, v in states.items()}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self._device)
