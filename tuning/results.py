"""Collecting a sweep's results from its trial folders: per-iteration histories, per-trial summary
metrics (the HParams metrics and ablation.csv columns) and ablation.csv itself.

Everything is read from the files Tune writes (params.json, result.json), so a finished, resumed
or copied experiment folder gives the same answer as the live ResultGrid.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper_rllib.ppo.metric_names import RESULT_KEY, VERDICT, VERDICT_CODE, final_evs
from tuning.plan import with_seed_renamed
from tuning.storage import atomic_path

RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
CSV_FILE = "ablation.csv"
EV = "explained_variance"
EARLY_EV_ITERATION = 5  # the seed document judges the critic "after batch 5"

# Per-trial summary metrics, in the order of the report and CSV.
SUMMARY_METRICS = (
    "initial_value_loss",
    "ev_iter5",
    "best_ev",
    "final_ev",
    "final_ev_return",
    "final_value_loss",
    "median_clip_ratio",
    "final_q_spread",
    "median_kl",
    "final_accuracy",
    VERDICT_CODE,
)
# The ones TensorBoard's HParams view lists against the swept axes.
HPARAMS_METRICS = ("final_ev", "final_ev_return", "best_ev", "final_value_loss",
                   "median_clip_ratio", "final_accuracy", VERDICT_CODE)


@dataclass
class TrialRecord:
    """One trial folder: its knobs and one ``result["esper"]`` dict per iteration."""

    path: Path
    params: dict[str, Any]
    iterations: list[int]
    env_steps: list[int]
    metrics: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name

    def series(self, name: str) -> list[float]:
        """One metric over iterations (NaN where an iteration did not report it)."""
        return [_number(m.get(name)) for m in self.metrics]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan


def read_results(trial_dir: str | Path) -> list[dict[str, Any]]:
    """Every result line of a trial, in order (a line cut off by a killed driver is skipped)."""
    path = Path(trial_dir) / RESULT_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def load_trial(trial_dir: str | Path) -> TrialRecord:
    """A trial's record; if a resumed trial repeated an iteration, its latest result counts."""
    path = Path(trial_dir)
    params = with_seed_renamed(json.loads((path / PARAMS_FILE).read_text()))
    by_iteration = {r["training_iteration"]: r for r in read_results(path)
                    if "training_iteration" in r}
    ordered = [by_iteration[i] for i in sorted(by_iteration)]
    return TrialRecord(
        path=path,
        params=params,
        iterations=[r["training_iteration"] for r in ordered],
        env_steps=[int(r.get("timesteps_total") or 0) for r in ordered],
        metrics=[dict(r.get(RESULT_KEY, {})) for r in ordered],
    )


def trial_dirs(experiment_dir: str | Path) -> list[Path]:
    """The trial folders of an experiment (those holding params.json), sorted by name; a
    hidden one is a trial being written (``keep_trial``)."""
    root = Path(experiment_dir)
    return sorted(p.parent for p in root.glob(f"*/{PARAMS_FILE}")
                  if not p.parent.name.startswith("."))


def load_experiment(experiment_dir: str | Path) -> list[TrialRecord]:
    return [load_trial(p) for p in trial_dirs(experiment_dir)]


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _last(values: Sequence[float]) -> float:
    finite = _finite(values)
    return finite[-1] if finite else math.nan


def _at_iteration(trial: TrialRecord, name: str, iteration: int) -> float:
    """The metric at ``iteration``, or at the nearest iteration the trial has."""
    if not trial.iterations:
        return math.nan
    index = min(range(len(trial.iterations)),
                key=lambda i: (abs(trial.iterations[i] - iteration), trial.iterations[i]))
    return trial.series(name)[index]


def _median(values: Sequence[float]) -> float:
    finite = _finite(values)
    return statistics.median(finite) if finite else math.nan


