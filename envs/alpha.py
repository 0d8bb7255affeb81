"""The alpha controller: the mixing weight of a seed and how it ramps between targets."""

from __future__ import annotations

import math
from enum import IntEnum

from envs.contract import ALPHA_CURVES


class AlphaMode(IntEnum):
    HOLD = 0
    UP = 1
    DOWN = 2


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _sigmoid_curve(k: float):  # noqa: ANN202 - returns a curve function
    lo, hi = _logistic(-k / 2), _logistic(k / 2)
    # Rescaled so the curve starts exactly at 0 and ends exactly at 1.
    return lambda t: (_logistic(k * (t - 0.5)) - lo) / (hi - lo)


CURVES = {
    "LINEAR": lambda t: t,
    "COSINE": lambda t: (1.0 - math.cos(math.pi * t)) / 2.0,
    "SIG6": _sigmoid_curve(6.0),
    "SIG12": _sigmoid_curve(12.0),
    "SIG24": _sigmoid_curve(24.0),
}
assert tuple(CURVES) == ALPHA_CURVES


class AlphaController:
    """Alpha of one seed: HOLD at a value, or ramp UP/DOWN from a start to a target over epochs."""

    def __init__(self) -> None:
        self.alpha = 0.0
        self.target = 0.0
        self.mode = AlphaMode.HOLD
        self.curve = "LINEAR"
        self.steps_total = 0
        self.steps_done = 0
        self._start = 0.0

    @property
    def moving(self) -> bool:
        return self.mode != AlphaMode.HOLD

    @property
    def steps_remaining(self) -> int:
        return self.steps_total - self.steps_done

    def retarget(self, target: float, steps: int, curve: str) -> None:
        """Start a ramp from the current alpha; only allowed while holding. steps=0 snaps."""
        if self.moving:
            raise RuntimeError("alpha retarget is only allowed in HOLD")
        if curve not in CURVES:
            raise ValueError(f"alpha curve must be one of {ALPHA_CURVES}, got {curve!r}")
        if steps < 0:
            raise ValueError(f"alpha ramp steps must be >= 0, got {steps}")
        self.target = float(target)
        self.curve = curve
        self._start = self.alpha
        self.steps_total = int(steps)
        self.steps_done = 0
        if steps == 0 or target == self.alpha:
            self.alpha = self.target
            self.steps_total = 0
            self.mode = AlphaMode.HOLD
        else:
            self.mode = AlphaMode.UP if target > self.alpha else AlphaMode.DOWN

    def tick(self) -> None:
        """Advance an ongoing ramp by one epoch (no-op while holding)."""
        if not self.moving:
            return
        self.steps_done += 1
        t = self.steps_done / self.steps_total
        new = self._start + (self.target - self._start) * CURVES[self.curve](t)
        if self.steps_done >= self.steps_total:
            new = self.target
            self.mode = AlphaMode.HOLD
        self.alpha = new
