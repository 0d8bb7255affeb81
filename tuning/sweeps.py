"""The named ablation sweeps (experiments.md section 1): which knobs a sweep varies.

A sweep is a grid over knob names from the config builder's flat knob table (plus the seed,
added by the planner). Add a sweep by adding one entry to ``SWEEPS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Cell = Mapping[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A grid of knob values; ``derived`` knobs follow other knobs of the same cell (a derived
    function returning None leaves the knob at its profile value).

    ``labels`` are axes that are not knobs themselves: they name a combination of knobs (set
    through ``derived``) so that the grid, the trial names and TensorBoard show one column for it.
    """

    name: str
    about: str
    axes: Mapping[str, tuple[Any, ...]]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Cell], Any]] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()


def _deep_head_layernorm(cell: Cell) -> bool:
    # The seed document's fix put LayerNorm in the deep (depth 4) head only; the shallow head of
    # the broken run has none (policy-and-ppo.md section 1).
    return cell["value_head_depth"] >= 4


# The spec's three critics: the reference (Q(s, op) with the sampled op as GAE baseline), Q(s, op)
# with the policy-weighted baseline, and a state-value critic.
CRITIC_VARIANTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "q_op/sampled_op": {"critic": "q_op", "q_baseline": "sampled_op"},
    "q_op/expected": {"critic": "q_op", "q_baseline": "expected"},
    "v": {"critic": "v"},
})


def _critic_knob(name: str) -> Callable[[Cell], Any]:
    def knob(cell: Cell) -> Any:
        variant = cell["critic_variant"]
        if variant not in CRITIC_VARIANTS:
            raise ValueError(
                f"critic_variant: {variant!r} is not one of {', '.join(CRITIC_VARIANTS)}"
            )
        return CRITIC_VARIANTS[variant].get(name)

    return knob


SWEEPS: Mapping[str, Sweep] = MappingProxyType({
    "seed": Sweep(
        name="seed",
        about="the seed document's ablation: value-head gain x depth x value_coef (8 cells); "
        "LayerNorm in the depth-4 head",
        axes={
            "value_head_gain": (1.0, 0.01),
            "value_head_depth": (2, 4),
            "value_coef": (0.5, 1.0),
        },
        derived={"value_head_layernorm": _deep_head_layernorm},
    ),
    "extended": Sweep(
        name="extended",
        about="what the reference found later: gain x critic/baseline x gradient steps per batch "
        "(18 cells), deep LayerNorm head, value_coef 1.0",
        axes={
            "value_head_gain": (0.01, 0.1, 1.0),
            "critic_variant": tuple(CRITIC_VARIANTS),
            "num_epochs": (1, 4),
        },
        fixed={"value_head_depth": 4, "value_head_layernorm": True, "value_coef": 1.0},
        derived={"critic": _critic_knob("critic"), "q_baseline": _critic_knob("q_baseline")},
        labels=frozenset({"critic_variant"}),
    ),
})


def get_sweep(name: str) -> Sweep:
    """The named sweep, or a ValueError listing the known names."""
    try:
        return SWEEPS[name]
    except KeyError:
        raise ValueError(
            f"unknown sweep {name!r}; known sweeps: {', '.join(SWEEPS)}"
        ) from None
