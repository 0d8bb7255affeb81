"""The named ablation sweeps: which knobs a sweep varies.

A sweep is a grid over knob names from the config builder's flat knob table (plus the seed,
added by the planner). Add a sweep by adding one entry to ``SWEEPS``.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from esper_rllib.failure_runs import FIX

Cell = Mapping[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A grid of knob values; ``derived`` knobs follow other knobs of the same cell (a derived
    function returning None leaves the knob at the cell's preset value, else its profile value).

    ``labels`` are axes that are not knobs themselves: they name a combination of knobs (set
    through ``derived``) so that the grid, the trial names and TensorBoard show one column for it.
    """

    name: str
    about: str
    axes: Mapping[str, tuple[Any, ...]]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Cell], Any]] = field(default_factory=dict)
    labels: frozenset[str] = frozenset()
    # Held-out env seeds on which the report evaluates every trial's last checkpoint next to
    # WAIT, random, the heuristic and the oracle (0: only with --evaluate-episodes, and only
    # the baseline, fixed and best cells).
    evaluate_episodes: int = 0
    # The profile the sweep's budget and results were sized for: `ablate --help` names it, and
    # a run on another profile says so in one line.
    profile: str = "quick"


# An axis of this name (a label) sets each cell's knobs from the config builder's preset of that
# name: the planner asks the knob resolver for them (tuning never imports the presets).
PRESET = "preset"


def _deep_head_layernorm(cell: Cell) -> bool:
    # The seed document's fix put LayerNorm in the deep (depth 4) head only; the shallow head of
    # the broken run has none.
    return cell["value_head_depth"] >= 4


# The seed document's value-head fix, the base of the later sweeps.
SEED_DOCUMENT_FIX: Mapping[str, Any] = FIX


# The three critics compared: the reference (Q(s, op) with the sampled op as GAE baseline), Q(s, op)
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


# The learning recipe of sweep policy's cell that learns at batch64 (critic_fix, lr 1e-3, reward
# shaped: docs/results/policy-critic-fix-ple-budget-aligned), less the critic.
LEARNING_RECIPE: Mapping[str, Any] = MappingProxyType({"lr": 1e-3, "reward": "shaped"})

# critic_fix's parts, each taken out alone (sweep document_fix): the part -> the knobs that take
# it out; "nothing" is critic_fix itself. The other knobs keep the preset's values.
FIX_PARTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "nothing": {},
    "bins": {"critic_feature_bins": 0},
    "layernorm": {"critic_layernorm": True},
    "dropout": {"critic_dropout": 0.0},
    "mlp_trunk": {"critic_trunk": "separate"},  # a critic LSTM of its own instead
    "value_phase": {"critic_steps": 0, "critic_replay": 0, "critic_stop_fraction": 0.0},
})
WITHOUT = "without"


def _part_knob(name: str) -> Callable[[Cell], Any]:
    def knob(cell: Cell) -> Any:
        part = cell[WITHOUT]
        if part not in FIX_PARTS:
            raise ValueError(f"{WITHOUT}: {part!r} is not one of {', '.join(FIX_PARTS)}")
        return FIX_PARTS[part].get(name)

    return knob


