"""Running a planned sweep with Tune: FIFO, every cell to the same budget, checkpoints, retries
from the last checkpoint, resume of an interrupted sweep, and the results collected at the end.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from tuning.console import SweepConsole
from tuning.local_ray import local_resources, runs_here
from tuning.output import COMPACT, TUNE_TABLES, ray_init_kwargs, tune_console
from tuning.plan import PLAN_FILE, SweepPlan
from tuning.results import CSV_FILE, PARAMS_FILE, RESULT_FILE, write_ablation_csv
from tuning.saved_state import check_saved_state
from tuning.stopper import SweepStopper
from tuning.storage import (
    FolderLock,
    StorageError,
    atomic_path,
    check_storage,
    claim_folder,
    claim_new_folder,
)
from tuning.tensorboard import TensorBoardLogger
from tuning.trainable import ConfigBuilder, make_trainable, placement

# A placement request computed from a trial's flat knobs (see run_sweep's ``resources``).
ResourceRequest = Callable[[Mapping[str, Any]], Any]
# Writes the report into a local experiment folder (the CLI passes esper_rllib.analysis.render's).
ReportWriter = Callable[[Path], Any]
# Called when a trial reaches its budget with its two folders: the driver's (params.json,
# result.json as Tune's loggers wrote them, synced to the storage later) and the storage's
# (its checkpoints).
TrialHook = Callable[[Path, Path], Any]


@dataclass
class SweepOutcome:
    experiment: str  # the experiment folder: a local path or a URI
    local_dir: Path  # a local folder with the same params/result files and the outputs
    n_trials: int
    errored: list[str]  # trial folders that ended in an error
    unfinished: list[str]  # trials an interrupt (Ctrl-C) left short of the budget

    @property
    def complete(self) -> bool:
        return not self.unfinished


def default_name(plan: SweepPlan) -> str:
    return f"{plan.sweep}-{plan.profile}-{time.strftime('%Y%m%d-%H%M%S')}"


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def init_ray(address: str | None = None, quiet: bool = True) -> bool:
    """Join ``address`` (a running cluster; also RAY_ADDRESS) or start a local Ray; True when
    it started one here (no cluster that could autoscale to what trials ask for)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, **ray_init_kwargs(quiet))
    return runs_here(address)


def _check_gpus(plan: SweepPlan, build_config: ConfigBuilder,
                resources: ResourceRequest | None) -> None:
    """On a local Ray, a trial asking for more GPUs than there are would wait forever."""
    params = next(plan.trials())
    request = (resources(params) if resources is not None
               else placement(build_config, plan.cell_knobs(params)))
    wanted = request.required_resources.get("GPU", 0)
    have = local_resources().get("GPU", 0)
    if wanted > have:
        raise ValueError(f"--gpus-per-trial / gpus: each trial needs {wanted:g} GPUs, this "
                           f"machine has {have:g}")


def _trial_name(plan: SweepPlan, trial: Any) -> str:
    return plan.trial_label(trial.config)


