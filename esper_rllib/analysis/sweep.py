"""A sweep's experiment folder as the report sees it: its trials grouped into cells (the swept
axes but the seed), the seed document's named cells, and the EV ceiling that applies to it (the
signal.json of `esper-rllib signal`, or measured for it).

The seed document: docs/seed-document.md."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib import failure_runs
from esper_rllib.analysis.signal import SIGNAL_JSON, SIGNAL_MD
from esper_rllib.ppo.metric_names import VERDICT, VERDICTS
from tuning.naming import label
from tuning.plan import SEED, SweepPlan
from tuning.results import TrialRecord, load_experiment, summarize

UNDETERMINED = "undetermined"


CEILING_POLICY = "random"


SIGNAL_SEEDS_HINT = 6  # the episodes per policy the notes suggest (signal's default)


# The seed document's two runs: (gain, depth, value_coef) -> name.
NAMED_AXES = ("value_head_gain", "value_head_depth", "value_coef")


BROKEN_RUN = tuple(failure_runs.BROKEN_RUN[a] for a in NAMED_AXES)


SEED_FIX = tuple(failure_runs.FIX[a] for a in NAMED_AXES)


NAMED_CELLS = {BROKEN_RUN: "the broken run", SEED_FIX: "the seed document's fix"}


@dataclass
class Cell:
    values: tuple  # one value per cell axis
    trials: list[TrialRecord]
    summaries: list[dict[str, Any]]

    def label(self, axes: Sequence[str], only: Sequence[str] | None = None) -> str:
        """The cell part of its trials' names (folders, console, TensorBoard runs); with
        ``only``, just those axes (a plot's panel names what tells the cells apart)."""
        pairs = dict(zip(axes, self.values, strict=True))
        return label({a: v for a, v in pairs.items() if only is None or a in only}) or "all"

    def knob(self, name: str) -> Any:
        """The cell's value of any knob, swept or fixed (its trials differ only in the seed)."""
        return self.trials[0].params.get(name)

    def scores(self, metric: str) -> list[float]:
        return [s[metric] for s in self.summaries]

    def verdicts(self) -> dict[str, int]:
        counts = {v: 0 for v in (*VERDICTS, UNDETERMINED)}
        for s in self.summaries:
            counts[s[VERDICT] if s[VERDICT] in counts else UNDETERMINED] += 1
        return counts


@dataclass
class Sweep:
    """An experiment folder as the report sees it."""

    path: Path
    plan: SweepPlan | None
    axes: list[str]  # cell axes (the seed excluded)
    trials: list[TrialRecord]
    cells: list[Cell]

    def reports(self, metric: str) -> bool:
        """Whether any trial logged ``metric`` (runs from before explained_variance_return did
        not)."""
        return any(metric in m for cell in self.cells for t in cell.trials for m in t.metrics)


def _varying_axes(trials: Sequence[TrialRecord]) -> list[str]:
    """Without sweep.json: the params that differ between trials are the axes."""
    keys = sorted({k for t in trials for k in t.params})
    return [k for k in keys if k != SEED
            and len({json.dumps(t.params.get(k), sort_keys=True, default=str)
                     for t in trials}) > 1]


def load_sweep(experiment_dir: str | Path) -> Sweep:
    path = Path(experiment_dir)
    trials = load_experiment(path)
    if not trials:
        raise ValueError(f"{experiment_dir}: no trial folders (params.json) found")
    try:
        plan: SweepPlan | None = SweepPlan.load(path)
    except ValueError:
        plan = None
    axes = plan.cell_axes if plan else _varying_axes(trials)
    order = {a: (plan.axes[a] if plan else []) for a in axes}

    def sort_key(values: tuple) -> tuple:
        return tuple(order[a].index(v) if v in order[a] else str(v)
                     for a, v in zip(axes, values, strict=True))

    groups: dict[tuple, list[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault(tuple(trial.params.get(a) for a in axes), []).append(trial)
    cells = [Cell(values, group, [summarize(t) for t in group])
             for values, group in sorted(groups.items(), key=lambda kv: sort_key(kv[0]))]
    return Sweep(path, plan, axes, trials, cells)


def _check(path: Path, field: str, value: Any, allowed: str, ok: bool) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{path}: {field}: {value!r}; allowed: {allowed}")


def load_ev_ceiling(experiment_dir: str | Path, policy: str = CEILING_POLICY
                    ) -> dict[str, Any] | None:
    """The EV ceiling under ``policy`` from the ``signal.json`` that `esper-rllib signal` wrote in
    the experiment folder or its parent: {policy, estimate, low, high, states, continuations,
    shared_stream, profile, reward, max_epochs, path, env_config}. estimate, low, high, states and
    continuations are the Markov-state ceiling's (continuations with the env's random stream
    drawn afresh); NaN (states 0) when the audit measured none under ``policy`` (--ev-states 0,
    or returns without variance) or predates it. ``shared_stream`` is the shared-stream figure
    ({estimate, low, high, states, continuations}, None when absent): an audit from before the
    Markov-state ceiling wrote only that one, under ``ev_ceiling`` (``shared_stream_only``
    True), and it is never read as the ceiling. None when there is no signal.json; a
    ValueError naming the file and the field when it is malformed."""
    folder = Path(experiment_dir)
    path = next((d / SIGNAL_JSON for d in (folder, folder.parent) if (d / SIGNAL_JSON).is_file()),
                None)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta: missing; expected the audit's profile, reward and "
                         "max_epochs")
    fields: dict[str, Any] = {}
    for key, kind in (("profile", str), ("reward", str), ("max_epochs", int)):
        _check(path, f"meta.{key}", meta.get(key), "a string" if kind is str else "an int",
                isinstance(meta.get(key), kind))
        fields[key] = meta[key]
    entries = {key: _ceiling_entry(path, data, key, policy)
               for key in ("ev_ceiling", "ev_ceiling_shared_stream")}
    markov, shared = entries["ev_ceiling"], entries["ev_ceiling_shared_stream"]
    predates = markov is not None and markov.pop("stream") != "fresh"  # an older audit
    if predates:
        markov, shared = None, markov
    if shared is not None:
        shared.pop("stream", None)
    none = {"estimate": math.nan, "low": math.nan, "high": math.nan, "states": 0,
            "continuations": 0}
    env = meta.get("env_config")
    return {"policy": policy, **fields, **(markov or none), "shared_stream": shared,
            "shared_stream_only": predates, "path": path,
            "env_config": env if isinstance(env, dict) else None}


def _ceiling_entry(path: Path, data: dict[str, Any], key: str, policy: str
                   ) -> dict[str, Any] | None:
    """signal.json's ``key`` figure under ``policy``, checked: {estimate, low, high (NaN for the
    audit's null), states, continuations, stream}; None when it has none for ``policy``."""
    ceilings = data.get(key, {})
    entry = ceilings.get(policy) if isinstance(ceilings, dict) else None
    if not isinstance(ceilings, dict) or not isinstance(entry, dict | None):
        raise ValueError(f"{path}: {key}: expected an object of policy -> {{estimate, low, "
                         "high, states, continuations}")
    if entry is None:
        return None
    fields: dict[str, Any] = {"stream": entry.get("stream")}
    for name in ("estimate", "low", "high"):  # null: the audit's NaN
        value = entry.get(name)
        _check(path, f"{key}.{policy}.{name}", value, "a finite number or null",
                value is None or (isinstance(value, int | float) and math.isfinite(value)))
        fields[name] = math.nan if value is None else float(value)
    for name in ("states", "continuations"):
        value = entry.get(name, 0)
        _check(path, f"{key}.{policy}.{name}", value, "an int >= 0",
                isinstance(value, int) and value >= 0)
        fields[name] = value
    return fields


def shared_stream_note(ceiling: dict[str, Any]) -> str:
    """Why a signal.json with only the shared-stream figure gives no ceiling ("" otherwise)."""
    shared = ceiling.get("shared_stream")
    if not ceiling.get("shared_stream_only") or shared is None:
        return ""
    return (f"`{ceiling['path']}` predates the Markov-state ceiling: it has only the "
            f"shared-stream figure {shared['estimate']:.3g} [{shared['low']:.3g}, "
            f"{shared['high']:.3g}], whose continuations shared the env's future random stream, "
            "so it credits a critic with knowing the future's dice and overstates the ceiling")


# ceiling_for's key for the cells (indices into sweep.cells) a ceiling applies to, when it
# applies to some cells only; absent: every cell.
CEILING_CELLS = "cells"
# The knobs a sweep's trials and the audit must share for its ceiling to apply (with the profile).
CEILING_KNOBS = ("reward", "max_epochs")
# The env knobs an EV ceiling depends on (with the random policy it is measured under): where
# signal.json records the env it built, these are compared, whatever the profiles are named
# (batch64 runs quick's env).
CEILING_ENV_KNOBS = ("task", "n_train", "n_val", "max_epochs", "max_seeds", "reward",
                     "data_seed")


def _trial_knob(trial: TrialRecord, knob: str) -> Any:
    """A ceiling knob of a trial: a sweep's params hold the flat knobs, a `train` run's (the
    PPOConfig) the env's under env_config."""
    if knob in trial.params:
        return trial.params[knob]
    return (trial.params.get("env_config") or {}).get(knob)


def _run_profile(trial: TrialRecord) -> str:
    """The profile whose env a `train` run's trial ran on (its params do not name it): the first
    whose env kwargs, with the run's reward and episode length, are the run's; else the
    default profile (the hint then still sets the ceiling knobs)."""
    from esper_rllib.run.config import PROFILES, env_config, resolve_knobs

    ran = trial.params.get("env_config") or {}
    for profile in PROFILES:
        overrides = {k: ran[k] for k in CEILING_KNOBS if ran.get(k) is not None}
        if env_config(resolve_knobs(profile, overrides=overrides)) == ran:
            return profile
    return next(iter(PROFILES))


def _signal_hint(sweep: Sweep) -> str:
    """The commands that measure this sweep's EV ceiling, runnable as printed."""
    profile = sweep.plan.profile if sweep.plan else _run_profile(sweep.trials[0])
    knobs = []
    for knob in CEILING_KNOBS:
        values = {_trial_knob(t, knob) for t in sweep.trials} - {None}
        if len(values) == 1:
            knobs.append(f"--set {knob}={values.pop()}")
    signal = f"`esper-rllib signal --profile {profile} {' '.join(knobs)} --out {sweep.path}`"
    if sweep.plan is not None:  # the report measures one only where sweep.json names the profile
        signal += (f", or let the report measure it: `esper-rllib report {sweep.path} "
                   f"--signal-seeds {SIGNAL_SEEDS_HINT}`")
    max_epochs = _trial_knob(sweep.trials[0], "max_epochs")
    return f"{signal} ({signal_cost(max_epochs)})" if max_epochs else signal


def signal_cost(max_epochs: int) -> str:
    """What the hint's audit costs (signal's defaults, with an oracle search), said before a
    user starts it: the audit states its own estimate, timed on the machine, when it starts."""
    from envs.contract import CNN_BLUEPRINTS
    from envs.hosts import SLOT_SIZES
    from esper_rllib.analysis.defaults import EV_STATES
    from esper_rllib.analysis.signal import audit_steps, duration

    steps = audit_steps(max_epochs, SIGNAL_SEEDS_HINT, EV_STATES, 4) \
        + len(SLOT_SIZES) * len(CNN_BLUEPRINTS) * 2 * max_epochs
    # 0.16 s: one such audit of `quick` (31,680 steps) took 1 h 24 min on the 2-core
    # development machine (issue 36); the audit times the machine it runs on when it starts.
    return (f"{steps:,} env steps with its oracle search: about {duration(steps * 0.16)} at "
            "0.16 s per step, the pace of profile quick on a 2-core machine")


def _mismatch(sweep: Sweep, ceiling: dict[str, Any],
              trials: Sequence[TrialRecord] | None = None) -> str:
    """What differs between the audit and this sweep's (or these of its trials') profile,
    reward and episode length ("" when nothing does: the ceiling applies). Where the audit
    recorded its env (``env_config``), the env knobs ``CEILING_ENV_KNOBS`` are compared instead
    of the profile."""
    trials = sweep.trials if trials is None else trials
    env = ceiling.get("env_config")
    if env is not None:
        theirs_by_knob = {k: env.get(k) for k in CEILING_ENV_KNOBS}
    else:
        theirs_by_knob = {"profile": ceiling["profile"],
                          **{k: ceiling[k] for k in CEILING_KNOBS}}
    ours = {k: ({sweep.plan.profile if sweep.plan else ceiling["profile"]} if k == "profile"
                else {_trial_knob(t, k) for t in trials}) for k in theirs_by_knob}
    if all(values == {theirs_by_knob[k]} for k, values in ours.items()):
        return ""
    theirs = ", ".join(f"{k} {theirs_by_knob[k]}" for k in ours)
    mine = ", ".join(f"{k} {'/'.join(sorted(map(str, v)))}" for k, v in ours.items())
    return f"`{ceiling['path']}` was measured with {theirs}; this sweep runs {mine}"


def ceiling_for(sweep: Sweep) -> tuple[dict[str, Any] | None, str]:
    """The EV ceiling that applies to this sweep and "", or None with a one-line reason. A
    ceiling that applies to some cells only names them (``CEILING_CELLS``) and the note says
    why the others differ."""
    ceiling = load_ev_ceiling(sweep.path)
    if ceiling is None:
        return None, (f"No EV ceiling: no {SIGNAL_JSON} in or beside the experiment folder. "
                      f"Measure one with {_signal_hint(sweep)}.")
    mismatch = _mismatch(sweep, ceiling)
    if mismatch:
        # Cells that vary a ceiling knob (a reward axis): the ceiling applies to those that run
        # the audit's env, and only to them.
        matching = [i for i, cell in enumerate(sweep.cells)
                    if not _mismatch(sweep, ceiling, cell.trials)]
        if not matching:
            return None, f"No EV ceiling: {mismatch}. Measure one with {_signal_hint(sweep)}."
        ceiling = {**ceiling, CEILING_CELLS: matching}
        mismatch = (f"The EV ceiling applies only to the {len(matching)} of {len(sweep.cells)} "
                    f"cells that run its env: {mismatch}.")
    if shared_stream_note(ceiling):
        return None, (f"No EV ceiling: {shared_stream_note(ceiling)}. Measure the Markov-state "
                      f"ceiling with {_signal_hint(sweep)}.")
    if math.isnan(ceiling["estimate"]):
        return None, (f"No EV ceiling: `{ceiling['path']}` has none under the "
                      f"{ceiling['policy']} policy (measured with --ev-states 0, or its returns "
                      "did not vary).")
    return ceiling, mismatch


def ceiling_applies(ceiling: dict[str, Any] | None, cell_index: int) -> bool:
    """Whether ``ceiling_for``'s ceiling applies to the sweep's cell at ``cell_index``."""
    if ceiling is None:
        return False
    cells = ceiling.get(CEILING_CELLS)
    return cells is None or cell_index in cells


def trial_knobs(plan: SweepPlan, params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved knobs a trial ran with: its params (the flat knobs and the axes) with the
    sweep's labels dropped and its derived knobs set, as the trial built them."""
    from esper_rllib.run.config import resolve_knobs

    return resolve_knobs(plan.profile, overrides=plan.cell_knobs(params))


def measure_signal(sweep: Sweep, seeds: int) -> list[Path]:
    """With ``seeds`` > 0 and no signal.json of this sweep's profile, reward and episode length
    in or beside the folder: `esper-rllib signal`'s audit of the sweep's env (``seeds`` episodes
    per policy, its other settings at their defaults), written into the folder. Returns the
    files written (none when nothing was measured)."""
    if seeds <= 0:
        return []
    found = load_ev_ceiling(sweep.path)
    if found is not None and not _mismatch(sweep, found) and not shared_stream_note(found):
        return []
    from esper_rllib.analysis.outputs import command_line
    from esper_rllib.analysis.signal import signal_audit, write_signal
    from esper_rllib.run.config import env_config

    if sweep.plan is None:
        raise ValueError(f"--signal-seeds: {sweep.path} has no sweep.json: the profile its "
                         "trials ran is unknown")
    knobs = [trial_knobs(sweep.plan, t.params) for t in sweep.trials]
    settings = {json.dumps(env_config(k), sort_keys=True, default=str) for k in knobs}
    if len(settings) > 1:
        raise ValueError(f"--signal-seeds: the trials run {len(settings)} different env "
                         "settings; one signal.json cannot serve them (run `esper-rllib signal` "
                         "per setting)")
    first = min(knobs, key=lambda k: k[SEED])  # the audit's env seeds count up from it
    result = signal_audit(first, profile=sweep.plan.profile, seeds=seeds)
    result["meta"]["command"] = command_line("report")
    write_signal(sweep.path, result)
    return [sweep.path / SIGNAL_JSON, sweep.path / SIGNAL_MD]


def named_cell(sweep: Sweep, knobs: tuple) -> Cell | None:
    """The one cell with these (gain, depth, value_coef); None when none or several have them,
    or when the sweep varies none of the three (they are its fixed base, not a cell's name)."""
    if not any(a in sweep.axes for a in NAMED_AXES):
        return None
    matches = [c for c in sweep.cells if tuple(c.knob(a) for a in NAMED_AXES) == knobs]
    return matches[0] if len(matches) == 1 else None