def summarize(trial: TrialRecord) -> dict[str, Any]:
    """The trial's summary metrics (``SUMMARY_METRICS``) plus its final verdict string.

    Final EV and final EV return are ``metric_names.final_evs`` of the last iteration: the
    collapse monitor's trailing-window EVs (what the verdict is judged on), or that iteration's
    own EVs before the window holds one (NaN for runs from before a metric was logged).
    """
    ev = trial.series(EV)
    final_ev, final_ev_return = final_evs(trial.metrics[-1]) if trial.metrics else (math.nan,
                                                                                   math.nan)
    last_code = _last(trial.series(VERDICT_CODE))
    verdicts = [m.get(VERDICT) for m in trial.metrics if m.get(VERDICT)]
    return {
        "initial_value_loss": trial.series("value_loss")[0] if trial.metrics else math.nan,
        "ev_iter5": _at_iteration(trial, EV, EARLY_EV_ITERATION),
        "best_ev": max(_finite(ev), default=math.nan),
        "final_ev": final_ev,
        "final_ev_return": final_ev_return,
        "final_value_loss": _last(trial.series("value_loss")),
        "median_clip_ratio": _median(trial.series("clip_ratio")),
        "final_q_spread": _last(trial.series("q_spread")),
        "median_kl": _median(trial.series("kl")),
        "final_accuracy": _last(trial.series("episode_val_acc")),
        VERDICT_CODE: last_code if not math.isnan(last_code) else -1.0,
        VERDICT: verdicts[-1] if verdicts else "undetermined",
    }


def ablation_rows(trials: Sequence[TrialRecord],
                  columns: Callable[[Mapping[str, Any]], Mapping[str, Any]]
                  ) -> list[dict[str, Any]]:
    """One row per trial: its name, ``columns(params)`` (the axes, seed included, and any
    derived knobs), iterations, env steps, the summary metrics and the verdict."""
    rows = []
    for trial in trials:
        summary = summarize(trial)
        rows.append({
            "trial": trial.name,
            **columns(trial.params),
            "iterations": trial.iterations[-1] if trial.iterations else 0,
            "env_steps": trial.env_steps[-1] if trial.env_steps else 0,
            **{name: summary[name] for name in SUMMARY_METRICS},
            VERDICT: summary[VERDICT],
        })
    return rows


def write_ablation_csv(experiment_dir: str | Path,
                       columns: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> Path:
    """Write ``ablation.csv`` (one row per trial folder) into the experiment folder."""
    root = Path(experiment_dir)
    rows = ablation_rows(load_experiment(root), columns)
    path = root / CSV_FILE
    header = list(rows[0]) if rows else ["trial", "iterations", "env_steps",
                                         *SUMMARY_METRICS, VERDICT]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


# What a results folder keeps of each iteration's result line: the iteration, its env steps and
# wall time, and our metrics (not the config, RLlib's internals or the placement).
KEPT_RESULT_KEYS = ("training_iteration", "timesteps_total", "time_this_iter_s", "time_total_s",
                    "done", RESULT_KEY)
KEPT_ABOUT = "kept.json"


def keep_trial(logs: str | Path, folder: str | Path, files: Mapping[str, Path] | None = None,
               about: Mapping[str, Any] | None = None) -> Path:
    """Keep a finished trial in a results folder (one meant to be committed):
    ``folder/<trial>/`` with its params.json, its result.json cut to ``KEPT_RESULT_KEYS``,
    ``files`` (name there -> the file to copy) and ``about`` as kept.json; no checkpoint. The
    trial's folder is written beside and renamed into place: kept whole, or not at all.
    ``logs`` is the trial folder holding params.json and result.json."""
    logs, folder = Path(logs), Path(folder)
    target = folder / logs.name
    tmp = folder / f".{logs.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(logs / PARAMS_FILE, tmp / PARAMS_FILE)
    lines = [json.dumps({k: row[k] for k in KEPT_RESULT_KEYS if k in row})
             for row in read_results(logs)]
    (tmp / RESULT_FILE).write_text("".join(f"{line}\n" for line in lines))
    for name, source in (files or {}).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp / name)
    if about is not None:
        (tmp / KEPT_ABOUT).write_text(json.dumps(about, indent=1, default=str))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def kept_trials(folder: str | Path) -> set[str]:
    """The trials a results folder keeps: those whose last result says Tune stopped them
    (their budget, or a collapse with ``--stop-on-collapse``)."""
    return {t.name for t in trial_dirs(folder) if (read_results(t) or [{}])[-1].get("done")}


def read_ablation_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [with_seed_renamed(row) for row in csv.DictReader(f)]


def hparams_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(summary[name]) for name in HPARAMS_METRICS}
