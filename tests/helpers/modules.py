"""A small FactoredLSTM and a random learner-style batch for it (the module and critic-phase
tests share them)."""

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from envs.contract import Op, action_space, observation_space
from esper_rllib.model.module import FactoredLSTM

# Gain 1 on the value output so values are O(1) and comparisons between them mean something.
SMALL = {"lstm_hidden": 32, "feature_dim": 12, "embed_dim": 3, "head_hidden": 8,
         "blueprint_head_hidden": [8, 8], "max_seq_len": 8, "value_head_gain": 1.0}
N_SLOTS = 3


def small_module(**overrides):
    torch.manual_seed(0)
    return FactoredLSTM(observation_space=observation_space(N_SLOTS),
                        action_space=action_space(N_SLOTS), model_config={**SMALL, **overrides})


def random_batch(module, B=3, T=6, seed=0):
    """A (B, T) learner-style batch of random observations with legal masks and actions."""
    rng = np.random.default_rng(seed)
    space = observation_space(N_SLOTS)
    space.seed(seed)
    obs = [[space.sample() for _ in range(T)] for _ in range(B)]
    obs = {k: torch.as_tensor(np.array([[o[k] for o in row] for row in obs])) for k in space}
    # Every op legal except FOSSILIZE, so the argmax op and the taken op can differ.
    obs["action_mask"] = torch.ones_like(obs["action_mask"])
    obs["action_mask"][..., Op.FOSSILIZE] = 0.0
    actions = torch.as_tensor(np.array(
        [[action_space(N_SLOTS).sample() for _ in range(T)] for _ in range(B)]))
    actions[..., 0] = torch.as_tensor(rng.choice([0, 1, 2, 3, 5], size=(B, T)))
    state = {k: torch.as_tensor(np.stack([v] * B)) for k, v in module.get_initial_state().items()}
    return {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.STATE_IN: state}
