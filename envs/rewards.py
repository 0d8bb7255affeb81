"""Reward modes (shaped, sparse, accuracy_delta, aligned), their coefficients, and running-std
scaling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from envs.contract import Op, Stage

REWARD_MODES = ("shaped", "sparse", "accuracy_delta", "aligned")
# Normalisation each mode gets when the env is asked for "auto": the reference's running std for
# the reference's modes; none for `aligned`, whose scale is fixed by its coefficients.
DEFAULT_NORMALIZATION = {"shaped": "running_std", "sparse": "running_std",
                         "accuracy_delta": "running_std", "aligned": "none"}

# Potential of each stage for potential-based shaping (stages not listed: 0).
STAGE_POTENTIAL = {
    Stage.GERMINATED: 1.0, Stage.TRAINING: 2.0, Stage.BLENDING: 3.5, Stage.HOLDING: 5.5,
    Stage.FOSSILIZED: 6.0,
}


@dataclass(frozen=True)
class RewardConfig:
    """Reward mode and every coefficient; any coefficient can be overridden by name."""

    mode: str = "shaped"
    pbrs_weight: float = 0.3
    gamma: float = 0.995
    rent_weight: float = 0.5
    rent_cap: float = 8.0
    germinate_cost: float = 0.02
    fossilize_cost: float = 0.01
    prune_cost: float = 0.005
    set_alpha_cost: float = 0.005
    fossilize_bonus_min_pp: float = 1.0
    fossilize_bonus_base: float = 0.5
    fossilize_bonus_per_pp: float = 0.1
    prune_harmful_below_pp: float = -0.5
    prune_harmful_bonus: float = 0.3
    prune_useful_base: float = 0.3
    prune_useful_per_pp: float = 0.05
    prune_useful_cap: float = 0.9
    terminal_acc_weight: float = 0.05
    terminal_fossil_bonus: float = 3.0
    sparse_param_weight: float = 0.1
    sparse_param_scale: float = 500_000.0
    rollback_penalty: float = 10.0  # subtracted after normalisation
    # `aligned`: return per pp of final accuracy gained, and per doubling of the parameter count
    # (host + seeds) paid for it; 0.1 each makes 10 pp worth 1.0 and a seed as large as the
    # host (one doubling) cost 1 pp.
    accuracy_weight: float = 0.1
    param_cost_per_doubling: float = 0.1

    @staticmethod
    def coefficient_names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(RewardConfig) if f.name != "mode")


def parse_reward(spec: str | dict[str, Any]) -> RewardConfig:
    """`reward` kwarg: a mode name, or {"mode": ..., <coefficient>: value, ...}."""
    if isinstance(spec, str):
        spec = {"mode": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"reward must be one of {REWARD_MODES} or a dict, got {spec!r}")
    spec = dict(spec)
    mode = spec.pop("mode", "shaped")
    if mode not in REWARD_MODES:
        raise ValueError(f"reward mode must be one of {REWARD_MODES}, got {mode!r}")
    allowed = RewardConfig.coefficient_names()
    for key, value in spec.items():
        if key not in allowed:
            raise ValueError(f"unknown reward coefficient {key!r}; allowed: mode, {allowed}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"reward coefficient {key!r} must be a finite number, got {value!r}")
    return replace(RewardConfig(mode=mode), **{k: float(v) for k, v in spec.items()})


@dataclass
class SeedView:
    """What the reward needs to know about one seed after the step."""

    stage: Stage
    alpha: float
    params: int
    contribution: float | None  # measured this step (alpha > 0), else None
    progress: float  # val_acc now minus val_acc at germination (pp)


@dataclass
class Transition:
    """One env step as the reward sees it."""

    op: Op  # effective op
    target_contribution: float | None  # last measured contribution of the acted-on seed
    phi_before: float
    phi_after: float
    seeds: list[SeedView]
    host_params: int
    val_acc: float
    prev_val_acc: float
    last_epoch: bool
    n_good_fossils: int  # fossils that contributed >= fossilize_bonus_min_pp when fossilized
    seed_params: int = 0  # live + fossilized
    prev_seed_params: int = 0  # the same before this step's op


# Names of each mode's reward components; the env adds "rollback" (after normalisation).
COMPONENTS = {
    "shaped": ("attribution", "pbrs", "rent", "action_cost", "action_bonus", "terminal"),
    "sparse": ("sparse",),
    "accuracy_delta": ("accuracy_delta", "rent"),
    "aligned": ("accuracy", "param_cost"),
}


def zero_components(cfg: RewardConfig) -> dict[str, float]:
    """All of a mode's component names (rollback included) at 0, for the reset info."""
    return dict.fromkeys((*COMPONENTS[cfg.mode], "rollback"), 0.0)


def potential(stages: list[Stage]) -> float:
    return sum(STAGE_POTENTIAL.get(s, 0.0) for s in stages)


