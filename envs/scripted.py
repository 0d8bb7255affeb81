"""Scripted policies for the learnability audit (``esper-rllib signal``): uniform random legal
play and the oracle that grows one known-good seed. WAIT-only and the heuristic live in
``envs.heuristic``; every policy has ``reset()`` and ``act(obs, info) -> action``."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.contract import (
    ALPHA_TARGETS,
    BLEND_STYLES,
    BLUEPRINT_NAMES,
    CNN_BLUEPRINTS,
    HEADS,
    TEMPOS,
    Op,
    Stage,
    head_sizes,
)
from envs.heuristic import make_action


def random_legal_action(mask: np.ndarray, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """One action, each head uniform over the values its part of the concatenated per-head 0/1
    ``mask`` allows.

    Every head of an env observation keeps a legal value (``Lifecycle.action_mask``, the
    probes' ``legal_mask``); a head with none is a broken mask (all-zero masks belong to
    padded LSTM steps, never to an observation): ValueError naming the head, rather than a
    value that may be illegal."""
    action, start = [], 0
    for head, size in zip(HEADS, head_sizes(n_slots), strict=True):
        legal = np.flatnonzero(mask[start:start + size] > 0)
        if not legal.size:
            raise ValueError(f"action_mask: head {head!r} has no legal value (mask["
                             f"{start}:{start + size}] is all zero); every head keeps one")
        action.append(int(rng.choice(legal)))
        start += size
    return np.asarray(action, dtype=np.int64)


class RandomPolicy:
    """Each head uniform over its legal values (the per-head masks of the observation).

    The slot head is not conditioned on the op, so an op drawn for a slot where it is illegal
    runs as WAIT, as a freshly initialised policy's would."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return random_legal_action(obs["action_mask"], len(obs["blueprints"]), self.rng)


class OraclePolicy:
    """Germinate ``blueprint`` in ``slot`` at the first step, advance it as fast as the masks
    allow (fastest tempo, alpha target 1), then fossilize it as soon as that is legal, or, with
    ``hold``, keep it in HOLDING and fossilize it only at the last step (``max_epochs``)."""

    def __init__(self, blueprint: int, slot: int, max_epochs: int, hold: bool = False) -> None:
        if blueprint not in CNN_BLUEPRINTS:
            raise ValueError(f"blueprint must be one of the CNN blueprints {CNN_BLUEPRINTS}, "
                             f"got {blueprint!r}")
        self.blueprint, self.slot, self.max_epochs, self.hold = blueprint, slot, max_epochs, hold

    @property
    def name(self) -> str:
        return f"{BLUEPRINT_NAMES[self.blueprint]}@r0c{self.slot}"

    def reset(self) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        stage = Stage(info["slot_stages"][self.slot])
        op_mask = obs["action_mask"][:len(Op)]
        last_step = info["epoch"] == self.max_epochs - 1
        if stage == Stage.DORMANT and op_mask[Op.GERMINATE]:
            return make_action(Op.GERMINATE, self.slot, blueprint=self.blueprint,
                               style=BLEND_STYLES.index("LINEAR_ADD"),
                               tempo=TEMPOS.index(min(TEMPOS)),
                               alpha_target=ALPHA_TARGETS.index(1.0))
        if stage in (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING) and op_mask[Op.ADVANCE]:
            return make_action(Op.ADVANCE, self.slot)
        if stage == Stage.HOLDING and op_mask[Op.FOSSILIZE] and (last_step or not self.hold):
            return make_action(Op.FOSSILIZE, self.slot)
        return make_action(Op.WAIT)


def parse_oracle(text: str) -> tuple[int, int]:
    """``BLUEPRINT@SLOT`` (``bottleneck@r0c1`` or ``bottleneck@1``) -> (blueprint, slot)."""
    name, sep, slot = text.partition("@")
    cnn = [BLUEPRINT_NAMES[b] for b in CNN_BLUEPRINTS]
    slot = slot.removeprefix("r0c")
    if not sep or name not in cnn or not slot.isdigit():
        raise ValueError(f"oracle {text!r}: expected BLUEPRINT@SLOT with BLUEPRINT one of "
                         f"{', '.join(cnn)} and SLOT r0c<i> or <i>, e.g. bottleneck@r0c1")
    return BLUEPRINT_NAMES.index(name), int(slot)
