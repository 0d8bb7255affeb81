"""The sweep's console, through Tune's ProgressReporter API: a header, then one line per trial
result (cell, seed, iteration/budget, EV, verdict, time in the trial) ending with the sweep's
iterations done and its ETA; a failed trial's line carries its error; a summary at the end.

Tune calls ``should_report`` after every event and ``report`` when it says yes; only its legacy
output engine does (``tuning.output.tune_console``). ``--verbose`` uses Tune's own tables instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import ProgressReporter

from esper_rllib.ppo.metric_names import EV, RESULT_KEY, VERDICT
from tuning.output import clock, eta
from tuning.plan import SEED, SweepPlan

ITERATION = "training_iteration"
TERMINATED, ERROR = "TERMINATED", "ERROR"
FAILED = "FAILED"
ERROR_FILE = "error.txt"  # Tune's name for it (ray/tune/experiment/trial.py EXPR_ERROR_FILE)


def error_line(trial: Any, width: int = 160) -> str:
    """The last line of the trial's error file (the exception itself), cut to ``width``."""
    try:
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):  # no error file (yet)
        lines = []
    text = lines[-1].strip() if lines else "no error message"
    return text if len(text) <= width else text[:width - 3] + "..."


class SweepConsole(ProgressReporter):
    def __init__(self, plan: SweepPlan, out: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self._out = out  # default print, looked up when used (Ray may replace builtins.print)
        self._cell_width = max(len("cell"), *(len(plan.cell_label(p)) for p in plan.trials()))
        self._seed_width = max(len(SEED), *(len(str(s)) for s in plan.axes[SEED]))
        self._iter_width = max(len("iter"), 2 * len(str(plan.iterations)) + 1)
        self._reset()

    def _write(self, line: str) -> None:
        (self._out or print)(line)

    def _reset(self) -> None:
        self._start = time.time()
        self._seen: dict[str, tuple] = {}  # trial id -> (status, iteration, failures) printed
        self._baseline: dict[str, int] = {}  # trial id -> iteration when first seen

    def setup(self, start_time: float | None = None, total_samples: int | None = None,
              **kwargs: Any) -> None:
        self._reset()
        self._write(f"{'cell':<{self._cell_width}}  {SEED:>{self._seed_width}}  "
                 f"{'iter':>{self._iter_width}}  {'EV':>7}  {VERDICT:<12}  {'time':>7}  | "
                 f"sweep iterations, ETA")

    @staticmethod
    def _state(trial: Any) -> tuple:
        return trial.status, trial.last_result.get(ITERATION, 0), trial.num_failures

    def should_report(self, trials: list, done: bool = False) -> bool:
        return done or any(self._seen.get(t.trial_id) != self._state(t) for t in trials)

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        for trial in trials:
            state = self._state(trial)
            before = self._seen.get(trial.trial_id)
            self._seen[trial.trial_id] = state
            if before is None:
                # A trial restored by --resume shows up with the iterations it already has.
                self._baseline[trial.trial_id] = state[1]
                before = (None, state[1], 0)
            if state[2] > before[2]:
                # Tune retries it from its last checkpoint while --max-failures allows.
                self._write(f"{self._line(trial, trials, FAILED)} | {error_line(trial)} (full "
                            f"error: {trial.path}/{ERROR_FILE})")
            elif state[1] > before[1]:
                self._write(self._line(trial, trials))
        if done:
            self._write(self._summary(trials))

    def _line(self, trial: Any, trials: list, verdict: str | None = None) -> str:
        result = trial.last_result
        esper: Mapping[str, Any] = result.get(RESULT_KEY, {})
        ev = esper.get(EV, math.nan)
        ev_text = "n/a" if ev is None or math.isnan(ev) else f"{ev:+.3f}"
        iteration = f"{result.get(ITERATION, 0)}/{self.plan.iterations}"
        verdict = verdict or str(esper.get(VERDICT, "n/a"))
        return (f"{self.plan.cell_label(trial.config):<{self._cell_width}}  "
                f"{trial.config.get(SEED)!s:>{self._seed_width}}  "
                f"{iteration:>{self._iter_width}}  {ev_text:>7}  {verdict:<12}  "
                f"{clock(result.get('time_total_s', 0)):>7}  | {self._progress(trials)}")

    def _done(self, trial: Any) -> int:
        """Iterations of the budget this trial has done; a trial that ended counts whole."""
        if trial.status in (TERMINATED, ERROR):
            return self.plan.iterations
        return min(trial.last_result.get(ITERATION, 0), self.plan.iterations)

    def _progress(self, trials: list) -> str:
        total = self.plan.n_trials * self.plan.iterations
        done = sum(self._done(t) for t in trials)
        fresh = sum(self._state(t)[1] - self._baseline.get(t.trial_id, 0) for t in trials)
        return f"{done}/{total}, ETA {eta(time.time() - self._start, fresh, total - done)}"

    def _summary(self, trials: list) -> str:
        failed = sum(t.status == ERROR for t in trials)
        finished = sum(t.status == TERMINATED for t in trials)
        return (f"{finished} of {self.plan.n_trials} trials finished, {failed} failed, "
                f"in {clock(time.time() - self._start)}")
