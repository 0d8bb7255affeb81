"""Probe environments: tiny, instant envs that test the RL machinery.

They share the real env's observation and action spaces and legal masks, so the same module,
distribution and learner run on them unchanged. Each isolates one part; if probe N fails while the
ones before it pass, the bug is in what N adds:

1. constant reward +1, one step (value loss, optimiser);
2. reward = an observation feature, random per episode (state path into the critic);
3. reward only at the second of two steps (discounting, GAE);
4. reward +1 only for the GERMINATE op among several legal ones (advantages, policy loss, masks);
5. the rewarding op flips with an observation feature (the policy conditions on the state).

Every episode ends with ``terminated=True``, so nothing is bootstrapped.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.contract import (
    CNN_BLUEPRINTS,
    EMPTY_BLUEPRINT,
    HEADS,
    Op,
    action_space,
    head_sizes,
    observation_space,
)

# The feature that carries the probes' signal: the val_acc/100 slot of the real observation.
SIGNAL_FEATURE = 2
# The progress feature (epoch / max_epochs in the real observation): tells probe 3's steps apart.
PROGRESS_FEATURE = 0
# Several ops legal (so the op choice is a real choice), two illegal (so masks are exercised).
LEGAL_OPS = (Op.WAIT, Op.GERMINATE, Op.SET_ALPHA_TARGET, Op.ADVANCE)
# Probe 4's rewarding op; probe 5 rewards it when the signal is 1 and ALT_OP when it is 0.
REWARDED_OP = Op.GERMINATE
ALT_OP = Op.ADVANCE


def legal_mask(n_slots: int) -> np.ndarray:
    """The probes' fixed action mask: LEGAL_OPS, every slot, the CNN blueprints, all else."""
    per_head = [np.ones(n, np.float32) for n in head_sizes(n_slots)]
    per_head[HEADS.index("op")][:] = 0.0
    per_head[HEADS.index("op")][list(LEGAL_OPS)] = 1.0
    per_head[HEADS.index("blueprint")][:] = 0.0
    per_head[HEADS.index("blueprint")][list(CNN_BLUEPRINTS)] = 1.0
    return np.concatenate(per_head)


class _ProbeEnv(gym.Env):
    """Common shape of the probes: an episode of ``n_steps`` steps whose reward a subclass sets."""

    metadata = {"render_modes": []}
    n_steps = 1

    def __init__(self, n_slots: int = 3) -> None:
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 1:
            raise ValueError(f"n_slots: must be a positive int, got {n_slots!r}")
        self.n_slots = n_slots
        self.observation_space = observation_space(n_slots)
        self.action_space = action_space(n_slots)
        self._mask = legal_mask(n_slots)
        self._t = 0
        self._signal = 0.0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self._t = 0
        self._signal = self._draw_signal()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        action = np.asarray(action)
        if action.shape != self.action_space.shape or not self.action_space.contains(
            action.astype(np.int64)
        ):
            raise ValueError(f"action: must be in {self.action_space}, got {action!r}")
        op = Op(int(action[0]))
        # As in the real env, an op the mask forbids runs as WAIT.
        effective_op = op if self._mask[op] > 0 else Op.WAIT
        reward = float(self._reward(effective_op))
        self._t += 1
        terminated = self._t >= self.n_steps
        info = {"action_valid": effective_op == op, "effective_op": int(effective_op)}
        return self._obs(), reward, terminated, False, info

    def _obs(self) -> dict[str, np.ndarray]:
        features = np.zeros(self.observation_space["features"].shape, np.float32)
        features[PROGRESS_FEATURE] = self._t / self.n_steps
        features[SIGNAL_FEATURE] = self._signal
        return {
            "features": features,
            "blueprints": np.full(self.n_slots, EMPTY_BLUEPRINT, np.int64),
            "action_mask": self._mask.copy(),
        }

    def _draw_signal(self) -> float:
        return 0.0

    def _reward(self, op: Op) -> float:
        raise NotImplementedError


class Probe1Env(_ProbeEnv):
    """Constant reward +1, one step: V -> 1."""

    def _reward(self, op: Op) -> float:
        return 1.0


class Probe2Env(_ProbeEnv):
    """Reward = the signal feature, uniform in [0, 1) per episode: V(s) -> signal."""

    def _draw_signal(self) -> float:
        return float(np.float32(self.np_random.uniform(0.0, 1.0)))

    def _reward(self, op: Op) -> float:
        return self._signal


class Probe3Env(_ProbeEnv):
    """Two steps, reward +1 only at the second: V(first step) -> gamma."""

    n_steps = 2

    def _reward(self, op: Op) -> float:
        return 1.0 if self._t == self.n_steps - 1 else 0.0


class Probe4Env(_ProbeEnv):
    """One step, reward +1 for REWARDED_OP, 0 for the other legal ops."""

    def _reward(self, op: Op) -> float:
        return float(op == REWARDED_OP)


class Probe5Env(_ProbeEnv):
    """One step; signal 0 or 1 per episode; +1 for REWARDED_OP if it is 1, ALT_OP if it is 0."""

    def _draw_signal(self) -> float:
        return float(self.np_random.integers(0, 2))

    def _reward(self, op: Op) -> float:
        return float(op == (REWARDED_OP if self._signal == 1.0 else ALT_OP))
