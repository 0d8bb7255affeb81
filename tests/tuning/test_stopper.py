"""The sweep's stopper: the iteration budget, and (opt-in) a sustained collapse verdict."""

from __future__ import annotations

import pytest

from tuning.stopper import SweepStopper


def result(iteration: int, verdict: str) -> dict:
    return {"training_iteration": iteration, "esper": {"verdict": verdict}}


def test_budget_only_by_default():
    stop = SweepStopper(iterations=10)
    assert not any(stop("t", result(i, "failure")) for i in range(1, 10))
    assert stop("t", result(10, "weak"))
    assert not stop.stop_all()


def test_collapse_patience_counts_consecutive_failures_per_trial():
    stop = SweepStopper(iterations=100, collapse_patience=3)
    verdicts = ["undetermined", "failure", "failure", "weak", "failure", "failure"]
    assert not any(stop("a", result(i, v)) for i, v in enumerate(verdicts, 1))
    assert not stop("b", result(1, "failure"))  # another trial has its own streak
    assert stop("a", result(7, "failure"))


def test_patience_must_be_positive():
    with pytest.raises(ValueError, match="stop-on-collapse"):
        SweepStopper(iterations=5, collapse_patience=0)
