"""What ``esper-rllib critic-fit`` runs: the recording, the cells (``--set`` plus ``--grid`` and
``--trunk``), the seeds, the training-set sizes and the gradient-step budget, validated before
anything starts.

The env is the recording's (its meta.json: profile and ``--set``); only knobs that shape the
critic or how it is trained may change: the model's and the learner's (``model_config`` and
``learner_config_dict`` keys) and the optimiser's ``lr``, ``max_grad_norm`` and the discount
``gamma`` of the targets. Episodes are split train / held out by env seed: every
``HELDOUT_EVERY``-th env seed (in order) is held out, the rest is the training pool, of which a
trial trains on the first N of a seed-dependent permutation.

Reference learners (``offline.reference``, ``--reference``) are trials too: one per seed and
training-set size, fitting every reference on the same training episodes as the critics of that
seed and size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper_rllib.offline import dataset, reference
from esper_rllib.offline.critic_fit import OWN_TRUNKS, TRUNKS
from esper_rllib.run.config import (
    ENV,
    KNOBS,
    LEARNER,
    MODEL,
    PRESETS,
    ConfigError,
    parse_set,
    resolve_knobs,
)
from esper_rllib.run.config import parse_grid as parse_knob_grid
from tuning.naming import label

HELDOUT_EVERY = 4
ALL = "all"
FIT_KNOBS = ("lr", "max_grad_norm", "gamma")
# Axes of a critic-fit grid that are not knobs: the trunk, and a knob preset (seed_before ...).
TRUNK, PRESET = "trunk", "preset"
REFERENCES = "references"  # the trial cell of the reference learners


# Knobs an offline fit sets otherwise or has no use for, with why (their entries say).
NOT_OFFLINE = {n: k.online_only for n, k in KNOBS.items() if k.online_only}


def allowed_knobs() -> list[str]:
    return [n for n, k in KNOBS.items()
            if (k.where in (MODEL, LEARNER) or n in FIT_KNOBS) and n not in NOT_OFFLINE]


def load_recording(data: str | Path) -> tuple[Path, dict[str, Any]]:
    """(folder, meta) of a finished recording; ConfigError naming what is missing."""
    folder = Path(data)
    if not folder.is_dir():
        raise ConfigError(f"DATA {data}: no such folder (a recording of `esper-rllib record`)")
    if not (folder / dataset.META_FILE).is_file():
        raise ConfigError(f"DATA {data}: no {dataset.META_FILE}: not a recording of "
                          "`esper-rllib record`")
    meta = dataset.read_meta(folder)
    if not dataset.recorded_ids(folder):
        raise ConfigError(f"DATA {data}: no recorded episodes in {dataset.EPISODES_DIR}/")
    return folder, meta


def recorded_knobs(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs the recording was made with (its profile and --set): its env's above all."""
    return resolve_knobs(meta["profile"], overrides=meta["overrides"])


def check_fit_overrides(overrides: Mapping[str, Any], meta: Mapping[str, Any], flag: str = "--set"
                        ) -> dict[str, Any]:
    """The overrides a fit may apply on top of the recording's; ConfigError for a knob that is
    not a model or learner knob, or an env knob whose value differs from the recording's."""
    recorded = recorded_knobs(meta)
    fit: dict[str, Any] = {}
    allowed = allowed_knobs()
    for name, value in overrides.items():
        if name in NOT_OFFLINE:
            raise ConfigError(f"{flag} {name}: not for critic-fit ({NOT_OFFLINE[name]})")
        if name in allowed:
            fit[name] = value
            continue
        if KNOBS[name].where == ENV or name == "env":
            if value != recorded[name]:
                raise ConfigError(f"{flag} {name}={value!r}: the dataset was recorded with "
                                  f"{name}={recorded[name]!r} (its {dataset.META_FILE}); a "
                                  "critic fits the recorded env only")
            continue
        raise ConfigError(f"{flag} {name}: not a model or learner knob; allowed: "
                          f"{', '.join(allowed)}")
    return fit