def find_experiment(storage: str, name: str | None, prefix: str) -> str:
    """The experiment to resume: ``storage/name``, or the newest ``prefix*`` one under storage."""
    from ray import tune

    storage = check_storage(storage)
    if name is not None:
        path = _join(storage, name)
        if not tune.Tuner.can_restore(path):
            raise StorageError(f"--resume: no interrupted sweep at {path}")
        return path
    if "://" in storage:
        raise StorageError("--resume with a URI --storage needs --name")
    candidates = sorted(
        (p for p in Path(storage).glob(f"{prefix}*") if (p / PLAN_FILE).is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise StorageError(f"--resume: no {prefix}* sweep under {storage}; pass --name")
    return str(candidates[-1])


class TrialDone(Callback):
    """Calls ``done`` (a ``TrialHook``) when a trial reaches its budget, after its last
    checkpoint; the driver waits for it."""

    def __init__(self, done: TrialHook) -> None:
        self.done = done

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done(Path(trial.local_path), Path(trial.path))


class SweepInterrupt(Callback):
    """Ctrl-C: ``command`` (this CLI's resume command) at once, then Tune's own graceful stop,
    which saves the sweep's state for it (seconds; a second Ctrl-C skips it). Pickled with
    the sweep (tuner.pkl), so a resumed sweep says the same."""

    def __init__(self, command: str) -> None:
        self.command = command

    def setup(self, **info: Any) -> None:
        # Tune has just put its own SIGINT handler in place: ours runs first.
        tune_handler = signal.getsignal(signal.SIGINT)

        def on_sigint(sig: int, frame: Any) -> None:
            print(f"\ninterrupted: saving the sweep's state (Ctrl-C again skips that); the "
                  f"unfinished trials go on from their last checkpoints with:\n  "
                  f"{self.command}", file=sys.stderr, flush=True)
            if callable(tune_handler):
                tune_handler(sig, frame)

        signal.signal(signal.SIGINT, on_sigint)


def _tuner(plan: SweepPlan, build_config: ConfigBuilder, storage: str, name: str,
           max_concurrent: int | None, collapse_patience: int | None, max_failures: int,
           resources: ResourceRequest | None, verbose: int,
           trial_done: TrialHook | None = None, resume_command: str | None = None) -> Any:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    trainable = make_trainable(build_config, plan.base, plan.cell_knobs)
    if resources is not None:
        trainable = tune.with_resources(trainable, resources)
    every = int(plan.base["checkpoint_every"])
    # Saved in tuner.pkl with the rest, so a resumed sweep names and reports trials the same way.
    name_trial = functools.partial(_trial_name, plan)
    # A run of some trials only (a slice): each one a point that sets every axis of the grid.
    some = {} if plan.selected is None else {
        "search_alg": BasicVariantGenerator(points_to_evaluate=plan.points()),
        "num_samples": plan.n_trials}
    return tune.Tuner(
        trainable,
        param_space=plan.param_space(),
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                    trial_name_creator=name_trial,
                                    trial_dirname_creator=name_trial, **some),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            stop=SweepStopper(plan.iterations, collapse_patience),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=every,
                                                    checkpoint_at_end=True),
            # A trial that fails (a dead node, an OOM) restarts from its last checkpoint.
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[TensorBoardLogger(), *([TrialDone(trial_done)] if trial_done else []),
                       *([SweepInterrupt(resume_command)] if resume_command else [])],
            progress_reporter=SweepConsole(plan) if verbose == COMPACT else None,
            verbose=min(verbose, 1),
        ),
    )


def run_sweep(
    plan: SweepPlan,
    build_config: ConfigBuilder,
    storage: str,
    *,
    name: str | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    collapse_patience: int | None = None,
    max_failures: int = 2,
    resources: ResourceRequest | None = None,
    report: ReportWriter | None = None,
    verbose: int = COMPACT,
    trial_done: TrialHook | None = None,
    resume_command: Callable[[str], str] | None = None,
) -> SweepOutcome:
    """Run every trial of ``plan`` under ``storage/name``; write ablation.csv (and the report).

    The sweep folder is new (``name``, else ``<sweep>-<profile>-<time>``, with ``-2``, ...
    when taken) and, on a local storage, locked while the sweep runs: no second process writes
    into it. ``trial_done`` is called with each trial's folders as it reaches its budget (a
    results folder keeps it). ``resources`` replaces the placement the algorithm asks for (its
    default_resource_request): e.g. GPU bundles for trials whose torch stays on CPU, to test
    placement without a GPU. ``resume_command(experiment)``: what Ctrl-C prints at once.
    ``verbose``: SILENT, COMPACT (one line per trial result) or TUNE_TABLES.
    """
    storage = check_storage(storage)
    if max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {max_failures}")
    if runs_here(address):  # before Ray starts
        _check_gpus(plan, build_config, resources)
    folder, name = _claim_sweep(storage, name, plan)
    path = _join(storage, name)
    try:
        init_ray(address, quiet=verbose < TUNE_TABLES)
        tuner = _tuner(plan, build_config, storage, name, max_concurrent, collapse_patience,
                       max_failures, resources, verbose, trial_done,
                       resume_command and resume_command(path))
        _save_plan(plan, path)
        with tune_console(verbose):
            grid = tuner.fit()
        return _finish(path, plan, grid, report)
    finally:
        if folder is not None:
            folder.release(remove_if_empty=True)


