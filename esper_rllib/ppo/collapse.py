"""The collapse monitor: reads one iteration's metrics at a time,
raises the seed document's warning flags and gives a verdict from a trailing window of explained
variance, so one noisy batch does not flip it.

Only post-warm-up EV enters the window (warm-up iterations must not decide the verdict), and the
verdict waits until a majority of the window holds such EVs: a median of one or two values is
decided by a single batch. With the defaults (warm-up 5, window 5) the first verdict comes at
iteration 8, on the EVs of iterations 6-8.

Thresholds are the seed document's:
failure = EV < 0 after batch 5, weak = 0 <= EV <= 0.2, strong = EV > 0.2; clipping beyond 10x,
KL below 1e-3 and an initial value loss above 10 are the symptoms of the collapsed run.

The seed document: docs/seed-document.md.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from typing import Any

from esper_rllib.ppo.metric_names import COLLAPSE_FLAGS, VERDICTS

UNDETERMINED = "undetermined"

# The seed document judges EV only "after batch 5": earlier iterations are warm-up.
WARMUP_ITERATIONS = 5
DEFAULT_WINDOW = 5
# The iterations a run needs before its first verdict (the warm-up, then a majority of the
# window); before that it is "undetermined".
VERDICT_ITERATIONS = WARMUP_ITERATIONS + DEFAULT_WINDOW // 2 + 1


def verdict_wait(verdict: str | None, iterations: int) -> str:
    """"; a verdict needs N iterations" for a run that stopped too soon for one, else ""."""
    if verdict in (None, UNDETERMINED) and iterations < VERDICT_ITERATIONS:
        return f"; a verdict needs {VERDICT_ITERATIONS} iterations"
    return ""
STRONG_EV = 0.2
Q_SPREAD_REL = 1e-3
EXTREME_CLIP_RATIO = 10.0
KL_STALLED = 1e-3
HIGH_INITIAL_VALUE_LOSS = 10.0


def _finite(x: Any) -> float | None:
    """The metric as a float, or None when it is missing or NaN (then no flag fires on it)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _median(window: deque[float]) -> float:
    return statistics.median(window) if window else math.nan


class CollapseMonitor:
    """Per-iteration collapse flags and a trailing-window verdict.

    ``update(metrics)`` takes one iteration's metrics (names of ``metric_names``; missing or NaN
    values raise no flag) and returns ``{"flag_<name>": bool, ..., "verdict": str,
    "verdict_code": int, "ev_trailing": float, "ev_return_trailing": float}``; verdict codes
    index ``VERDICTS`` (-1 while undetermined: until the window holds ``min_evs`` finite
    post-warm-up EVs). ``ev_trailing`` is the median of the window (NaN while it is empty);
    ``ev_return_trailing`` the same window's median of ``explained_variance_return``, reported
    beside it (the verdict is judged on ``explained_variance`` only).
    """

    def __init__(self, window: int = DEFAULT_WINDOW, warmup: int = WARMUP_ITERATIONS) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
        self.window = window
        self.warmup = warmup
        self.iteration = 0
        self.first_value_loss: float | None = None
        self.failure_streak = 0
        self._evs: deque[float] = deque(maxlen=window)
        self._return_evs: deque[float] = deque(maxlen=window)
        self.history: list[dict[str, Any]] = []

    def update(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        self.iteration += 1
        past_warmup = self.iteration > self.warmup
        ev = _finite(metrics.get("explained_variance"))
        if ev is not None and past_warmup:
            self._evs.append(ev)
        ev_return = _finite(metrics.get("explained_variance_return"))
        if ev_return is not None and past_warmup:
            self._return_evs.append(ev_return)
        value_loss = _finite(metrics.get("value_loss"))
        if self.iteration == 1:
            self.first_value_loss = value_loss

        q_spread = _finite(metrics.get("q_spread"))
        return_std = _finite(metrics.get("return_std"))
        clip_ratio = _finite(metrics.get("clip_ratio"))
        kl = _finite(metrics.get("kl"))
        flags = {
            "ev_negative": past_warmup and ev is not None and ev < 0.0,
            "q_spread_collapsed": q_spread is not None and return_std is not None
            and q_spread < Q_SPREAD_REL * return_std,
            "extreme_clipping": clip_ratio is not None and clip_ratio > EXTREME_CLIP_RATIO,
            "kl_stalled": kl is not None and kl < KL_STALLED,
            "high_initial_value_loss": self.first_value_loss is not None
            and self.first_value_loss > HIGH_INITIAL_VALUE_LOSS,
        }
        assert tuple(flags) == COLLAPSE_FLAGS

        ev_trailing = _median(self._evs)
        verdict = self._verdict(ev_trailing) if len(self._evs) >= self.min_evs else UNDETERMINED
        self.failure_streak = self.failure_streak + 1 if verdict == "failure" else 0

        record = {
            **{f"flag_{name}": bool(on) for name, on in flags.items()},
            "verdict": verdict,
            "verdict_code": VERDICTS.index(verdict) if verdict in VERDICTS else -1,
            "ev_trailing": ev_trailing,
            "ev_return_trailing": _median(self._return_evs),
        }
        self.history.append(record)
        return record

    @property
    def min_evs(self) -> int:
        """Post-warm-up EVs the verdict needs: a majority of the window."""
        return self.window // 2 + 1

    @staticmethod
    def _verdict(ev_trailing: float) -> str:
        if ev_trailing < 0.0:
            return "failure"
        return "strong" if ev_trailing > STRONG_EV else "weak"

    @property
    def verdict(self) -> str:
        return self.history[-1]["verdict"] if self.history else UNDETERMINED

    def should_stop(self, patience: int) -> bool:
        """True once the verdict has been ``failure`` for ``patience`` consecutive iterations."""
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        return self.failure_streak >= patience

    def get_state(self) -> dict[str, Any]:
        """Plain (JSON-able) state: enough to continue a restored trial's verdict and history."""
        return {
            "window": self.window,
            "warmup": self.warmup,
            "iteration": self.iteration,
            "first_value_loss": self.first_value_loss,
            "failure_streak": self.failure_streak,
            "evs": list(self._evs),
            "return_evs": list(self._return_evs),
            "history": [dict(r) for r in self.history],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.window, self.warmup = state["window"], state["warmup"]
        self._evs = deque(state["evs"], maxlen=self.window)
        # (absent from checkpoints written before explained_variance_return was logged)
        self._return_evs = deque(state.get("return_evs", []), maxlen=self.window)
        self.iteration = state["iteration"]
        self.first_value_loss = state["first_value_loss"]
        self.failure_streak = state["failure_streak"]
        self.history = [dict(r) for r in state["history"]]
