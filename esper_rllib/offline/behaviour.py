"""Behaviour policies for ``esper-rllib record``: each returns the action it takes and its
log-probability under the project's factored distribution (causal relevance included).

- ``initial``: a freshly built ``FactoredLSTM`` of the run's model knobs and seed;
- a checkpoint's RLModule;
- ``random``: each head uniform over its legal values (``envs.scripted.RandomPolicy``), whose
  log-probability is the factored distribution's over all-equal masked logits;
- ``heuristic``: the rule-based policy, deterministic (log-probability 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from esper_rllib.model.distribution import make_factored_distribution, mask_logits
from esper_rllib.run.config import ConfigError, module_spec


def build_module(knobs: Mapping[str, Any], seed: int, observation_space: Any,
                 action_space: Any) -> Any:
    """The RLModule that a run of ``knobs`` trains (``run.config.module_spec``), initialised
    from ``seed``."""
    spec = module_spec(knobs, observation_space, action_space)
    torch.manual_seed(seed)
    return spec.build()


def load_checkpoint_module(path: str) -> Any:
    """A checkpoint's RLModule; ConfigError for a path that is not a whole checkpoint."""
    from esper_rllib.run.checkpoint_policy import CheckpointPolicy

    try:
        return CheckpointPolicy.from_checkpoint(path)[0].module
    except ConfigError as err:
        raise ConfigError(f"--policy {err}".replace("--restore ", "")) from None


class ModuleBehaviour:
    """An RLModule stepped one observation at a time, its LSTM state carried, each action
    sampled from its exploration distribution (torch's generator, seeded per episode)."""

    def __init__(self, module: Any) -> None:
        self.module = module.eval()
        self.dist_cls = module.get_exploration_action_dist_cls()
        self.state: dict[str, torch.Tensor] = {}

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.state = {k: torch.as_tensor(v)[None] for k, v in
                      self.module.get_initial_state().items()}

    def act(self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]
            ) -> tuple[np.ndarray, float]:
        batch = {Columns.OBS: {k: torch.as_tensor(v)[None, None] for k, v in obs.items()},
                 Columns.STATE_IN: self.state}
        with torch.no_grad():
            out = self.module.forward_exploration(batch)
            dist = self.dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            action = dist.sample()
            logp = float(dist.logp(action)[0, 0])
        self.state = out[Columns.STATE_OUT]
        return action[0, 0].numpy().astype(np.int64), logp


class ScriptedBehaviour:
    """A scripted policy (``reset()``, ``act(obs, info)``); ``uniform``: its log-probability is
    that of uniform legal sampling, else 0 (deterministic)."""

    def __init__(self, policy: Any, nvec: tuple[int, ...], uniform: bool) -> None:
        self.policy, self.uniform = policy, uniform
        self.dist_cls = make_factored_distribution(nvec)

    def reset(self, seed: int) -> None:
        if hasattr(self.policy, "rng"):
            self.policy.rng = np.random.default_rng(seed)
        self.policy.reset()

    def act(self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]
            ) -> tuple[np.ndarray, float]:
        action = np.asarray(self.policy.act(obs, info), dtype=np.int64)
        if not self.uniform:
            return action, 0.0
        mask = torch.as_tensor(obs["action_mask"])
        dist = self.dist_cls.from_logits(mask_logits(torch.zeros_like(mask), mask))
        return action, float(dist.logp(torch.as_tensor(action)))


def make_behaviour(kind: str, module: Any | None, nvec: tuple[int, ...]) -> Any:
    """The behaviour policy ``kind`` names (``module``: the RLModule of initial/checkpoint)."""
    if kind == "random":
        from envs.scripted import RandomPolicy

        return ScriptedBehaviour(RandomPolicy(), nvec, uniform=True)
    if kind == "heuristic":
        from envs.heuristic import HeuristicPolicy

        return ScriptedBehaviour(HeuristicPolicy(), nvec, uniform=False)
    return ModuleBehaviour(module)
