"""Seed lifecycle: per-slot seed state, legal transitions, and the per-head action masks.

Pure bookkeeping (no torch): the env mirrors these states into the model's slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.alpha import AlphaController
from envs.contract import CNN_BLUEPRINTS, N_OPS, Op, Stage, head_sizes

EMBARGO_EPOCHS = 5
RESETTING_EPOCHS = 1
MIN_TRAINING_EPOCHS = 1  # before TRAINING -> BLENDING
MIN_PRUNE_AGE = 1
# The ramp curve used on entering BLENDING, per blend style.
BLEND_ENTRY_CURVE = {
    "LINEAR_ADD": "LINEAR", "LINEAR_MULTIPLY": "LINEAR", "SIGMOID_ADD": "SIG12",
    "GATED_GATE": "LINEAR",
}

LIVE_STAGES = frozenset({Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.HOLDING})
SEED_STAGES = LIVE_STAGES | {Stage.FOSSILIZED}  # a seed module exists in the slot
COOLDOWN_STAGES = frozenset({Stage.PRUNED, Stage.EMBARGOED, Stage.RESETTING})


@dataclass
class SlotState:
    """Everything the env knows about one slot and the seed in it."""

    stage: Stage = Stage.DORMANT
    blueprint: int | None = None
    style: str = "LINEAR_ADD"
    tempo: int = 0
    blend_target: float = 1.0  # alpha target chosen at germination, used on entering BLENDING
    alpha: AlphaController = field(default_factory=AlphaController)
    alpha_velocity: float = 0.0  # alpha change over the last step
    age: int = 0  # epochs since germination
    epochs_in_stage: int = 0
    pruning: bool = False  # alpha ramping down to a prune
    contribution: float | None = None  # last measured counterfactual contribution (pp)
    contribution_velocity: float = 0.0
    epochs_since_measured: int = 0
    interaction: float = 0.0
    acc_at_germination: float = 0.0
    fossil_contribution: float | None = None  # contribution when fossilized
    grad_norm: float = 0.0
    grad_health: float = 1.0
    prev_grad_health: float = 1.0
    vanishing: bool = False
    exploding: bool = False

    @property
    def has_seed(self) -> bool:
        return self.stage in SEED_STAGES

    def set_stage(self, stage: Stage) -> None:
        self.stage = stage
        self.epochs_in_stage = 0


class Lifecycle:
    """The slots' stages and every rule about which (op, slot) pairs are legal."""

    def __init__(self, n_slots: int, max_seeds: int) -> None:
        self.n_slots = n_slots
        self.max_seeds = max_seeds
        self.slots = [SlotState() for _ in range(n_slots)]

    # ---- counts and legality -------------------------------------------------------------
    def n_seeds(self) -> int:
        """Live plus fossilized seeds (cooldown stages do not count)."""
        return sum(s.has_seed for s in self.slots)

    def seed_limit_reached(self) -> bool:
        return self.max_seeds > 0 and self.n_seeds() >= self.max_seeds

    def legal(self, op: Op, slot: int, blueprint: int = CNN_BLUEPRINTS[0]) -> bool:
        s = self.slots[slot]
        if op == Op.WAIT:
            return True
        if op == Op.GERMINATE:
            return (s.stage == Stage.DORMANT and not self.seed_limit_reached()
                    and blueprint in CNN_BLUEPRINTS)
        if op == Op.ADVANCE:
            if s.stage == Stage.GERMINATED:
                return True
            if s.stage == Stage.TRAINING:
                return s.epochs_in_stage >= MIN_TRAINING_EPOCHS
            return (s.stage == Stage.BLENDING and not s.alpha.moving
                    and s.alpha.alpha == 1.0)
        if op == Op.FOSSILIZE:
            return s.stage == Stage.HOLDING and not s.alpha.moving and s.contribution is not None
        if op == Op.PRUNE:
            return s.stage in LIVE_STAGES and s.age >= MIN_PRUNE_AGE and not s.alpha.moving
        if op == Op.SET_ALPHA_TARGET:
            return s.stage in (Stage.BLENDING, Stage.HOLDING) and not s.alpha.moving
        raise ValueError(f"unknown op {op!r}")

    def op_mask(self) -> np.ndarray:
        """An op is legal if at least one slot allows it (GERMINATE checked with a CNN
        blueprint, which the blueprint head's mask guarantees is available)."""
        return np.array(
            [any(self.legal(Op(op), i) for i in range(self.n_slots)) for op in range(N_OPS)],
            dtype=np.float32,
        )

    def action_mask(self) -> np.ndarray:
        """Per-head masks concatenated in HEADS order; every head keeps a legal value."""
        sizes = head_sizes(self.n_slots)
        masks = [self.op_mask()] + [np.ones(n, dtype=np.float32) for n in sizes[1:]]
        blueprint = np.zeros(sizes[2], dtype=np.float32)
        blueprint[list(CNN_BLUEPRINTS)] = 1.0
        masks[2] = blueprint
        return np.concatenate(masks)

    # ---- transitions (callers check legal() first) ---------------------------------------
    def germinate(self, slot: int, blueprint: int, style: str, tempo: int, target: float,
                  val_acc: float) -> None:
        s = SlotState(blueprint=blueprint, style=style, tempo=tempo, blend_target=target,
                      acc_at_germination=val_acc)
        s.set_stage(Stage.GERMINATED)
        self.slots[slot] = s

    def advance(self, slot: int) -> None:
        s = self.slots[slot]
        if s.stage == Stage.GERMINATED:
            s.set_stage(Stage.TRAINING)
        elif s.stage == Stage.TRAINING:
            s.set_stage(Stage.BLENDING)
            s.alpha.retarget(s.blend_target, s.tempo, BLEND_ENTRY_CURVE[s.style])
        else:
            s.set_stage(Stage.HOLDING)

    def set_alpha_target(self, slot: int, target: float, speed: int, curve: str) -> None:
        s = self.slots[slot]
        s.alpha.retarget(target, speed, curve)
        if s.stage == Stage.HOLDING and target < 1.0:
            s.set_stage(Stage.BLENDING)

    def fossilize(self, slot: int) -> None:
        s = self.slots[slot]
        s.fossil_contribution = s.contribution
        s.set_stage(Stage.FOSSILIZED)

    def prune(self, slot: int, speed: int, curve: str) -> None:
        """Remove now (alpha 0, speed 0, or not yet blended), or ramp alpha down first."""
        s = self.slots[slot]
        if s.stage in (Stage.GERMINATED, Stage.TRAINING) or speed == 0 or s.alpha.alpha == 0.0:
            self.remove(slot)
        else:
            s.pruning = True
            s.alpha.retarget(0.0, speed, curve)

    def remove(self, slot: int) -> None:
        """The seed is gone: PRUNED and, in the same step, EMBARGOED."""
        self.slots[slot] = SlotState()
        self.slots[slot].set_stage(Stage.EMBARGOED)

    # ---- time ----------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance alpha ramps and cooldowns (after the action, before the epoch)."""
        for i, s in enumerate(self.slots):
            s.alpha.tick()
            if s.pruning and not s.alpha.moving:
                self.remove(i)
            elif s.stage == Stage.EMBARGOED and s.epochs_in_stage >= EMBARGO_EPOCHS:
                s.set_stage(Stage.RESETTING)
            elif s.stage == Stage.RESETTING and s.epochs_in_stage >= RESETTING_EPOCHS:
                self.slots[i] = SlotState()

    def end_epoch(self) -> None:
        for s in self.slots:
            s.epochs_in_stage += 1
            s.epochs_since_measured += 1
            if s.has_seed:
                s.age += 1
