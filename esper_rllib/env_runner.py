"""``SeedOnceEnvRunner``: RLlib's single-agent env runner with env seeding that keeps episodes
distinct.

RLlib 2.60's ``SingleAgentEnvRunner`` in ``batch_mode="complete_episodes"`` re-marks itself as
needing an "initial" reset after every ``sample()`` call, and that reset passes the same seed
again (``single_agent_env_runner.py:317-322, 799``). A batch is several ``sample()`` calls, so
every episode of every batch would start from the same env seed: the same host initialisation,
the same data order, the same probe signal. Also, a vector env seeds its sub-envs seed,
seed + 1, ..., and RLlib gives runner w the seed ``seed + w``, so runners' envs overlap.

Here each env gets its own seed, once, on its runner's first reset: ``seed x 10,000 + worker
index x envs per runner + env index``; later episodes continue each env's own random stream.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

# Room for this many envs per trial seed before two seeds' env streams could overlap.
SEED_STRIDE = 10_000


class SeedOnceEnvRunner(SingleAgentEnvRunner):
    def __init__(self, *, config: Any, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        if config.seed is not None:
            self._seed = (config.seed * SEED_STRIDE
                          + (self.worker_index or 0) * config.num_envs_per_env_runner)
        self._seeded = False

    def _reset_envs(self, episodes: Any, shared_data: Any, explore: bool) -> None:
        if self._seeded:
            self._needs_initial_reset = False  # no seed: continue each env's stream
        self._seeded = True
        super()._reset_envs(episodes, shared_data, explore)
