"""The console without a Ray run: exactly the known harmless messages are dropped, and the sweep's
reporter prints one line per new result, a failed trial's error, the ETA and a summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from esper_rllib.run.config import resolve_knobs
from tuning.console import SweepConsole
from tuning.output import HARMLESS, clock, eta, quiet_ray
from tuning.plan import plan_sweep


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name", list(HARMLESS))
def test_quiet_drops_exactly_the_harmless_messages(name):
    logger = logging.getLogger(name)
    handler = _Collect()
    logger.addHandler(handler)
    try:
        quiet_ray()
        quiet_ray()  # idempotent: one filter per logger
        for fragment in HARMLESS[name]:
            logger.warning("prefix %s suffix", fragment)
        logger.warning("something else went wrong")
        logger.error("a real error")
    finally:
        logger.removeHandler(handler)
    assert handler.messages == ["something else went wrong", "a real error"]
    assert sum(type(f).__name__ == "_DropMessages" for f in logger.filters) == 1


class _RaisesOnDelete:
    def __init__(self, exc):
        self.exc = exc

    def __del__(self):
        raise self.exc


def test_quiet_drops_only_an_exit_raised_inside_a_destructor(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    quiet_ray()
    quiet_ray()  # idempotent: wrapped once
    _RaisesOnDelete(SystemExit(1))  # Ray's SIGTERM handler firing inside RLlib's __del__
    assert capsys.readouterr().err == ""
    _RaisesOnDelete(ValueError("a real bug in a destructor"))
    assert "a real bug in a destructor" in capsys.readouterr().err


@dataclass
class _Trial:
    """The attributes of Tune's Trial that the reporter reads."""

    trial_id: str
    config: dict
    status: str = "PENDING"
    last_result: dict = field(default_factory=dict)
    num_failures: int = 0
    error_file: str | None = None
    path: str = ""


def _result(iteration: int, ev: float, verdict: str = "undetermined") -> dict:
    return {"training_iteration": iteration, "time_total_s": 61.0 * iteration,
            "esper": {"explained_variance": ev, "verdict": verdict}}


def test_sweep_console_lines_failure_and_summary(tmp_path):
    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=1, overrides={"iterations": 2},
                      grid={"value_head_gain": [1.0], "value_head_depth": [2],
                            "value_coef": [0.5, 1.0]})
    lines: list[str] = []
    console = SweepConsole(plan, out=lines.append)
    console.setup()
    a, b = (_Trial(str(i), p) for i, p in enumerate(plan.trials()))
    assert console.should_report([a, b])  # first sight: recorded, nothing to print
    console.report([a, b], done=False)
    assert lines[1:] == [] and not console.should_report([a, b])

    a.status, a.last_result = "RUNNING", _result(1, -0.25)
    assert console.should_report([a, b])
    console.report([a, b], done=False)
    assert lines[-1].split()[:5] == ["gain=1.0,depth=2,coef=0.5", "0", "1/2", "-0.250",
                                     "undetermined"]
    assert "1:01  | 1/4, ETA " in lines[-1]  # time in the trial, then the sweep's progress

    error = Path(tmp_path / "error.txt")
    error.write_text("Failure # 1\nTraceback (most recent call last):\n  ...\n"
                     "ValueError: malformed CIFAR-10 file x\n")
    b.status, b.num_failures, b.error_file, b.path = "ERROR", 1, str(error), "/runs/s/t"
    console.report([a, b], done=False)
    assert lines[-1].split()[:5] == ["gain=1.0,depth=2,coef=1.0", "0", "0/2", "n/a", "FAILED"]
    # The failed trial's budget counts as done; then its error and where the whole of it is.
    assert "| 3/4, ETA " in lines[-1]
    assert lines[-1].endswith(" | ValueError: malformed CIFAR-10 file x (full error: "
                              "/runs/s/t/error.txt)")

    a.status, a.last_result = "TERMINATED", _result(2, 0.5, "strong")
    console.report([a, b], done=True)
    assert "2/2" in lines[-2] and "+0.500" in lines[-2] and lines[-2].endswith("4/4, ETA 0:00")
    assert lines[-1].startswith("1 of 2 trials finished, 1 failed, in ")
    assert len(lines) == 1 + 3 + 1  # header, three events, summary


def test_clock():
    assert [clock(s) for s in (0, 61.9, 3599, 3600, 86399)] == [
        "0:00", "1:01", "59:59", "1:00:00", "23:59:59"]


def test_every_progress_line_takes_its_eta_from_one_rule():
    # The mean time per unit done so far times the units left; "?" before any is done.
    assert eta(60.0, 2, 6) == clock(180) == "3:00"
    assert eta(60.0, 4, 0) == eta(60.0, 5, -1) == "0:00"  # done (or past the total)
    assert eta(12.0, 0, 8) == "?"