SWEEPS: Mapping[str, Sweep] = MappingProxyType({
    "value_head": Sweep(
        name="value_head",
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
        about="does the critic fail for want of optimisation or of a well-scaled target? "
        "critic/baseline x gradient steps per batch (num_epochs 1 | 8, whole-batch steps) x "
        "value-target normalisation (none | popart) (12 cells) on the seed document's fixed "
        "head (depth 4, LayerNorm, gain 0.01, value_coef 1.0). Theories: one Adam step at lr "
        "1e-4 per batch leaves the critic predicting the mean (too little optimisation); the "
        "return scale moves under running_std normalisation (an unscaled target); the sampled "
        "op's Q as baseline zeroes the taken op's advantage (critic choice)",
        axes={
            "critic_variant": tuple(CRITIC_VARIANTS),
            "num_epochs": (1, 8),
            "value_target_norm": ("none", "popart"),
        },
        fixed={**SEED_DOCUMENT_FIX},
        derived={"critic": _critic_knob("critic"), "q_baseline": _critic_knob("q_baseline")},
        labels=frozenset({"critic_variant"}),
    ),
    "remedies": Sweep(
        name="remedies",
        about="the seed document's proposed remedies on its own fix (depth 4, LayerNorm, gain "
        "0.01, value_coef 1.0): max_grad_norm 1 | 2 | 5 x critic_lr_scale 1 | 10 (6 cells). "
        "Theories: clipping at 1.0 throttles the value head's corrective updates (theory D, "
        "raise max_grad_norm); the critic learns too slowly next to the actor (a separate, "
        "higher critic learning rate; the gradient clip stays one global norm)",
        axes={
            "max_grad_norm": (1.0, 2.0, 5.0),
            "critic_lr_scale": (1.0, 10.0),
        },
        fixed={**SEED_DOCUMENT_FIX},
    ),
    "budget": Sweep(
        name="budget",
        about="does the critic learn when it is given the optimisation and the data? critic "
        "trunk (shared | separate: a critic LSTM and encoder of its own) x value-only gradient "
        "steps per batch after the PPO steps (critic_steps 0 | 32 | 128, Phasic Policy "
        "Gradient's value phase) (6 cells), the value phase over the current batch and the "
        "last 3 (critic_replay 3), on the seed document's fix (depth 4, LayerNorm, gain 0.01, "
        "value_coef 1.0). Theories: the critic fails for want of optimisation and of data per "
        "update (issue 18: 128 steps fit a batch but not the next); a trunk shared with the "
        "policy is pulled by the policy loss. The first cell (shared, 0 steps: no value "
        "phase, so the replay does nothing) is the fix itself and the report's baseline",
        axes={
            # Axis order and first values make (shared, 0) the first cell: the baseline.
            "critic_trunk": ("shared", "separate"),
            "critic_steps": (0, 32, 128),
        },
        fixed={**SEED_DOCUMENT_FIX, "critic_replay": 3},
    ),
    "horizon": Sweep(
        name="horizon",
        about="is the critic chasing its own value at the horizon? GAE bootstrapping the "
        "episode's end at max_epochs with the critic's value of the last observation (the "
        "reference; that observation is never trained on, and no reward follows it) or not "
        "(truncation_bootstrap true | false) x value-only gradient steps per batch (critic_steps "
        "0 | 128, replay 3) (4 cells), shared trunk, on the seed document's fix. Issue 18: "
        "trained critics whose online EV (against bootstrapped targets) rose to 0.1-0.46 score "
        "below 0 against the return-to-go on held-out recorded episodes. The first cell "
        "(bootstrap, 0 steps) is the fix itself and the report's baseline; score each trial's "
        "critic on the return-to-go with `critic-fit DATA --checkpoint`",
        axes={
            "truncation_bootstrap": (True, False),
            "critic_steps": (0, 128),
        },
        fixed={**SEED_DOCUMENT_FIX, "critic_replay": 3, "critic_trunk": "shared"},
    ),
    "learn": Sweep(
        name="learn",
        about="an agent at the seed document's budget (profile batch64: 64 episodes per "
        "batch, 16 batches, both cores sampling): the seed document's fix (preset seed_after) "
        "vs the critic that generalises offline (preset critic_fix) (2 cells); the report "
        "evaluates every trial on 32 held-out env seeds next to WAIT, random, the heuristic and "
        "the oracle. Theory: more data per batch alone does not make the reference critic or "
        "its policy learn; a critic that reads the return from the observation does. Run with "
        "`--profile batch64 --seeds 3`",
        axes={PRESET: ("seed_after", "critic_fix")},
        labels=frozenset({PRESET}),
        evaluate_episodes=32,
        profile="batch64",
    ),
    "policy": Sweep(
        name="policy",
        about="what the policy needs at the seed document's budget (profile batch64), on the "
        "critic that learns online (preset critic_fix): the update's size (lr 3e-4 | 1e-3: "
        "in sweep learn KL was 0.01 and the clip fraction <= 0.005 per batch, the clip never "
        "bound) x credit for the seed's lifecycle (reward aligned | shaped: the reference's "
        "reward, whose stage potentials pay each advance of a seed when it happens) (4 "
        "cells); every trial evaluated on 32 held-out env seeds. Theory (sweep learn): a "
        "germination pays only when the lifecycle after it is played well, so under "
        "near-uniform play its advantage says WAIT. The first cell (3e-4, aligned) is sweep "
        "learn's critic_fix and the report's baseline. Run with `--profile batch64 --seeds 1`",
        axes={PRESET: ("critic_fix",), "lr": (3e-4, 1e-3), "reward": ("aligned", "shaped")},
        labels=frozenset({PRESET}),
        evaluate_episodes=32,
        profile="batch64",
    ),
    "document": Sweep(
        name="document",
        about="the seed document's own question where a critic can learn: its model (the "
        "policy's LSTM trunk, the Q(s, op) value head) over value-head gain 1.0 | 0.01 x depth "
        "2 | 4 (LayerNorm in the depth-4 head) x value_coef 0.5 | 1.0 (8 cells) at the "
        "learning recipe (lr 1e-3, reward shaped); every trial evaluated on 32 held-out env "
        "seeds. The cell (1.0, 2, 0.5) is the broken run, (0.01, 4, 1.0) its fix: does the "
        "collapse reproduce at the document's budget, and which of the three matters once the "
        "critic gets data? Run with `--profile batch64 --seeds 3`, in slices over sessions "
        "(docs/results/document-batch64-shaped)",
        axes={
            "value_head_gain": (1.0, 0.01),
            "value_head_depth": (2, 4),
            "value_coef": (0.5, 1.0),
        },
        fixed=LEARNING_RECIPE,
        derived={"value_head_layernorm": _deep_head_layernorm},
        evaluate_episodes=32,
        profile="batch64",
    ),
    "document_fix": Sweep(
        name="document_fix",
        about="which part of critic_fix the online result needs: critic_fix at the learning "
        "recipe (lr 1e-3, reward shaped), and with one part taken out at a time: the "
        "piecewise-linear bins, the LayerNorm back in its trunk, dropout 0, a critic LSTM of "
        "its own instead of the mlp trunk, no value phase (6 cells); every trial evaluated on "
        "32 held-out env seeds. The first cell (nothing taken out) is the report's baseline. "
        "Run with `--profile batch64 --seeds 3`, in slices over sessions "
        "(docs/results/document-batch64-shaped)",
        axes={PRESET: ("critic_fix",), WITHOUT: tuple(FIX_PARTS)},
        fixed=LEARNING_RECIPE,
        derived={name: _part_knob(name) for name in dict.fromkeys(
            k for knobs in FIX_PARTS.values() for k in knobs)},
        labels=frozenset({PRESET, WITHOUT}),
        evaluate_episodes=32,
        profile="batch64",
    ),
})


# What `ablate` and `make run` sweep when none is named: the seed document's own ablation.
DEFAULT_SWEEP = "value_head"
# Old names, each a one-line error naming the new one, and read as it from saved sweeps. "seed"
# names the grown module only.
RENAMED_SWEEPS: Mapping[str, str] = MappingProxyType({"seed": "value_head"})


def saved_sweep_name(name: str) -> str:
    """The sweep a saved sweep.json (or a folder's name) means, under today's names."""
    return RENAMED_SWEEPS.get(name, name)


def get_sweep(name: str) -> Sweep:
    """The named sweep, or a ValueError listing the known names."""
    if name in RENAMED_SWEEPS:
        raise ValueError(f"sweep {name!r} is now called {RENAMED_SWEEPS[name]!r}")
    try:
        return SWEEPS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(SWEEPS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown sweep {name!r}{hint} (known sweeps: {', '.join(SWEEPS)})"
        ) from None
