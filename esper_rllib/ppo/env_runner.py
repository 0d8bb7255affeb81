"""``SeedOnceEnvRunner``: RLlib's single-agent env runner with env seeding that keeps episodes
distinct, and the critic's bootstrap value taken at rollout.

Seeding. RLlib 2.60's ``SingleAgentEnvRunner`` in ``batch_mode="complete_episodes"`` re-marks
itself as needing an "initial" reset after every ``sample()`` call, and that reset passes the same
seed again (``single_agent_env_runner.py:317-322, 799``). A batch is several ``sample()`` calls, so
every episode of every batch would start from the same env seed: the same host initialisation,
the same data order, the same probe signal. Also, a vector env seeds its sub-envs seed,
seed + 1, ..., and RLlib gives runner w the seed ``seed + w``, so runners' envs overlap.
Here each env gets its own seed, once, on its runner's first reset: ``seed x 10,000 + worker
index x envs per runner + env index``; later episodes continue each env's own random stream.

The hooks overridden here and the runner's private attributes they touch are RLlib's private
names: ``esper_rllib.rllib_seam`` lists them and reaches the attributes.

Bootstrap values. Every step's forward pass already stores the critic's outputs with the episode
(``module.CRITIC_OUT``); GAE also needs the value of the state after an episode's last step when
the episode did not terminate (truncated at max_epochs, or a chunk cut mid-episode). RLlib has
that state's env-to-module batch ready (the final observation with the carried LSTM state) when
the episode ends: one forward pass on it gives the bootstrap value, stored in the episode's
``custom_data`` (``bootstrap_value`` reads it), so the learner runs no forward pass for GAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from envs.contract import N_OPS
from esper_rllib import rllib_seam
from esper_rllib.model.module import CRITIC_OUT

# Room for this many envs per trial seed before two seeds' env streams could overlap.
SEED_STRIDE = 10_000
# episode.custom_data key of the bootstrap value: the GAE baseline at the final observation.
BOOTSTRAP_VALUE = "esper_bootstrap_value"


def bootstrap_value(episode: Any) -> float:
    """The value GAE bootstraps from after ``episode``'s last step (0 when it terminated)."""
    if episode.is_terminated:
        return 0.0
    if BOOTSTRAP_VALUE not in episode.custom_data:
        raise ValueError(
            "episode has no bootstrap value: sample with esper_rllib.ppo.env_runner."
            "SeedOnceEnvRunner (config.env_runners(env_runner_cls=...)), which takes it at "
            "rollout")
    return episode.custom_data[BOOTSTRAP_VALUE]


class SeedOnceEnvRunner(SingleAgentEnvRunner):
    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        if config.seed is not None:
            rllib_seam.set_runner_seed(self, config.seed * SEED_STRIDE
                                       + (self.worker_index or 0) * config.num_envs_per_env_runner)
        self._seeded = False
        # (env-to-module batch, its bootstrap values): several envs may end on one step.
        self._bootstrap_cache: tuple[Any, np.ndarray] | None = None

    def _reset_envs(self, episodes: Any, shared_data: Any, explore: bool) -> None:
        if self._seeded:
            rllib_seam.keep_env_streams(self)  # no seed: continue each env's stream
        self._seeded = True
        super()._reset_envs(episodes, shared_data, explore)

    def continue_streams(self) -> None:
        """The envs' random streams were set from a checkpoint (``ppo/algorithm.py``): the
        first reset passes no seed either, so each env goes on from where the run left it."""
        self._seeded = True

    def _make_on_episode_callback(self, which: str, idx: int, episodes: list[Any]) -> None:
        # Before on_episode_end the runner has just built the env-to-module batch of every
        # env's latest observation: for this episode, its final one with the carried state.
        if which == "on_episode_end" and _needs_bootstrap(episodes[idx]):
            episodes[idx].custom_data[BOOTSTRAP_VALUE] = float(self._bootstrap_values()[idx])
        super()._make_on_episode_callback(which, idx, episodes)

    def _sample(self, **kwargs: Any) -> list[Any]:
        episodes = super()._sample(**kwargs)
        # Chunks cut mid-episode (timestep-based sampling) bootstrap from the observation the
        # next sample() continues from; the runner's cached batch holds exactly that.
        cut = [e for e in episodes if not e.is_done and _needs_bootstrap(e)]
        if cut:
            rows = {e.id_: i for i, e in enumerate(rllib_seam.ongoing_episodes(self))}
            values = self._bootstrap_values()
            for episode in cut:
                episode.custom_data[BOOTSTRAP_VALUE] = float(values[rows[episode.id_]])
        return episodes

    def _bootstrap_values(self) -> np.ndarray:
        """(num_envs,): the GAE baseline at each env's latest observation."""
        batch = rllib_seam.cached_to_module(self)
        if self._bootstrap_cache is None or self._bootstrap_cache[0] is not batch:
            out = self.module.forward_inference(batch)
            values = self.module.baseline_value(
                out[CRITIC_OUT], out[Columns.ACTION_DIST_INPUTS][..., :N_OPS])
            self._bootstrap_cache = (batch, values.reshape(-1).cpu().numpy())
        return self._bootstrap_cache[1]


def _needs_bootstrap(episode: Any) -> bool:
    # Without the critic's outputs (random actions) there is nothing to bootstrap.
    return not episode.is_terminated and CRITIC_OUT in episode.extra_model_outputs
