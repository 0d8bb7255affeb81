"""A trained policy from an RLlib checkpoint, playable like the scripted ones (``reset``,
``act(obs, info)``), for ``esper-rllib evaluate`` and the audit's statistics."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from esper_rllib.run.config import ConfigError
from esper_rllib.run.trainer import check_checkpoint

MODULE_PATH = Path("learner_group", "learner", "rl_module", "default_policy")
CTOR_FILE = "class_and_ctor_args.pkl"


def load_run_config(checkpoint: Path) -> dict[str, Any]:
    """The algorithm config (as a dict) the checkpoint's run was built with: env_config,
    gamma, model_config. Tune-run algorithms, sweep trials included, are built from the dict."""
    with open(checkpoint / CTOR_FILE, "rb") as f:
        ctor = pickle.load(f)
    config = ctor["ctor_args_and_kwargs"][0][0]
    return config if isinstance(config, dict) else config.to_dict()


class CheckpointPolicy:
    """The checkpoint's RLModule, stepped one observation at a time with its LSTM state
    carried; heads sampled with ``rng`` (numpy, so a branch can be reseeded) or, with
    ``greedy``, the most likely legal value of each head."""

    def __init__(self, module: Any, greedy: bool = False, seed: int | None = None) -> None:
        self.module, self.greedy = module.eval(), greedy
        self.rng = np.random.default_rng(seed)
        self.nvec = tuple(int(n) for n in module.action_space.nvec)
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, greedy: bool = False, seed: int | None = None,
                        what: str = "checkpoint") -> tuple[CheckpointPolicy, dict[str, Any]]:
        """(policy, the run's config dict); ConfigError for a path that is not a whole
        checkpoint, naming it as ``what`` (the argument or option the user gave it as)."""
        from ray.rllib.core.rl_module.rl_module import RLModule

        from tuning.output import quiet_ray

        quiet_ray()  # RLlib's own module building prints a deprecation notice; nothing of ours
        checkpoint = check_checkpoint(path, what)
        if not (checkpoint / MODULE_PATH).is_dir():
            raise ConfigError(f"{path}: no RLModule in the checkpoint ({MODULE_PATH} missing)")
        module = RLModule.from_checkpoint(str(checkpoint / MODULE_PATH))
        return cls(module, greedy, seed), load_run_config(checkpoint)

    def reset(self) -> None:
        self.state = {k: torch.as_tensor(v)[None] for k, v in
                      self.module.get_initial_state().items()}

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        batch = {Columns.OBS: {k: torch.as_tensor(v)[None, None] for k, v in obs.items()},
                 Columns.STATE_IN: self.state}
        with torch.no_grad():
            out = self.module.forward_inference(batch)
        self.state = out[Columns.STATE_OUT]
        logits = out[Columns.ACTION_DIST_INPUTS][0, 0].double().numpy()
        action = []
        for head in np.split(logits, np.cumsum(self.nvec)[:-1]):
            if self.greedy:
                action.append(int(head.argmax()))
                continue
            p = np.exp(head - head.max())  # masked values sit at ~-3e38: probability 0
            action.append(int(self.rng.choice(len(p), p=p / p.sum())))
        return np.asarray(action, dtype=np.int64)
