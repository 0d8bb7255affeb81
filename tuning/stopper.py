"""When a trial stops: the sweep's iteration budget, and optionally a sustained collapse."""

from __future__ import annotations

from collections import defaultdict

from ray.tune.stopper import Stopper

from esper_rllib.ppo.metric_names import RESULT_KEY, VERDICT

FAILURE = "failure"


class SweepStopper(Stopper):
    """Stop at ``iterations``; with ``collapse_patience`` also stop a trial whose collapse
    monitor has said "failure" for that many consecutive iterations.

    Off by default: confirmatory ablations run every cell to the same budget (FIFO).
    """

    def __init__(self, iterations: int, collapse_patience: int | None = None) -> None:
        if collapse_patience is not None and collapse_patience < 1:
            raise ValueError(f"--stop-on-collapse must be >= 1, got {collapse_patience}")
        self.iterations = iterations
        self.collapse_patience = collapse_patience
        self._failing: dict[str, int] = defaultdict(int)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("training_iteration", 0) >= self.iterations:
            return True
        if self.collapse_patience is None:
            return False
        verdict = result.get(RESULT_KEY, {}).get(VERDICT)
        self._failing[trial_id] = self._failing[trial_id] + 1 if verdict == FAILURE else 0
        return self._failing[trial_id] >= self.collapse_patience

    def stop_all(self) -> bool:
        return False
