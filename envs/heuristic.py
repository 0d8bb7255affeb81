"""Rule-based baselines (the reference rows a learned policy must beat) and an episode runner."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.contract import (
    ALPHA_TARGETS,
    BLEND_STYLES,
    BLUEPRINT_NAMES,
    HEADS,
    TEMPOS,
    Op,
    Stage,
)
from envs.lifecycle import LIVE_STAGES

ROUND_ROBIN = tuple(BLUEPRINT_NAMES.index(n) for n in
                    ("conv_light", "conv_heavy", "attention", "norm", "depthwise"))
STABLE_WINDOW = 3  # epochs
STABLE_LOSS_CHANGE = (-0.05, 0.03)  # relative val-loss change per epoch counted as stable
PLATEAU_GAIN_PP = 0.5
PRUNE_DROP_PP = 2.0
PRUNE_CHECK_AGE = 5
FOSSILIZE_MIN_PP = 0.5


def make_action(op: Op, slot: int = 0, **heads: int) -> np.ndarray:
    """An action array with the given op and slot; other heads default to index 0."""
    action = np.zeros(len(HEADS), dtype=np.int64)
    action[0], action[1] = int(op), slot
    for name, value in heads.items():
        action[HEADS.index(name)] = value
    return action


class WaitPolicy:
    """Never touches the host: the WAIT-only reference."""

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return make_action(Op.WAIT)


class HeuristicPolicy:
    """The rule-based baseline: wait for a stable host and a plateau, then grow one seed at a
    time through TRAINING and BLENDING; fossilize it if it helps, prune it if not."""

    def __init__(self, tempo: int = 5, style: str = "LINEAR_ADD") -> None:
        self.tempo_index = TEMPOS.index(tempo)
        self.style_index = BLEND_STYLES.index(style)
        self.reset()

    def reset(self) -> None:
        self._losses: list[float] = []
        self._accs: list[float] = []
        self._stable = False
        self._next_blueprint = 0
        self._recently_pruned: set[int] = set()
        self._seed_acc0 = 0.0  # accuracy when the live seed was germinated
        self._seed_age = 0

    # ---- host state ----------------------------------------------------------------------
    def _stabilised(self) -> bool:
        if len(self._losses) <= STABLE_WINDOW:
            return False
        recent = self._losses[-STABLE_WINDOW - 1:]
        lo, hi = STABLE_LOSS_CHANGE
        return all(lo <= (b - a) / max(a, 1e-8) <= hi for a, b in zip(recent, recent[1:],
                                                                        strict=False))

    def _plateau(self) -> bool:
        if len(self._accs) <= STABLE_WINDOW:
            return False
        recent = self._accs[-STABLE_WINDOW - 1:]
        return all(b - a < PLATEAU_GAIN_PP for a, b in zip(recent, recent[1:], strict=False))

    def _choose_blueprint(self) -> int:
        """Round-robin over ROUND_ROBIN, skipping recently pruned blueprints."""
        candidates = [b for b in ROUND_ROBIN if b not in self._recently_pruned]
        if not candidates:  # every blueprint was pruned recently: start over
            self._recently_pruned.clear()
            candidates = list(ROUND_ROBIN)
        order = ROUND_ROBIN[self._next_blueprint:] + ROUND_ROBIN[:self._next_blueprint]
        choice = next(b for b in order if b in candidates)
        self._next_blueprint = (ROUND_ROBIN.index(choice) + 1) % len(ROUND_ROBIN)
        return choice

    # ---- decisions -----------------------------------------------------------------------
    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        self._losses.append(info["val_loss"])
        self._accs.append(info["val_acc"])
        self._stable = self._stable or self._stabilised()
        stages = [Stage(s) for s in info["slot_stages"]]
        live = [i for i, s in enumerate(stages) if s in LIVE_STAGES]
        op_mask = obs["action_mask"][:len(Op)]
        if live:
            self._seed_age += 1
            return self._tend(live[0], stages[live[0]], info, op_mask)
        if self._stable and self._plateau() and op_mask[Op.GERMINATE]:
            slot = stages.index(Stage.DORMANT)
            self._seed_acc0, self._seed_age = info["val_acc"], 0
            return make_action(Op.GERMINATE, slot, blueprint=self._choose_blueprint(),
                               style=self.style_index, tempo=self.tempo_index,
                               alpha_target=ALPHA_TARGETS.index(1.0))
        return make_action(Op.WAIT)

    def _tend(self, slot: int, stage: Stage, info: dict[str, Any],
              op_mask: np.ndarray) -> np.ndarray:
        blueprint = info["blueprints"][slot]
        if stage == Stage.HOLDING:
            contribution = info["contributions"][slot]
            if contribution > FOSSILIZE_MIN_PP:
                return make_action(Op.FOSSILIZE, slot)
            return self._prune(slot, blueprint)
        if (self._seed_age >= PRUNE_CHECK_AGE and op_mask[Op.PRUNE]
                and info["val_acc"] < self._seed_acc0 - PRUNE_DROP_PP):
            return self._prune(slot, blueprint)
        # With one live seed, the op mask says whether this seed can advance yet.
        return make_action(Op.ADVANCE if op_mask[Op.ADVANCE] else Op.WAIT, slot)

    def _prune(self, slot: int, blueprint: int) -> np.ndarray:
        self._recently_pruned.add(blueprint)
        return make_action(Op.PRUNE, slot)  # alpha_speed index 0: immediate


def run_episode(env: gym.Env, policy: Any, seed: int | None = None) -> dict[str, Any]:
    """Play one episode; returns final val_acc, fossils, seed params, return and epochs."""
    policy.reset()
    obs, info = env.reset(seed=seed)
    total, rollbacks, truncated, terminated = 0.0, 0, False, False
    while not (truncated or terminated):
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += reward
        rollbacks += info["rollback"]
    return {"val_acc": info["val_acc"], "n_fossils": info["n_fossils"],
            "seed_params": info["seed_params"], "return": total, "epochs": info["epoch"],
            "rollbacks": rollbacks}