def attribution(c: float, p: float) -> float:
    """Credit for a seed contributing c pp with accuracy progress p pp since germination."""
    if c < 0:
        return c
    if p <= 0:
        return 0.0
    return math.sqrt(p * c) if c >= p else c


def size_cost(cfg: RewardConfig, seed_params: int, host_params: int) -> float:
    """`aligned`'s price of the seeds: doublings of the parameter count over the bare host."""
    return cfg.param_cost_per_doubling * math.log2(1.0 + seed_params / host_params)


def aligned(cfg: RewardConfig, t: Transition) -> dict[str, float]:
    """Both terms are differences of a function of the state, so the undiscounted return is
    accuracy_weight x (final - initial accuracy) - size_cost(final seeds): holding a seed pays
    exactly what fossilizing it pays, and a prune refunds its price."""
    return {
        "accuracy": cfg.accuracy_weight * (t.val_acc - t.prev_val_acc),
        "param_cost": size_cost(cfg, t.prev_seed_params, t.host_params)
        - size_cost(cfg, t.seed_params, t.host_params),
    }


def rent(cfg: RewardConfig, seeds: list[SeedView], host_params: int) -> float:
    load = sum(s.alpha * s.params for s in seeds) / host_params
    return min(cfg.rent_weight * math.log1p(load), cfg.rent_cap)


def _action_terms(cfg: RewardConfig, op: Op, c: float | None) -> dict[str, float]:
    cost = {Op.GERMINATE: cfg.germinate_cost, Op.FOSSILIZE: cfg.fossilize_cost,
            Op.PRUNE: cfg.prune_cost, Op.SET_ALPHA_TARGET: cfg.set_alpha_cost}.get(op, 0.0)
    bonus = 0.0
    if op == Op.FOSSILIZE and c is not None and c >= cfg.fossilize_bonus_min_pp:
        bonus = cfg.fossilize_bonus_base + cfg.fossilize_bonus_per_pp * c
    elif op == Op.PRUNE and c is not None:
        if c < cfg.prune_harmful_below_pp:
            bonus = cfg.prune_harmful_bonus
        elif c >= 0:
            bonus = -min(cfg.prune_useful_base + cfg.prune_useful_per_pp * c,
                         cfg.prune_useful_cap)
    return {"action_cost": -cost, "action_bonus": bonus}


def reward_components(cfg: RewardConfig, t: Transition) -> dict[str, float]:
    """Every term of the raw reward for this transition; the raw reward is their sum."""
    r = rent(cfg, t.seeds, t.host_params)
    if cfg.mode == "sparse":
        value = 0.0
        if t.last_epoch:
            value = t.val_acc / 100.0 - cfg.sparse_param_weight * t.seed_params \
                / cfg.sparse_param_scale
            value = max(-1.0, min(1.0, value))
        return {"sparse": value}
    if cfg.mode == "aligned":
        return aligned(cfg, t)
    if cfg.mode == "accuracy_delta":
        return {"accuracy_delta": t.val_acc - t.prev_val_acc, "rent": -r}
    live = [s for s in t.seeds if s.stage != Stage.FOSSILIZED and s.contribution is not None]
    terminal = 0.0
    if t.last_epoch:
        terminal = cfg.terminal_acc_weight * t.val_acc + cfg.terminal_fossil_bonus \
            * t.n_good_fossils
    return {
        "attribution": sum(attribution(s.contribution, s.progress) for s in live),
        "pbrs": cfg.pbrs_weight * (cfg.gamma * t.phi_after - t.phi_before),
        "rent": -r,
        **_action_terms(cfg, t.op, t.target_contribution),
        "terminal": terminal,
    }


class RunningStd:
    """Welford running variance of raw rewards; rewards are divided by its std (no centring)."""

    CLIP = 10.0

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def std(self) -> float:
        if self.count < 2:
            return 1.0
        var = self.m2 / self.count
        return math.sqrt(var) if var > 1e-12 else 1.0

    def state(self) -> tuple[int, float, float]:
        """(count, mean, m2): what a checkpoint keeps, and ``pooled`` merges."""
        return self.count, self.mean, self.m2

    def set_state(self, state: tuple[int, float, float]) -> None:
        self.count, self.mean, self.m2 = int(state[0]), float(state[1]), float(state[2])

    @staticmethod
    def pooled(states: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
        """The state of one RunningStd that had seen every state's rewards (Chan et al.'s
        parallel variance): envs of one run draw rewards from the same distribution."""
        count, mean, m2 = 0, 0.0, 0.0
        for n, m, s in states:
            if n == 0:
                continue
            delta, total = m - mean, count + n
            mean += delta * n / total
            m2 += s + delta * delta * count * n / total
            count = total
        return count, mean, m2

    def normalize(self, raw: float) -> float:
        self.count += 1
        delta = raw - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (raw - self.mean)
        return max(-self.CLIP, min(self.CLIP, raw / self.std()))
