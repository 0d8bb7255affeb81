"""TensorBoard: Tune's TBX logger (Tune's and RLlib's metrics as ``ray/tune/<key>``, env steps as
the step) without any ``esper`` subtree, our metrics once each as short ``esper/<name>`` tags, the
custom-scalars dashboard (a "Collapse" and a "Policy" section) and an HParams table of every knob
a run used, its profile and its preset, against each trial's summary metrics.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from esper_rllib.ppo import metric_names as mn
from tuning.plan import SweepPlan
from tuning.results import hparams_metrics, load_trial, summarize

# Scalars the HParams view reads its metric columns from (it shows a run's last value of a tag).
SUMMARY_TAG = "summary/{}"
# Top-level tags: the Time Series tab groups cards by what comes before the first "/".
SHORT_TAG = f"{mn.RESULT_KEY}/{{}}"

# TensorBoard's CUSTOM SCALARS tab: section -> chart title -> the metrics it draws together.
DASHBOARD: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "Collapse": {
        "explained variance before / after the update": (mn.EV, mn.EV_POST),
        "explained variance: GAE targets / return-to-go": (mn.EV, mn.EV_RETURN),
        "value loss": (mn.VALUE_LOSS,),
        "clip ratio (pre-clip gradient norm / max_grad_norm)": (mn.CLIP_RATIO,),
        "KL after the update": (mn.KL,),
        "Q-spread (mean, first step)": (mn.Q_SPREAD, mn.Q_SPREAD_START),
        "return and value mean": (mn.RETURN_MEAN, mn.VALUE_MEAN),
        "return and value std": (mn.RETURN_STD, mn.VALUE_STD),
        "advantage std before normalisation": (mn.PRE_NORM_ADVANTAGE_STD,),
    },
    "Policy": {
        "entropy per head (normalised)": mn.HEAD_ENTROPIES,
        "entropy (weighted sum)": (mn.ENTROPY,),
        "op mix (fraction of steps)": mn.OP_FRACTIONS,
        "episode accuracy": (mn.EPISODE_VAL_ACC,),
        "fossils per episode": (mn.EPISODE_FOSSILS,),
    },
}


def tensorboard_command(logdir: object) -> str:
    """``tensorboard --logdir DIR`` that runs as printed: the tensorboard beside this Python (a
    virtual environment's bin/, not on PATH unless it is activated) when it is there."""
    import shlex
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "tensorboard"
    exe = str(beside) if beside.is_file() else (shutil.which("tensorboard") or "tensorboard")
    return f"{shlex.quote(exe)} --logdir {shlex.quote(str(logdir))}"


def tag_pattern(metric: str) -> str:
    """The chart's regex for one metric's short tag (TensorBoard matches from the start only)."""
    return f"{re.escape(SHORT_TAG.format(metric))}$"


def without_ours(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` without any ``esper`` subtree at any depth: the top one is written as
    ``esper/<name>``, and the learners' and env runners' (``learners/<module>/esper``,
    ``env_runners/esper``) are its inputs, already in it or the counters its fractions are
    made of."""
    return {k: without_ours(v) if isinstance(v, Mapping) else v
            for k, v in result.items() if k != mn.RESULT_KEY}


def hparam_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """HParams values as TensorBoard should show them. It prints every number to 5 significant
    digits (64 as 64.000), so integers go as text (shown as written, filtered by value); floats
    stay numbers (filtered by range); tuples and None (which tensorboardX refuses) as text."""
    def value(v: Any) -> Any:
        if isinstance(v, (bool, float, str)):
            return v
        if isinstance(v, int):
            return str(v)
        if isinstance(v, (tuple, list)):
            return ",".join(map(str, v))
        return "none" if v is None else str(v)

    return {k: value(v) for k, v in params.items()}


def sweep_hparams(trial_dir: str | Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep trial's HParams: the sweep's profile, its axes (a preset label included) and
    every knob the trial ran with (a preset's knobs too, which its params do not hold)."""
    try:
        plan = SweepPlan.load(Path(trial_dir).parent)
    except (OSError, ValueError):  # a trial folder outside a sweep folder: its params only
        return dict(params)
    return {"profile": plan.profile, **params, **plan.cell_knobs(params)}


def layout() -> dict[str, dict[str, list]]:
    """DASHBOARD in tensorboardX's add_custom_scalars form."""
    return {section: {title: ["Multiline", [tag_pattern(m) for m in metrics]]
                      for title, metrics in charts.items()}
            for section, charts in DASHBOARD.items()}


class TensorBoardLogger(TBXLoggerCallback):
    """The default TBX logger, plus: the dashboard layout and the ``esper/<name>`` tags in every
    trial's event file, and HParams metrics that are the sweep's summary metrics (final and best
    EV, final value loss, median clip ratio, final accuracy, verdict code) computed over the
    trial's whole history, not its last raw result.
    """

    def __init__(self, hparams: Mapping[str, Any] | None = None) -> None:
        """``hparams``: a `train` run's profile, preset and knobs for the HParams table (a sweep
        trial's come from its params and the sweep's plan)."""
        super().__init__()
        self._hparams = dict(hparams or {})

    def log_trial_start(self, trial: object) -> None:
        super().log_trial_start(trial)
        # Each run's layout is the same: TensorBoard merges them into one dashboard.
        self._trial_writer[trial].add_custom_scalars(layout())

    def log_trial_result(self, iteration: int, trial: object, result: dict) -> None:
        # Our metrics once, as esper/<name>; Tune's logger gets the rest (no ray/tune/**/esper).
        super().log_trial_result(iteration, trial, without_ours(result))
        step = result.get("timesteps_total") or result["training_iteration"]
        writer = self._trial_writer[trial]
        for name, value in result.get(mn.RESULT_KEY, {}).items():
            # Numbers only (the verdict is also there as text), and no NaN, as Tune's own tags.
            if isinstance(value, Real) and not math.isnan(value):
                writer.add_scalar(SHORT_TAG.format(name), value, global_step=step)
        writer.flush()

    def _try_log_hparams(self, trial: object, result: dict) -> None:
        # The trial's result.json (flushed after every result) holds the whole history, also
        # the iterations from before a resume, which this process never saw.
        try:
            record = load_trial(trial.local_path)
        except (OSError, ValueError) as err:  # a trial that died before writing its files
            logging.getLogger(__name__).warning("no HParams for %s: %s", trial, err)
            return
        metrics = {SUMMARY_TAG.format(k): v for k, v in hparams_metrics(summarize(record)).items()}
        step = record.env_steps[-1] if record.env_steps else 0
        writer = self._trial_writer[trial]
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, global_step=step)
        from tensorboardX.summary import hparams

        # trial.path: the trial's folder in the sweep's storage, beside sweep.json (local_path
        # is Tune's staging folder, which has no sweep.json).
        params = (sweep_hparams(trial.path, trial.config) if trial.evaluated_params
                  else self._hparams)
        for summary in hparams(hparam_dict=hparam_values(params), metric_dict=metrics):
            writer.file_writer.add_summary(summary)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        # Tune writes HParams for trials with search-space params only; a `train` run has none.
        if self._hparams and not trial.evaluated_params and self._trial_result.get(trial):
            self._try_log_hparams(trial, {})
        super().log_trial_end(trial, failed)
