"""Planning a sweep: profile + named sweep + command-line axes -> a validated grid of flat knobs.

Every cell is validated by the received knob resolver BEFORE anything is started or written,
so a bad axis or value is one clear error and leaves nothing behind.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tuning.naming import label
from tuning.storage import write_atomic
from tuning.sweeps import PRESET, Cell, get_sweep, saved_sweep_name

KnobResolver = Callable[..., dict[str, Any]]  # resolve_knobs(profile, preset=None, overrides=None)

SEED = "rng_seed"
# The RNG knob (and so this axis) was once called "seed", the word the seed document keeps for
# the grown module: saved sweeps (sweep.json, params.json, ablation.csv) are read with it renamed.
OLD_SEED = "seed"
DEFAULT_SEEDS = 5
PLAN_FILE = "sweep.json"
# Knobs that must be the same in every cell: FIFO runs every cell to the same budget.
BUDGET_KNOBS = ("iterations", "checkpoint_every")


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep runs; saved as ``sweep.json`` in the experiment folder for resume and report."""

    sweep: str
    profile: str
    axes: dict[str, list[Any]]  # axis -> values, the seed axis last
    base: dict[str, Any]  # resolved knobs shared by every cell (axes hold placeholders)
    derived: list[str]  # knobs set from each cell by the sweep's rules
    labels: list[str]  # axes that name a knob combination rather than being a knob
    # The knobs each value of a `preset` axis sets (as the resolver applies the preset under the
    # sweep's fixed knobs and --set); their names are in `derived`, so params hold none of them.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The trials this run runs, by name, when not all: a slice of the sweep (``part``), less
    # those a results folder keeps already (``select``); None: every trial of the grid.
    selected: list[str] | None = None

    @property
    def n_trials(self) -> int:
        if self.selected is not None:
            return len(self.selected)
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n

    @property
    def cell_axes(self) -> list[str]:
        """The axes that define a cell (all but the seed)."""
        return [a for a in self.axes if a != SEED]

    @property
    def iterations(self) -> int:
        return int(self.base["iterations"])

    def cell_knobs(self, cell: Cell) -> dict[str, Any]:
        """The builder's knobs of one trial config: the sweep's labels dropped, the derived
        knobs set from the cell (the ONE place they are computed, inside each trial): a rule's
        value, else the cell's preset's, else the base's."""
        rules = get_sweep(self.sweep).derived
        knobs = {k: v for k, v in cell.items() if k not in self.labels}
        preset = self.presets.get(cell.get(PRESET), {})
        for name in self.derived:
            value = rules[name](cell) if name in rules else None
            value = preset.get(name) if value is None else value
            knobs[name] = self.base[name] if value is None else value
        return knobs

    def columns(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What tells trials apart in tables: the axes (seed last), then the derived knobs."""
        knobs = self.cell_knobs(params) if self.derived else {}
        return {**{a: params.get(a) for a in self.axes}, **{d: knobs[d] for d in self.derived}}

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every trial's params of the whole sweep (the base knobs with its axis values), in
        grid order."""
        for values in itertools.product(*self.axes.values()):
            yield {**self.base, **dict(zip(self.axes, values, strict=True))}

    def trials(self) -> Iterator[dict[str, Any]]:
        """The params of the trials this run runs (``selected``; else all), in grid order."""
        chosen = None if self.selected is None else set(self.selected)
        return (p for p in self.grid() if chosen is None or self.trial_label(p) in chosen)

    def select(self, names: Iterable[str]) -> SweepPlan:
        """This plan running only those of its trials that ``names`` names."""
        wanted = set(names)
        return replace(self, selected=[self.trial_label(p) for p in self.trials()
                                       if self.trial_label(p) in wanted])

    def part(self, k: int, n: int) -> SweepPlan:
        """The k-th of n slices of the sweep (1-based), which together run it once: its trials
        seed-major (every cell's first seed, then every cell's second, ...), cut into n runs
        of near-equal length, so that the first slices give every cell a seed."""
        trials = list(self.grid())
        if not 1 <= k <= n <= len(trials):
            raise ValueError(f"--slice {k}/{n}: allowed: K/N with 1 <= K <= N <= "
                             f"{len(trials)} (the sweep's trials)")
        seeds = self.axes[SEED]
        order = sorted(range(len(trials)), key=lambda i: (seeds.index(trials[i][SEED]), i))
        size, extra = divmod(len(trials), n)
        start = (k - 1) * size + min(k - 1, extra)
        mine = order[start:start + size + (k <= extra)]
        return self.select(self.trial_label(trials[i]) for i in mine)

    def whole(self) -> SweepPlan:
        """The sweep this plan runs (a part of): every trial."""
        return replace(self, selected=None)

    def joined(self, other: SweepPlan, defaults: Mapping[str, Any] | None = None) -> SweepPlan:
        """The whole sweep of two plans of it (slices, more seeds, more values on an axis): each
        axis's values in both, in order. ValueError naming what differs when they are not runs
        of one sweep: another sweep, profile, base knob (but the first seed), preset or axis.

        A knob only one plan has (the code gained it between the runs) is the same where that
        plan holds it at ``defaults``' value (the profile's, as ``resolve_knobs(profile)`` gives
        it): a new knob's default keeps the behaviour the older runs had."""
        mine, theirs = (_as_json(asdict(p.whole())) for p in (self, other))
        for key in ("sweep", "profile", "derived", "labels", "presets"):
            if mine[key] != theirs[key]:
                raise ValueError(f"{key}: {theirs[key]!r}, where the sweep has {mine[key]!r}")
        usual = _as_json(dict(defaults or {}))

        def same(knob: str) -> bool:
            if knob in mine["base"] and knob in theirs["base"]:
                return mine["base"][knob] == theirs["base"][knob]
            held = mine["base"].get(knob, theirs["base"].get(knob))
            return knob in usual and usual[knob] == held

        differ = sorted(k for k in {*mine["base"], *theirs["base"]} - {SEED} if not same(k))
        if differ:
            k = differ[0]
            raise ValueError(f"knob {k}={theirs['base'].get(k)!r}, where the sweep has "
                             f"{mine['base'].get(k)!r}")
        if list(self.axes) != list(other.axes):
            raise ValueError(f"axes {list(other.axes)}, where the sweep has {list(self.axes)}")
        axes = {a: list(dict.fromkeys([*self.axes[a], *other.axes[a]])) for a in self.axes}
        return replace(self, axes=axes, selected=None)

    def points(self) -> list[dict[str, Any]]:
        """Each trial this run runs as its axis values: Tune's points to evaluate, one trial
        each, when the run is not the whole grid."""
        return [{a: p[a] for a in self.axes} for p in self.trials()]

    def cell_label(self, params: Mapping[str, Any]) -> str:
        """The cell's axes, short: ``gain=1.0,depth=2,coef=0.5``."""
        return label({a: params.get(a) for a in self.cell_axes})

    def trial_label(self, params: Mapping[str, Any]) -> str:
        """The trial's folder and Tune name: its cell's axes, then the seed."""
        return label({a: params.get(a) for a in self.axes})

    def param_space(self) -> dict[str, Any]:
        """Tune's param space: the flat knobs with the axes as grid searches.

        Derived knobs are left out (each trial derives them; Tune's ``sample_from`` would come
        back unresolved for trials restored before they started).
        """
        from ray import tune

        space = {k: v for k, v in self.base.items() if k not in self.derived}
        for axis, values in self.axes.items():
            space[axis] = tune.grid_search(list(values))
        return space

    def save(self, experiment_dir: str | Path) -> None:
        path = Path(experiment_dir)
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / PLAN_FILE, json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def load(cls, experiment_dir: str | Path) -> SweepPlan:
        path = Path(experiment_dir) / PLAN_FILE
        if not path.is_file():
            raise ValueError(f"{experiment_dir} has no {PLAN_FILE}: not a sweep folder")
        saved = json.loads(path.read_text())
        return cls(**{**saved, "sweep": saved_sweep_name(saved["sweep"]),
                      "axes": with_seed_renamed(saved["axes"]),
                      "base": with_seed_renamed(saved["base"])})


def _as_json(value: Any) -> Any:
    """``value`` as sweep.json holds it (tuples as lists), to compare a saved plan with one."""
    return json.loads(json.dumps(value, default=str))


def parse_slice(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N); ValueError naming ``--slice`` otherwise."""
    k, _, n = text.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit()):
        raise ValueError(f"--slice {text}: allowed: K/N, e.g. 2/6 (the 2nd of 6 slices)")
    return int(k), int(n)


def with_seed_renamed(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` with a saved ``OLD_SEED`` key read as ``SEED``."""
    return {(SEED if k == OLD_SEED else k): v for k, v in mapping.items()}


def gpu_knobs(knobs: Mapping[str, Any], gpus_per_trial: float) -> dict[str, Any]:
    """Split one trial's GPU share evenly between its learner and its env runners.

    The env runners train the host networks (the env's inner loop), so they need the GPU as much
    as the learner does.
    """
    if gpus_per_trial < 0:
        raise ValueError(f"--gpus-per-trial must be >= 0, got {gpus_per_trial}")
    if not gpus_per_trial:
        return {}
    runners = int(knobs.get("num_env_runners", 0))
    share = gpus_per_trial / (1 + runners)
    return {"gpus": share, "gpus_per_env_runner": share if runners else 0.0}


def plan_sweep(
    sweep: str,
    profile: str,
    resolve_knobs: KnobResolver,
    *,
    seeds: int | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    gpus_per_trial: float = 0.0,
) -> SweepPlan:
    """Validate and plan a sweep. Raises ValueError (the resolver's ConfigError included)."""
    definition = get_sweep(sweep)
    grid = {k: list(v) for k, v in (grid or {}).items()}
    overrides = dict(overrides or {})
    for key, values in grid.items():
        if not values:
            raise ValueError(f"--grid {key}: give at least one value (key=v1,v2,...)")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--grid {key}: repeated value in {values}")
    for key in BUDGET_KNOBS:
        if key in grid:
            raise ValueError(f"--grid {key}: every cell runs to the same budget; use --set {key}=N")
    clash = sorted(set(overrides) & (set(definition.axes) | set(grid)))
    if clash:
        raise ValueError(
            f"--set {clash[0]}: it is an axis of this sweep; change its values with --grid "
            f"{clash[0]}=v1,v2"
        )
    explicit = set(overrides) | set(grid)
    fixed = {k: v for k, v in definition.fixed.items() if k not in explicit}
    derived = [k for k in definition.derived if k not in explicit]

    base = resolve_knobs(profile, overrides={**fixed, **overrides})
    base = resolve_knobs(profile, overrides={**fixed, **overrides,
                                             **gpu_knobs(base, gpus_per_trial)})
    axes = {**{k: list(v) for k, v in definition.axes.items()}, **grid}
    if SEED not in grid:
        if seeds is None:
            seeds = DEFAULT_SEEDS
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        axes[SEED] = [int(base[SEED]) + i for i in range(seeds)]
    axes[SEED] = axes.pop(SEED)
    labels = sorted(definition.labels & set(axes))
    presets = _presets(sweep, profile, resolve_knobs, axes.get(PRESET, []), base,
                       {**fixed, **overrides, **gpu_knobs(base, gpus_per_trial)})
    derived += sorted({k for knobs in presets.values() for k in knobs} - set(derived))
    plan = SweepPlan(sweep=sweep, profile=profile, axes=axes, base=base, derived=derived,
                     labels=labels, presets=presets)
    # Validate every cell exactly as its trial will see it: base knobs, axis values, derived knobs.
    names: set[str] = set()
    for params in plan.grid():
        resolve_knobs(profile, overrides=plan.cell_knobs(params))
        name = plan.trial_label(params)
        if name in names:  # label values that differ only in characters a folder cannot hold
            raise ValueError(f"--grid: two trials would share the folder name {name!r}; give "
                             "values that still differ with /()<>:\"\\|?* replaced by _")
        names.add(name)
    return plan


def _presets(sweep: str, profile: str, resolve_knobs: KnobResolver, names: Sequence[Any],
             base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The knobs each preset of a `preset` axis changes from ``base`` (the resolver layers the
    preset under ``overrides``, so --set and the sweep's fixed knobs win over it)."""
    presets = {}
    for name in names:
        try:
            knobs = resolve_knobs(profile, preset=name, overrides=overrides)
        except ValueError as err:  # the resolver's ConfigError: an unknown preset
            raise ValueError(f"sweep {sweep}, axis {PRESET}: {err}") from None
        presets[str(name)] = {k: v for k, v in knobs.items() if v != base[k]}
    return presets
