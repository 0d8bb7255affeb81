"""One PPO run (``esper-rllib train``): a single Tune trial, so its directory, TensorBoard tags
(``esper/<name>`` and ``ray/tune/...``, env steps on the x axis, the same dashboard), result.json
and checkpoints look exactly like one trial of a sweep.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from esper_rllib import rllib_seam
from esper_rllib.ppo import metric_names as mn
from esper_rllib.ppo.collapse import UNDETERMINED, verdict_wait
from esper_rllib.run import sampling_progress
from esper_rllib.run.config import ConfigError, build_ppo_config, episode_steps
from esper_rllib.run.preflight import check_env_inputs, check_run_resources, runs_here
from esper_rllib.run.run_folder import (
    Continuation,
    carry_history,
    check_checkpoint,
    checkpoint_index,
    checkpoint_iteration,
    remove_tune_state,
    write_run_file,
)
from tuning.output import (
    SILENT,
    TUNE_TABLES,
    clock,
    eta,
    quiet_ray,
    ray_init_kwargs,
    tune_console,
)
from tuning.storage import FolderLock, StorageError, check_storage, claim_folder, claim_new_folder


class TrainingError(RuntimeError):
    """The run failed: one line saying why and where the full error is."""


def progress_line(result: Mapping[str, Any], iterations: int) -> str:
    """One line per iteration: the numbers the seed document's failure shows up in, the time
    so far and the time left (the mean iteration so far times the iterations left)."""
    esper = result.get(mn.RESULT_KEY, {})

    def num(name: str, fmt: str) -> str:
        value = esper.get(name)
        return "n/a" if value is None or math.isnan(value) else format(value, fmt)

    steps = result.get("timesteps_total") or esper.get(mn.ENV_STEPS, 0)
    iteration = result.get("training_iteration", 0)
    elapsed = result.get("time_total_s", 0.0)
    # The pace of this run only: a run started with --restore carries the checkpoint's
    # iterations in training_iteration, not their time.
    done_here = result.get("iterations_since_restore", iteration)
    pace = eta(result.get("time_since_restore", elapsed), done_here, iterations - iteration)
    return (f"iter {iteration:>3}/{iterations} | env steps {int(steps):>7} | "
            f"EV {num(mn.EV, '+.3f')} | value loss {num(mn.VALUE_LOSS, '.4g')} | "
            f"clip ratio {num(mn.CLIP_RATIO, '.2f')}x | kl {num(mn.KL, '.2e')} | "
            f"verdict {esper.get(mn.VERDICT, 'n/a')} | {clock(elapsed)}, ETA {pace}")


def final_line(esper: Mapping[str, Any], iterations: int) -> str:
    """The run's verdict and final EVs (``metric_names.final_evs``: the numbers report.md and
    the post-mortem give), and how many iterations a verdict needs when there is none yet."""
    ev, ev_return = (("n/a" if math.isnan(v) else format(v, "+.3g"))
                     for v in mn.final_evs(esper))
    verdict = esper.get(mn.VERDICT) or UNDETERMINED
    return (f"final verdict: {verdict} (over {iterations} iterations"
            f"{verdict_wait(verdict, iterations)}); final EV {ev}, against the return-to-go "
            f"{ev_return}")


def resume_command(checkpoint: str | os.PathLike) -> str:
    """The command that continues a run from its checkpoint (run.json keeps its knobs)."""
    import shlex

    return f"esper-rllib train --restore {shlex.quote(str(checkpoint))}"


def _run_callback(out: Callable[[str], None] | None, knobs: Mapping[str, Any],
                  first_iteration: int, continued: Continuation | None) -> Any:
    """The driver's side of the run: a line per iteration, lines inside the first one
    (sampling_progress), the newest checkpoint Tune registered, Ctrl-C and, for a run
    ``continued``, its history up to the checkpoint carried into the files Tune appends to.

    Ctrl-C prints this CLI's resume command and the last checkpoint at once, then lets Tune
    stop the trial gracefully (up to seconds while an iteration runs); the checkpoint printed
    stays the run's last (``_tidy`` removes any the stopping trial still writes), so the
    command works as printed."""
    from ray import tune

    iterations = knobs["iterations"]
    steps = knobs["episodes_per_batch"] * episode_steps(knobs)

    class RunLines(tune.Callback):
        def __init__(self) -> None:
            # The run's own last checkpoint (a continued run's at the start) and its iteration.
            self.checkpoint = None if continued is None else str(continued.checkpoint)
            self.iteration = self.saved_at = first_iteration - 1
            self.interrupted = False
            self._first: Any = None

        def __getstate__(self) -> dict:  # Tune pickles its callbacks (tuner.pkl)
            return {k: v for k, v in self.__dict__.items() if k != "_first"}

        def _print(self, line: str) -> None:
            # print is looked up here: Ray may replace builtins.print.
            (out or print)(line)

        def setup(self, **info: Any) -> None:
            # Tune has just put its own SIGINT handler in place: ours runs first.
            tune_handler = signal.getsignal(signal.SIGINT)

            def on_sigint(sig: int, frame: Any) -> None:
                self.interrupted = True
                self._stop_first()
                print(self.interrupt_line(), file=sys.stderr, flush=True)
                if callable(tune_handler):
                    tune_handler(sig, frame)

            signal.signal(signal.SIGINT, on_sigint)
            self._first = sampling_progress.FirstIteration(
                steps, knobs["episodes_per_batch"], f"iter {first_iteration:>3}/{iterations}",
                self._print)

        def _stop_first(self) -> None:
            if self._first is not None:
                self._first.stop()

        def interrupt_line(self) -> str:
            done = f"interrupted in iteration {self.iteration + 1} of {iterations}"
            if self.checkpoint is None:
                return (f"{done}; no checkpoint yet (--checkpoint-every N saves one every N "
                        "iterations): nothing to continue from")
            return (f"{done}; last checkpoint (iteration {self.saved_at}): {self.checkpoint}\n"
                    f"continue the run with: {resume_command(self.checkpoint)}")

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if continued is not None:
                carry_history(continued.trial, Path(trial.local_path), continued.iteration)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            self._stop_first()
            if not self.interrupted:  # the iteration a stopping trial may still finish: untold
                self.iteration = result.get("training_iteration", self.iteration)
                self._print(progress_line(result, iterations))

        def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                          **info: Any) -> None:
            if not self.interrupted:
                self.checkpoint, self.saved_at = checkpoint.path, self.iteration

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._stop_first()

    return RunLines()


def _run_name(label: str, trial: Any) -> str:
    return label


def _restoring_trainable(algo_class: type, checkpoint: Path, last_index: int) -> type:
    """``algo_class`` that starts from ``checkpoint``'s weights, optimiser state, counters,
    reward scale and env streams; its checkpoints are numbered on after ``last_index``."""

    def setup(self: Any, config: Any) -> None:
        algo_class.setup(self, config)
        self.restore_from_path(str(checkpoint))
        rllib_seam.number_checkpoints_after(self, last_index)

    # Built here so cloudpickle ships it (and the path) to the trial actor by value.
    return type(f"Restored{algo_class.__name__}", (algo_class,), {"setup": setup})


def _init_ray(quiet: bool) -> None:
    import ray

    if not _runs_here():
        # A cluster may autoscale to the CPUs and GPUs the trial asks for.
        ray.init(ignore_reinit_error=True, **ray_init_kwargs(quiet))
        return
    ray.init(include_dashboard=False, **ray_init_kwargs(quiet))


def _runs_here() -> bool:
    import ray

    return not ray.is_initialized() and runs_here()


def _storage(storage: str | os.PathLike) -> Path:
    """``--storage`` as an absolute local folder, checked and not created (ConfigError)."""
    if "://" in str(storage):  # the folder lock and --restore's continuation are local
        raise ConfigError(f"--storage {storage}: allowed: a local folder (ablate takes a "
                          "storage URI)")
    try:
        return Path(check_storage(str(storage)))
    except StorageError as err:
        raise ConfigError(str(err)) from None


def _claim(where: Path, name: str | None, continued: str | None) -> FolderLock:
    """The run's folder, locked (StorageError as ConfigError): ``where`` itself for a run
    ``continued`` (the option that named it), else a new one under ``where``: ``name`` if it
    is free, else ``train-<time>``."""
    try:
        if continued is not None:
            return claim_folder(where, continued, fresh=False)
        if name is None:
            return claim_new_folder(where, time.strftime("train-%Y%m%d-%H%M%S"))
        return claim_folder(where / name, f"--name {name}",
                            taken="already holds a run: choose another --name, or continue "
                                  "it with --restore <its checkpoint>")
    except StorageError as err:
        raise ConfigError(str(err)) from None


def _tidy(folder: FolderLock, trial: Path | None, last_index: int) -> None:
    """After the run, whatever its end: Tune's resume files go (this CLI continues a run with
    --restore), so do checkpoint folders after ``last_index``, the last one Tune registered
    (one cut short, or written after Ctrl-C); a new run folder that got neither a result nor
    an error goes whole."""
    remove_tune_state(folder.path)
    if trial is not None and trial.is_dir():
        for path in trial.iterdir():
            index = checkpoint_index(path)
            if index is not None and index > last_index:
                shutil.rmtree(path, ignore_errors=True)
    kept = [] if trial is None else [p for p in trial.glob("*") if p.name.startswith("error")
                                     or (p.name == "result.json" and p.stat().st_size)]
    if folder.created and not kept:
        shutil.rmtree(folder.path, ignore_errors=True)


def train(knobs: Mapping[str, Any], storage: str | os.PathLike, name: str | None = None,
          restore: str | os.PathLike | None = None, continuation: Continuation | None = None,
          out: Callable[[str], None] | None = None, label: str | None = None,
          verbose: bool = False, names: Mapping[str, str] | None = None,
          inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``knobs["iterations"]`` iterations; returns the final result dict.

    A new run gets a folder of its own under ``storage`` (``name``, or ``train-<time>``) with
    run.json (``inputs``: how the knobs were given) and starts fresh or from ``restore``;
    ``continuation`` trains a run on in its own folder from its newest checkpoint. Either
    folder is locked while the run writes into it. Checkpoints every ``checkpoint_every``
    iterations and at the end. ``label`` names the trial folder (default ``rng_seed=<seed>``);
    ``verbose`` shows Tune's tables and every Ray message besides the progress lines;
    ``names`` (profile, preset) join the knobs in TensorBoard's HParams. Raises ConfigError for
    bad storage, checkpoint, env inputs, resources or a folder in use (before Ray starts, and
    writing nothing), TrainingError when the run itself fails.
    """
    # The checks, cheapest first (the last ones import RLlib); then the folder, then Ray.
    if not verbose:
        quiet_ray()  # RLlib's notices come with the first config checks, before Ray starts
    if continuation is None:
        root = _storage(storage)
        checkpoint = check_checkpoint(restore) if restore is not None else None
        last_index, label = -1, label or f"rng_seed={knobs['rng_seed']}"
    else:
        checkpoint, last_index = continuation.checkpoint, continuation.last_index
        label = continuation.trial.name
    done = checkpoint_iteration(checkpoint) if checkpoint is not None else 0
    if done >= knobs["iterations"]:
        raise ConfigError(f"--restore {restore}: the checkpoint holds {done} iterations, the run "
                          f"trains {knobs['iterations']}: nothing to continue; allowed: "
                          f"--iterations N with N > {done}")
    local = _runs_here()
    check_env_inputs(knobs, local=local)
    config = build_ppo_config(knobs)
    if local:  # on a machine of its own the trial would wait forever for what is not there
        check_run_resources(knobs, config)
    folder = _claim(continuation.run if continuation else root, name,
                    f"--restore {restore}" if continuation else None)
    # How the run's knobs are given now: a continuation's own --set and options go on with it.
    write_run_file(folder.path, inputs or {}, knobs, label)
    from ray import tune

    from tuning.tensorboard import TensorBoardLogger, tensorboard_command

    trial_dir: Path | None = None
    lines: Any = None
    try:
        _init_ray(quiet=not verbose)
        # In every env runner: the first iteration's progress (sampling_progress).
        config.callbacks(on_episode_step=sampling_progress.count_step,
                         on_episode_end=sampling_progress.count_episode)
        lines = _run_callback(out, knobs, done + 1, continuation)
        trial_name = functools.partial(_run_name, label)
        tuner = tune.Tuner(
            config.algo_class if checkpoint is None
            else _restoring_trainable(config.algo_class, checkpoint, last_index),
            param_space=config,
            tune_config=tune.TuneConfig(trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=folder.path.name,
                storage_path=str(folder.path.parent),
                stop={"training_iteration": knobs["iterations"]},
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=knobs["checkpoint_every"], checkpoint_at_end=True),
                callbacks=[lines, TensorBoardLogger(hparams={**(names or {}), **knobs})],
                verbose=int(verbose),
            ),
        )
        trial_dir = folder.path / label
        # Without --verbose Tune's legacy engine at verbose 0 prints nothing: our lines only.
        with tune_console(TUNE_TABLES if verbose else SILENT):
            try:
                grid = tuner.fit()
            except KeyboardInterrupt:  # a second Ctrl-C stops Tune's graceful stop
                grid = []
    finally:
        _tidy(folder, trial_dir, last_index if lines is None or lines.checkpoint is None
              else checkpoint_index(Path(lines.checkpoint)))
        folder.release(remove_if_empty=True)
    out = out or print
    trial = grid[0] if len(grid) else None
    if trial is not None and trial.error is not None:
        first = str(trial.error).strip().splitlines()
        raise TrainingError(f"training failed: {first[-1] if first else trial.error!r} "
                            f"(full log: {trial.path})")
    if trial is None or not trial.metrics.get("done"):
        # Ctrl-C: the resume command is out already; Tune stopped the trial and returned.
        if trial_dir is not None and trial_dir.is_dir():
            out(f"trial directory (TensorBoard events, result.json): {trial_dir}")
        return {"interrupted": True, "training_iteration": lines.iteration,
                "checkpoint_path": lines.checkpoint}
    result = dict(trial.metrics)
    esper = result.get(mn.RESULT_KEY, {})
    out(final_line(esper, result.get("training_iteration") or 0))
    out(f"trial directory (TensorBoard events, result.json): {trial.path}")
    if trial.checkpoint is not None:
        out(f"last checkpoint: {trial.checkpoint.path}")
    out(f"open TensorBoard: {tensorboard_command(folder.path)}")
    result["trial_path"] = trial.path
    result["checkpoint_path"] = trial.checkpoint.path if trial.checkpoint else None
    return result