def parse_grid(items: Sequence[str], meta: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` -> ``{key: values}``: knobs (typed, checked as --set) or
    ``preset`` (seed_before, seed_after)."""
    def typed(key: str, text: str) -> Any:
        if key != PRESET:
            return check_fit_overrides(parse_set([f"{key}={text}"]), meta, "--grid")[key]
        if text not in PRESETS:
            raise ConfigError(f"--grid preset={text}: allowed: {' | '.join(PRESETS)}")
        return text

    return parse_knob_grid(items, typed, reserved={TRUNK: "the trunk is --trunk"})


def parse_sizes(text: str) -> list[int | str]:
    sizes: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == ALL:
            sizes.append(ALL)
        elif part.isdigit() and int(part) >= 2:
            sizes.append(int(part))
        else:
            raise ConfigError(f"--train-episodes {text!r}: allowed: comma-separated ints >= 2 "
                              f"or {ALL}")
    return sizes


@dataclass(frozen=True)
class FitPlan:
    data: str  # the recording's folder
    meta: dict[str, Any]
    overrides: dict[str, Any]  # --set (fit knobs)
    axes: dict[str, list[Any]]  # --grid axes and the trunk, in order
    seeds: list[int]
    train_sizes: list[int | str]
    steps: int
    trunk: str  # of every cell, unless the trunk is an axis
    env_seeds: list[int] = field(default_factory=list)  # of the recorded episodes
    references: list[str] = field(default_factory=list)  # reference cells (offline.reference)

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of the axes' values, in grid order."""
        cells: list[dict[str, Any]] = [{}]
        for axis, values in self.axes.items():
            cells = [{**c, axis: v} for c in cells for v in values]
        return cells

    @staticmethod
    def cell_label(cell: Mapping[str, Any]) -> str:
        return label(cell) or "base"

    def trial_cells(self) -> list[str]:
        """What a trial's ``cell`` index points to: the critic cells' labels, then
        ``REFERENCES`` (one trial fits every reference) when there are references."""
        return [*(self.cell_label(c) for c in self.cells()),
                *([REFERENCES] if self.references else [])]

    def is_reference_trial(self, index: int) -> bool:
        return index >= len(self.cells())

    def trunk_of(self, cell: Mapping[str, Any]) -> str:
        """The cell's trunk: its --trunk axis value, else the critic trunk its preset sets (a
        preset's critic is its own trunk), else --trunk."""
        if TRUNK in cell:
            return cell[TRUNK]
        return PRESETS.get(cell.get(PRESET), {}).get("critic_trunk", self.trunk)

    def knobs(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved knobs of a cell (the recording's env, its fit knobs)."""
        knobs = {k: v for k, v in cell.items() if k not in (TRUNK, PRESET)}
        trunk = self.trunk_of(cell) if self.trunk_of(cell) in OWN_TRUNKS else "shared"
        # Offline: minibatches split the training episodes, not an online batch (bounded in
        # plan_fit by the smallest --train-episodes).
        return resolve_knobs(self.meta["profile"], cell.get(PRESET),
                             {**self.meta["overrides"], **self.overrides, **knobs,
                              "critic_trunk": trunk}, online=False)

    def split(self) -> tuple[list[int], list[int]]:
        """(training pool, held out): env seeds, every HELDOUT_EVERY-th in order held out."""
        ordered = sorted(self.env_seeds)
        held = ordered[HELDOUT_EVERY - 1::HELDOUT_EVERY]
        return [s for s in ordered if s not in set(held)], held

    def size(self, train_episodes: int | str) -> int:
        return len(self.split()[0]) if train_episodes == ALL else int(train_episodes)


def plan_fit(data: str | Path, *, overrides: Sequence[str], grid: Sequence[str],
             trunks: str, seeds: int, steps: int, train_episodes: str,
             references: str = reference.NONE) -> FitPlan:
    folder, meta = load_recording(data)
    fit_overrides = check_fit_overrides(parse_set(overrides), meta)
    axes = parse_grid(grid, meta)
    trunk_values = [t.strip() for t in trunks.split(",")]
    if not all(t in TRUNKS for t in trunk_values) or len(set(trunk_values)) < len(trunk_values):
        raise ConfigError(f"--trunk {trunks}: allowed: comma-separated values of "
                          f"{' | '.join(TRUNKS)}")
    if len(trunk_values) > 1:
        axes[TRUNK] = trunk_values
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: allowed: an int >= 1")
    if steps < 1:
        raise ConfigError(f"--steps {steps}: allowed: an int >= 1")
    sizes = parse_sizes(train_episodes)
    try:
        refs = reference.parse_references(references)
    except ValueError:
        raise ConfigError(f"--reference {references}: allowed: comma-separated values of "
                          f"{' | '.join(reference.FAMILIES)}, or {reference.NONE}") from None
    if refs and "gamma" in axes:
        raise ConfigError("--grid gamma: the references regress one return-to-go; give "
                          f"--reference {reference.NONE} with a gamma axis")
    env_seeds = sorted({int(s) for s in _recorded_env_seeds(folder)})
    plan = FitPlan(str(folder), meta, fit_overrides, axes, list(range(seeds)), sizes, steps,
                   trunk_values[0], env_seeds, refs)
    pool, held = plan.split()
    if len(held) < 2:
        raise ConfigError(f"DATA {data}: {len(env_seeds)} episodes leave {len(held)} held out; "
                          f"record at least {2 * HELDOUT_EVERY}")
    too_big = [n for n in sizes if n != ALL and n > len(pool)]
    if too_big:
        raise ConfigError(f"--train-episodes {too_big[0]}: the recording's training pool has "
                          f"{len(pool)} episodes; allowed: 2..{len(pool)} or {ALL}")
    for cell in plan.cells():
        knobs = plan.knobs(cell)  # each cell's knobs validated together
        if knobs["minibatches"] > min(plan.size(n) for n in sizes):
            raise ConfigError(f"minibatches={knobs['minibatches']}: each minibatch holds whole "
                              f"episodes; allowed: 1..{min(plan.size(n) for n in sizes)} (the "
                              "smallest --train-episodes)")
    return plan


def _recorded_env_seeds(folder: Path) -> list[int]:
    import pyarrow.parquet as pq

    files = sorted((folder / dataset.EPISODES_DIR).glob("episode-*.parquet"))
    return [pq.read_table(f, columns=["env_seed"]).column(0)[0].as_py() for f in files]

