"""What reaches the console: Tune's output engine, and the known harmless messages of Ray, RLlib
and Tune dropped at the loggers that emit them.

Only those exact messages go, in the driver and in every Ray worker process (trial actors and env
runners print them once each); everything else, errors above all, still reaches the console.
``--verbose`` keeps them and Tune's own tables.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# Console levels (run_sweep's ``verbose``): nothing; our one line per trial result (the known
# harmless Ray messages dropped); Tune's own tables and every Ray message (``--verbose``).
SILENT, COMPACT, TUNE_TABLES = 0, 1, 2
# Tune's switch between its new output engine (tables, ignores a ProgressReporter) and the
# legacy one that calls ours.
_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"

# logger name -> fragments of the messages it emits that tell a user nothing actionable.
HARMLESS: Mapping[str, tuple[str, ...]] = {
    # RLlib's notice that PPO defaults to the new API stack, which we use on purpose.
    "ray.rllib.algorithms.algorithm_config": (" on the new API stack! This is the new default",),
    # RLlib's own module building passes an RLModuleConfig; nothing of ours to change.
    "ray._common.deprecation": ("`RLModule(config=[RLModuleConfig object])` has been deprecated",),
    # Tune's system monitor on machines without GPUs.
    "ray.tune.utils.util": ("Install gputil for GPU system monitoring.",),
    # A trial's setup over 10 s (its env runners build their hosts and data): advice to reuse
    # actors, which sweeps of distinct configs cannot; printed only on a busy machine.
    "ray.tune.trainable.trainable": ("Trainable.setup took",),
    # Every checkpoint's path (the sweep's summary names the experiment folder).
    "ray.train._internal.storage": ("Checkpoint successfully created at",),
    # Ctrl-C: Tune's notice and its advice to call Tuner.restore; `train` and `ablate` print
    # their own resume command (run.trainer, tuning.runner.SweepInterrupt) and unfinished count.
    "ray.tune.tune": ("Stop signal received", "Resume experiment with:",
                      "Trials did not complete"),
    # A trial stopped before its first result has no result file to read: nothing to report.
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",),
}
# Ray runs this in every worker process of the job (ray.init's runtime_env).
WORKER_SETUP_HOOK = f"{__name__}.quiet_ray"


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def _drop_exit_in_destructors(default: Any) -> Any:
    """An unraisable hook that drops SystemExit only: Ray's SIGTERM handler raises it when Tune
    ends a finished trial's actor, and if that lands inside a destructor (RLlib's
    LearnerGroup.__del__) Python prints "Exception ignored in ..." with a traceback of the exit
    that was asked for. Every other unraisable exception still goes to ``default``."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    hook.drops_exit = True
    return hook


def quiet_ray() -> None:
    """Drop the HARMLESS messages in this process (idempotent)."""
    for name, fragments in HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    if not getattr(sys.unraisablehook, "drops_exit", False):
        sys.unraisablehook = _drop_exit_in_destructors(sys.unraisablehook)


def ray_init_kwargs(quiet: bool) -> dict[str, Any]:
    """ray.init's console arguments: Ray's own logs from warnings up; with ``quiet``, the HARMLESS
    messages dropped here and, through the job's runtime_env, in every worker process."""
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if quiet:
        quiet_ray()
        kwargs["runtime_env"] = {"worker_process_setup_hook": WORKER_SETUP_HOOK}
    return kwargs


@contextmanager
def tune_console(verbose: int) -> Iterator[None]:
    """Below TUNE_TABLES, Tune's legacy output engine for the duration: the one that calls a
    ProgressReporter (ours) and, at verbose 0, prints nothing."""
    if verbose >= TUNE_TABLES:
        yield
        return
    before = os.environ.get(_NEW_OUTPUT)
    os.environ[_NEW_OUTPUT] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[_NEW_OUTPUT]
        else:
            os.environ[_NEW_OUTPUT] = before



def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour up."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta(elapsed: float, done: float, left: float) -> str:
    """The time still to go at the pace so far, as ``clock``: ``elapsed`` per unit ``done``
    (trials, iterations, env steps) times the units ``left``; ``?`` before any is done.
    Every progress line's ETA (train, ablate, critic-fit, record, signal, evaluate) is this."""
    return clock(elapsed / done * max(left, 0)) if done > 0 else "?"
