"""Progress inside `train`'s first iteration: its env runners count the env steps and episodes
they sample into one small Ray actor, and a thread of the driver prints a line from it now and
then until the first iteration's own line (minutes on the real env, longer on batch64).

The counting runs in every env runner as RLlib episode callbacks (``count_step``,
``count_episode``); a runner that finds no counter (an evaluation, a sweep's trial) counts
nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tuning.output import clock, eta

# The counter's name in the job's namespace: the env runners of the run's trial share it.
COUNTER_NAME = "esper-sampling-progress"
# Seconds between the driver's looks at the counter, and between two of its lines.
POLL_S = 2.0
EVERY_S = 20.0
# How long the driver waits for the counter's answer before it skips a line.
ANSWER_S = 5.0


class _Counter:
    def __init__(self) -> None:
        self.steps = 0
        self.episodes = 0

    def add(self, steps: int, episodes: int) -> None:
        self.steps += steps
        self.episodes += episodes

    def totals(self) -> tuple[int, int]:
        return self.steps, self.episodes


_runner_counter: Any = None  # this process's handle: None not looked up yet, False: no counter


def _add(steps: int, episodes: int) -> None:
    global _runner_counter
    if _runner_counter is None:
        import ray

        try:
            _runner_counter = ray.get_actor(COUNTER_NAME)
        except ValueError:  # none in this job
            _runner_counter = False
    if _runner_counter:
        _runner_counter.add.remote(steps, episodes)  # fire and forget: never waits on it


def count_step(**_: Any) -> None:
    """RLlib's on_episode_step callback: one env step of one env."""
    _add(1, 0)


def count_episode(**_: Any) -> None:
    """RLlib's on_episode_end callback."""
    _add(0, 1)


def sampling_line(iteration: str, steps: tuple[int, int], episodes: tuple[int, int],
                  elapsed: float, pace: tuple[float, int] | None) -> str:
    """``iter   1/8: 40/160 env steps, 1/4 episodes sampled | 1:15, ETA 1:30 to sample``
    (``steps``, ``episodes``: done, of the iteration's; ``pace``: seconds and env steps between
    two looks, the ETA's pace, None before there were two); before the first step, what the
    run does meanwhile."""
    if steps[0] == 0:
        return f"{iteration}: setting up (env runners build their envs and data) | " \
               f"{clock(elapsed)}"
    left = eta(*pace, steps[1] - steps[0]) if pace else "?"
    return (f"{iteration}: {steps[0]}/{steps[1]} env steps, {episodes[0]}/{episodes[1]} "
            f"episodes sampled | {clock(elapsed)}, ETA {left} to sample")


class FirstIteration:
    """The driver's side: the counter actor and the thread that prints progress lines while
    the first iteration runs (``stop`` when its result arrives)."""

    def __init__(self, steps: int, episodes: int, iteration: str,
                 out: Callable[[str], None]) -> None:
        import ray

        self._counter = ray.remote(num_cpus=0)(_Counter).options(name=COUNTER_NAME).remote()
        self._steps, self._episodes, self._iteration, self._out = steps, episodes, iteration, out
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()


    def _run(self) -> None:
        import ray

        printed, first = -EVERY_S, None  # first: (seconds, env steps) at the first step seen
        while not self._done.wait(POLL_S):
            elapsed = time.monotonic() - self._start
            try:
                steps, episodes = ray.get(self._counter.totals.remote(), timeout=ANSWER_S)
            except Exception:  # a busy or stopping Ray: skip this line, never block the run
                continue
            new_step = steps and first is None
            if new_step:
                first = (elapsed, steps)
            # A line at the first sampled step, then one every EVERY_S.
            if new_step or elapsed - printed >= EVERY_S:
                if self._done.is_set():
                    return
                pace = (elapsed - first[0], steps - first[1]) \
                    if first and steps > first[1] else None
                self._out(sampling_line(self._iteration, (steps, self._steps),
                                        (episodes, self._episodes), elapsed, pace))
                printed = elapsed
