"""One PPO run (``esper-rllib train``): a single Tune trial, so its directory, TensorBoard tags
(``esper/<name>`` and ``ray/tune/...``, env steps on the x axis, the same dashboard), result.json
and checkpoints look exactly like one trial of a sweep.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from esper_rllib.ppo import metric_names as mn
from esper_rllib.ppo.collapse import UNDETERMINED, verdict_wait
from esper_rllib.run.config import ConfigError, build_ppo_config
from esper_rllib.run.preflight import check_env_inputs, check_run_resources, runs_here
from tuning.output import SILENT, TUNE_TABLES, clock, eta, ray_init_kwargs, tune_console

# What Algorithm.save_to_path writes that a restore cannot do without.
_REQUIRED_FILES = (
    "rllib_checkpoint.json",
    "class_and_ctor_args.pkl",
    "algorithm_state.pkl",
    "learner_group/learner/state.pkl",
    "learner_group/learner/rl_module/default_policy/module_state.pkl",
)


class TrainingError(RuntimeError):
    """The run failed: one line saying why and where the full error is."""


def check_checkpoint(path: str | os.PathLike, what: str = "--restore") -> Path:
    """The checkpoint directory, or ConfigError when it is missing, incomplete or truncated;
    ``what`` names it in the message as the user gave it (an option or an argument)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{what} {path}: no such checkpoint directory")
    missing = [f for f in _REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"{what} {path}: not a complete RLlib checkpoint (missing "
                          f"{', '.join(missing)})")
    for file in sorted(root.rglob("*")):
        if file.suffix not in (".json", ".pkl"):
            continue
        try:
            with open(file, "rb") as f:
                json.load(f) if file.suffix == ".json" else pickle.load(f)
        except Exception as err:  # truncated or corrupt: any unpickling error
            raise ConfigError(f"{what} {path}: {file.relative_to(root)} is unreadable "
                              f"(truncated or corrupt: {type(err).__name__})") from None
    return root


def check_storage(path: str | os.PathLike) -> Path:
    """An absolute, writable storage directory (created if needed), or ConfigError."""
    root = Path(path).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--storage {path}: cannot create it ({err.strerror})") from None
    if not os.access(root, os.W_OK):
        raise ConfigError(f"--storage {path}: not writable")
    return root


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


def _progress_callback(out: Callable[[str], None] | None, iterations: int) -> Any:
    from ray import tune

    class ProgressLine(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            # print is looked up here: Ray may replace builtins.print, and Tune pickles this.
            (out or print)(progress_line(result, iterations))

    return ProgressLine()


def _run_name(label: str, trial: Any) -> str:
    return label


def _restoring_trainable(algo_class: type, checkpoint: Path) -> type:
    """``algo_class`` that starts from ``checkpoint``'s weights, optimiser state, counters and
    reward scale."""

    def setup(self: Any, config: Any) -> None:
        algo_class.setup(self, config)
        self.restore_from_path(str(checkpoint))

    # Built here so cloudpickle ships it (and the path) to the trial actor by value.
    return type(f"Restored{algo_class.__name__}", (algo_class,), {"setup": setup})


def _init_ray(knobs: Mapping[str, Any], config: Any, quiet: bool) -> None:
    import ray

    if not _runs_here():
        ray.init(ignore_reinit_error=True, **ray_init_kwargs(quiet))
        return  # a cluster may autoscale to the CPUs and GPUs the trial asks for
    ray.init(include_dashboard=False, **ray_init_kwargs(quiet))
    # On a machine of its own the trial would wait forever for CPUs or GPUs that never come.
    try:
        check_run_resources(knobs, config)
    except ConfigError:
        ray.shutdown()
        raise


def _interrupted(trial: Any, iterations: int, out: Callable[[str], None]) -> dict[str, Any]:
    """The lines of a run stopped short of its iterations (Ctrl-C); ``interrupted`` in the
    result tells the command to exit 130."""
    import sys

    done = (trial.metrics.get("training_iteration") if trial is not None else None) or 0
    checkpoint = trial.checkpoint.path if trial is not None and trial.checkpoint else None
    where = (f"last checkpoint: {checkpoint} (continue with --restore {checkpoint})"
             if checkpoint else "no checkpoint yet (--checkpoint-every N saves one every N "
             "iterations)")
    print(f"interrupted after iteration {done} of {iterations}; {where}", file=sys.stderr)
    if trial is not None:
        out(f"trial directory (TensorBoard events, result.json): {trial.path}")
    return {"interrupted": True, "training_iteration": done, "checkpoint_path": checkpoint,
            "trial_path": trial.path if trial is not None else None}


def _runs_here() -> bool:
    import ray

    return not ray.is_initialized() and runs_here()


def train(knobs: Mapping[str, Any], storage: str | os.PathLike, name: str | None = None,
          restore: str | os.PathLike | None = None,
          out: Callable[[str], None] | None = None, label: str | None = None,
          verbose: bool = False, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``knobs["iterations"]`` iterations; returns the final result dict.

    Checkpoints every ``checkpoint_every`` iterations and at the end. ``label`` names the
    trial folder (default ``seed=<seed>``); ``verbose`` shows Tune's tables and every Ray
    message besides the progress lines; ``names`` (profile, preset) join the knobs in
    TensorBoard's HParams. Raises ConfigError for bad storage, checkpoint or env
    inputs (before Ray starts), TrainingError when the run itself fails.
    """
    from ray import tune

    from tuning.tensorboard import TensorBoardLogger, tensorboard_command

    check_env_inputs(knobs, local=_runs_here())
    checkpoint = check_checkpoint(restore) if restore is not None else None
    root = check_storage(storage)
    name = name or time.strftime("train-%Y%m%d-%H%M%S")
    config = build_ppo_config(knobs)
    _init_ray(knobs, config, quiet=not verbose)
    trial_name = functools.partial(_run_name, label or f"rng_seed={knobs['rng_seed']}")
    tuner = tune.Tuner(
        config.algo_class if checkpoint is None
        else _restoring_trainable(config.algo_class, checkpoint),
        param_space=config,
        tune_config=tune.TuneConfig(trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root),
            stop={"training_iteration": knobs["iterations"]},
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=knobs["checkpoint_every"], checkpoint_at_end=True),
            callbacks=[_progress_callback(out, knobs["iterations"]),
                       TensorBoardLogger(hparams={**(names or {}), **knobs})],
            verbose=int(verbose),
        ),
    )
    # Without --verbose Tune's legacy engine at verbose 0 prints nothing: our lines only.
    with tune_console(TUNE_TABLES if verbose else SILENT):
        grid = tuner.fit()
    out = out or print
    # Ctrl-C: Tune stops the trial and returns (before its first result, without it).
    trial = grid[0] if len(grid) else None
    if trial is not None and trial.error is not None:
        first = str(trial.error).strip().splitlines()
        raise TrainingError(f"training failed: {first[-1] if first else trial.error!r} "
                            f"(full log: {trial.path})")
    if trial is None or not trial.metrics.get("done"):
        return _interrupted(trial, knobs["iterations"], out)
    result = dict(trial.metrics)
    esper = result.get(mn.RESULT_KEY, {})
    out(final_line(esper, result.get("training_iteration") or 0))
    out(f"trial directory (TensorBoard events, result.json): {trial.path}")
    if trial.checkpoint is not None:
        out(f"last checkpoint: {trial.checkpoint.path}")
    out(f"open TensorBoard: {tensorboard_command(root / name)}")
    result["trial_path"] = trial.path
    result["checkpoint_path"] = trial.checkpoint.path if trial.checkpoint else None
    return result
