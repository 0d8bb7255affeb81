"""Running a critic-fit plan as Tune trials, one per (cell, seed, training-set size), the
recorded episodes shared through the object store (``tune.with_parameters`` puts them there
once), so a grid scales to a cluster like the sweeps. Each trial reports every point of its
learning curve to Tune and writes it as TensorBoard scalars against the gradient step; the
driver gathers them into ``curve.csv``. The reference learners' trial of a seed and
training-set size (``offline.reference``) reports one point per reference: they have no
gradient steps.

``curve.csv`` (``CURVE_COLUMNS``): one row per critic trial and measured step, and one per
reference trial with an empty ``step``; ``kind`` is ``critic`` or ``reference`` (files from
before references have no ``kind`` column: every row is a critic's). A reference's
``value_loss`` is 0.5 x its mean squared error on the training steps (the critics' form, no
clipping).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from esper_rllib.offline import dataset
from esper_rllib.offline.critic_fit import CurvePoint, fit_critic, to_episodes
from esper_rllib.offline.fit_plan import FitPlan
from esper_rllib.offline.reference import fit_reference
from tuning.console import error_line
from tuning.output import SILENT, clock, eta, tune_console
from tuning.runner import init_ray
from tuning.storage import atomic_path

CURVE_CSV = "curve.csv"
CURVE_COLUMNS = ("cell", "seed", "train_episodes", "step", "heldout_ev", "train_ev",
                 "value_loss", "kind")
POINT_COLUMNS = ("step", "heldout_ev", "train_ev", "value_loss")  # what a trial reports
CRITIC, REFERENCE = "critic", "reference"  # the kinds of row
TRIALS_DIR = "trials"
TB_PREFIX = "critic_fit"


def split_records(plan: FitPlan, records: Sequence[dataset.EpisodeRecord]
                  ) -> tuple[list[dataset.EpisodeRecord], list[dataset.EpisodeRecord]]:
    """(training pool, held out), each in env-seed order (``FitPlan.split``)."""
    by_seed = {r.env_seed: r for r in records}
    pool, held = plan.split()
    return [by_seed[s] for s in pool], [by_seed[s] for s in held]


def training_set(pool: Sequence[dataset.EpisodeRecord], n: int, seed: int
                 ) -> list[dataset.EpisodeRecord]:
    """The first ``n`` of a ``seed``-dependent permutation of the pool (in pool order)."""
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in sorted(order[:n])]


def fit_trial(config: dict[str, Any], records: tuple[list, list], plan: FitPlan) -> None:
    """One Tune trial: the critic of ``config["cell"]`` fitted on one training set, or the
    reference learner that ``config["cell"]`` points to."""
    from tensorboardX import SummaryWriter

    from envs.contract import action_space, observation_space

    pool, held = records
    if plan.is_reference_trial(config["cell"]):
        train_records = training_set(pool, plan.size(config["train_episodes"]), config["seed"])
        for name in plan.references:
            ref = fit_reference(name, train_records, held, gamma=plan.knobs({})["gamma"],
                                seed=config["seed"])
            tune.report({"step": None, "heldout_ev": ref.heldout_ev, "train_ev": ref.train_ev,
                         "value_loss": ref.value_loss, "reference": name,
                         "detail": ref.detail})
        return
    cell = plan.cells()[config["cell"]]
    knobs = plan.knobs(cell)
    train = to_episodes(training_set(pool, plan.size(config["train_episodes"]),
                                     config["seed"]), knobs["gamma"])
    heldout = to_episodes(held, knobs["gamma"])
    n_slots = pool[0].obs["blueprints"].shape[-1]
    writer = SummaryWriter(tune.get_context().get_trial_dir(), flush_secs=30)

    def report(point: CurvePoint) -> None:
        for key, value in asdict(point).items():
            if key != "step":
                writer.add_scalar(f"{TB_PREFIX}/{key}", value, global_step=point.step)
        tune.report(asdict(point))

    try:
        fit_critic(knobs, train, heldout, seed=config["seed"], trunk=plan.trunk_of(cell),
                   steps=plan.steps, observation_space=observation_space(n_slots),
                   action_space=action_space(n_slots), report=report)
    finally:
        writer.close()


def _trial_name(plan: FitPlan, trial: Any) -> str:
    c = trial.config
    return (f"{plan.trial_cells()[c['cell']]},seed={c['seed']},"
            f"n={plan.size(c['train_episodes'])}")


class FitConsole(tune.Callback):
    """Collects each trial's curve as it reports, writes curve.csv whenever a trial finishes
    (so an interrupted fit keeps its finished trials), and prints one line per finished trial:
    its held-out EV at the last step, trials done, ETA."""

    def __init__(self, plan: FitPlan, total: int, curve: Path) -> None:
        self.plan, self.total, self.curve = plan, total, curve
        self.done, self.start = 0, time.monotonic()
        self.points: dict[str, list[dict[str, Any]]] = {}
        self.rows: list[dict[str, Any]] = []  # of finished trials

    def _line(self, trial: Any, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        print(f"{_trial_name(self.plan, trial):<56} {what:<24} {self.done}/{self.total} "
              f"trials, {clock(elapsed)}, ETA {eta(elapsed, self.done, self.total - self.done)}",
              flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        c = trial.config
        reference = self.plan.is_reference_trial(c["cell"])
        self.points.setdefault(trial.trial_id, []).append({
            "cell": result["reference"] if reference else self.plan.trial_cells()[c["cell"]],
            "seed": c["seed"],
            "train_episodes": self.plan.size(c["train_episodes"]),
            **{k: result[k] for k in POINT_COLUMNS}, "kind": REFERENCE if reference else CRITIC,
            "detail": result.get("detail", "")})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        points = self.points.pop(trial.trial_id, [])
        self.rows += points
        write_curve(self.curve, self.rows)
        if self.plan.is_reference_trial(trial.config["cell"]):
            self._line(trial, "held-out EV " + ", ".join(
                f"{p['cell']} {p['heldout_ev']:+.3f}" + (f" ({p['detail']})" if p["detail"]
                                                         else "") for p in points))
            return
        result = trial.last_result or {}
        self._line(trial, f"held-out EV {result.get('heldout_ev', float('nan')):+.3f}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.points.pop(trial.trial_id, None)
        self._line(trial, f"FAILED: {error_line(trial)}")


def run_fit(plan: FitPlan, out: Path, *, address: str | None = None,
            max_concurrent: int | None = None) -> list[dict[str, Any]]:
    """Every trial of ``plan``; curve.csv in ``out`` (the finished trials' rows, returned)."""
    import functools

    init_ray(address)
    pool, held = split_records(plan, dataset.read_episodes(Path(plan.data)))
    trainable = tune.with_resources(
        tune.with_parameters(fit_trial, records=(pool, held), plan=plan), {"cpu": 1})
    # Tune varies the first key fastest: whole cells finish one after another.
    space = {"train_episodes": tune.grid_search(plan.train_sizes),
             "seed": tune.grid_search(plan.seeds),
             "cell": tune.grid_search(list(range(len(plan.trial_cells()))))}
    total = len(plan.trial_cells()) * len(plan.seeds) * len(plan.train_sizes)
    console = FitConsole(plan, total, out / CURVE_CSV)
    name = functools.partial(_trial_name, plan)
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                    trial_name_creator=name, trial_dirname_creator=name),
        run_config=tune.RunConfig(name=TRIALS_DIR, storage_path=str(out.resolve()),
                                  callbacks=[console], verbose=SILENT))
    with tune_console(SILENT):
        grid = tuner.fit()
    if grid.errors:
        print(f"{len(grid.errors)} of {total} trials failed; their error.txt files are under "
              f"{out / TRIALS_DIR}")
    write_curve(out / CURVE_CSV, console.rows)
    return console.rows


def write_curve(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(
            ({**r, "kind": r.get("kind", CRITIC)} for r in rows),
            key=lambda r: (r["cell"], r["seed"], r["train_episodes"],
                           -1 if r["step"] is None else r["step"])))


def read_curve(path: Path) -> list[dict[str, Any]]:
    """curve.csv's rows: ``step`` None for a reference's row; ``kind`` ``critic`` where the
    file has no such column."""
    with open(path, newline="") as f:
        return [{"cell": r["cell"], "seed": int(r["seed"]),
                 "train_episodes": int(r["train_episodes"]),
                 "step": int(r["step"]) if r["step"] not in ("", None) else None,
                 **{k: float(r[k]) for k in ("heldout_ev", "train_ev", "value_loss")},
                 "kind": r.get("kind") or CRITIC}
                for r in csv.DictReader(f)]
