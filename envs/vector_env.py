"""K `esper/SeedMorphogenesis-v0` envs whose hosts train as one stacked model (issue 19).

``gymnasium.make_vec("envs:esper/SeedMorphogenesis-v0", num_envs=K,
vectorization_mode="vector_entry_point", **kwargs)`` builds it; RLlib does the same with
``gym_env_vectorize_mode="vector_entry_point"`` and ``num_envs_per_env_runner=K``.

Each sub-env is a whole ``SeedMorphogenesisEnv`` (``envs[k]``) with its own host initialisation,
seeds, lifecycle, governor, reward normaliser, observation and info: a step runs each sub-env's
first half (action, ramps, cooldowns), then one host epoch of every stepping sub-env at once
(``train_epochs``: one stacked network, one data order drawn from the vector env's own
generator), then each sub-env's second half (validation with counterfactuals, governor,
reward). A NaN or rollback in one sub-env rolls back that sub-env only.

Seeding as Gymnasium's vector envs: ``reset(seed=s)`` resets sub-env k with seed s + k; the
shared data order is drawn from a generator seeded from s. Autoreset is ``NEXT_STEP``: the step
after a sub-env's episode ends resets it (reward 0, not done, its reset observation and info).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from envs.datasets import augment_batch
from envs.env import SeedMorphogenesisEnv
from envs.training import train_epochs, validate_stacked


class SeedMorphogenesisVectorEnv(VectorEnv):
    """``num_envs`` sub-envs built from the same kwargs (``seed``: the vector env's seed)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self._pending_seed = kwargs.pop("seed", None)
        self.envs = [SeedMorphogenesisEnv(**kwargs) for _ in range(num_envs)]
        if self._pending_seed is not None:  # validated like the single env's seed
            SeedMorphogenesisEnv(**{**kwargs, "seed": self._pending_seed,
                                    "n_train": self.envs[0].cfg.n_train,
                                    "n_val": self.envs[0].cfg.n_val})
        self.num_envs = num_envs
        first = self.envs[0]
        self.cfg = first.cfg
        self._data = first._data  # one cached data set for every sub-env
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)
        self._gen: torch.Generator | None = None

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        if isinstance(seed, list):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed: a list needs num_envs={self.num_envs} entries, "
                                 f"got {len(seed)}")
            seeds, vector_seed = seed, seed[0]
        else:
            seeds = [None if seed is None else seed + k for k in range(self.num_envs)]
            vector_seed = seed
        if vector_seed is not None or self._np_random is None:  # kept: a restored stream
            self._np_random, self._np_random_seed = seeding.np_random(vector_seed)
        # The shared data order: a fresh stream per reset, from the vector env's own RNG.
        self._gen = torch.Generator(device=self.cfg.device).manual_seed(
            int(self.np_random.integers(0, 2**62)))
        self._autoreset[:] = False
        obs, infos = [], {}
        for k, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            o, info = env.reset(seed=s, options=options)
            obs.append(o)
            infos = self._add_info(infos, info, k)
        return self._batch(obs), infos

    def _batch(self, obs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        # Fresh arrays every call: RLlib keeps views of each row in its episodes, so a reused
        # buffer would rewrite the observations (and masks) it already recorded.
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, obs, out)

    def step(self, actions: Any
             ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._gen is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape} "
                             f"(num_envs, heads), got shape {actions.shape}")
        stepping = [k for k in range(self.num_envs) if not self._autoreset[k]]
        for k in stepping:  # every action checked before any sub-env changes
            self.envs[k]._check_action(actions[k])
        starts = {k: self.envs[k]._begin_step(actions[k]) for k in stepping}
        results, vals = {}, {}
        if stepping:
            subs = [self.envs[k] for k in stepping]
            augment = augment_batch if self._data.augment else None
            epoch = train_epochs([e.model for e in subs], [e._host_opt for e in subs],
                                 [e._learners() for e in subs], self._data.x_train,
                                 self._data.y_train, task=self.cfg.task, gen=self._gen,
                                 augment=augment, fused=self.cfg.fused)
            results = dict(zip(stepping, epoch, strict=True))
            if self.cfg.fused:  # every host's validation and counterfactuals at once
                vals = dict(zip(stepping, validate_stacked(
                    [e.model for e in subs], self._data.x_val, self._data.y_val,
                    [e._ablation_configs() for e in subs]), strict=True))
        obs, infos = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        for k, env in enumerate(self.envs):
            if k in results:
                o, rewards[k], terminated[k], truncated[k], info = env._end_step(
                    starts[k], results[k], vals.get(k))
            else:  # NEXT_STEP autoreset: this step only resets the finished sub-env
                o, info = env.reset()
            obs.append(o)
            infos = self._add_info(infos, info, k)
        self._autoreset = terminated | truncated
        return self._batch(obs), rewards, terminated, truncated, infos