def _claim_sweep(storage: str, name: str | None,
                 plan: SweepPlan) -> tuple[FolderLock | None, str]:
    """The new sweep's folder, locked, and its name; on a storage URI (no lock there) a name
    no other process picks (pid) and none that holds a sweep."""
    from ray import tune

    if "://" in storage:
        name = name or f"{default_name(plan)}-{os.getpid()}"
        if tune.Tuner.can_restore(_join(storage, name)):
            raise StorageError(f"{_join(storage, name)} already holds a sweep: pass --resume "
                               "to finish it, or another --name")
        return None, name
    if name is None:
        folder = claim_new_folder(storage, default_name(plan))
        return folder, folder.path.name
    taken = ("already holds a sweep: pass --resume to finish it, or another --name"
             if Path(storage, name, PLAN_FILE).exists()
             else "already holds files of another run: choose another --name")
    return claim_folder(Path(storage, name), f"--name {name}", taken=taken), name


def resume_sweep(
    experiment: str,
    build_config: ConfigBuilder,
    *,
    address: str | None = None,
    report: ReportWriter | None = None,
    verbose: int = COMPACT,
) -> SweepOutcome:
    """Finish an interrupted sweep: finished trials stay as they are, unfinished and errored
    ones continue from their last checkpoint, so every trial completes exactly once. A local
    sweep folder is locked while it runs (another process on it: StorageError, before Ray).
    """
    from ray import tune

    if not tune.Tuner.can_restore(experiment):
        raise StorageError(f"--resume: no interrupted sweep at {experiment}")
    check_saved_state(experiment)
    plan = _load_plan(experiment)
    folder = None if "://" in experiment else claim_folder(experiment, "--resume", fresh=False)
    try:
        init_ray(address, quiet=verbose < TUNE_TABLES)
        tuner = tune.Tuner.restore(experiment,
                                   make_trainable(build_config, plan.base, plan.cell_knobs),
                                   resume_unfinished=True, resume_errored=True)
        # The console (or Tune's tables) the sweep was started with comes back from tuner.pkl.
        with tune_console(verbose):
            grid = tuner.fit()
        return _finish(experiment, plan, grid, report)
    finally:
        if folder is not None:
            folder.release()


def _save_plan(plan: SweepPlan, path: str) -> None:
    if "://" not in path:
        plan.save(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        plan.save(tmp)
        _upload(Path(tmp), path, [PLAN_FILE])


def _load_plan(path: str) -> SweepPlan:
    if "://" not in path:
        return SweepPlan.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        _download(path, Path(tmp), {PLAN_FILE})
        return SweepPlan.load(tmp)


def _finish(path: str, plan: SweepPlan, grid: Any, report: ReportWriter | None) -> SweepOutcome:
    """Collect the results; an interrupted sweep gets no table or report until it is resumed."""
    errored = [str(r.path) for r in grid if r.error is not None]
    # Tune marks a trial's last result "done" when its stopper ended it.
    unfinished = [str(r.path) for r in grid if r.error is None and not r.metrics.get("done")]
    # Tune creates trials lazily: an interrupt can come before the last ones exist at all.
    unfinished += [f"(not started {i + 1})" for i in range(plan.n_trials - len(grid))]
    local = Path(path) if "://" not in path else Path(tempfile.mkdtemp(prefix="esper-sweep-"))
    if unfinished:
        return SweepOutcome(path, local, plan.n_trials, errored, unfinished)
    if "://" in path:
        _download(path, local, {PLAN_FILE, PARAMS_FILE, RESULT_FILE})
    write_ablation_csv(local, plan.columns)
    outputs = [CSV_FILE]
    if report is not None:
        written = report(local)
        outputs += [str(Path(p).relative_to(local)) for p in written or ()]
    if "://" in path:
        _upload(local, path, outputs)
    return SweepOutcome(path, local, plan.n_trials, errored, unfinished)


def _download(uri: str, local: Path, names: set[str]) -> None:
    """Copy the files called ``names`` (at any depth) from a storage URI to ``local``."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type == pyarrow.fs.FileType.File and info.base_name in names:
            target = local / Path(info.path).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src, atomic_path(target) as tmp:
                tmp.write_bytes(src.read())


def _upload(local: Path, uri: str, relpaths: list[str]) -> None:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    for rel in relpaths:
        target = f"{root}/{rel}"
        fs.create_dir(str(Path(target).parent), recursive=True)
        with fs.open_output_stream(target) as dst:
            dst.write((local / rel).read_bytes())
