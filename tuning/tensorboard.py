"""TensorBoard: Tune's TBX logger (every metric as ``ray/tune/<key>``, env steps as the step),
with an HParams table of the swept axes against each trial's summary metrics.
"""

from __future__ import annotations

import logging

from ray.tune.logger import TBXLoggerCallback

from tuning.results import hparams_metrics, load_trial, summarize

# Scalars the HParams view reads its metric columns from (it shows a run's last value of a tag).
SUMMARY_TAG = "summary/{}"


class HParamsLogger(TBXLoggerCallback):
    """The default TBX logger, except that the HParams metrics are the sweep's summary metrics
    (final and best EV, final value loss, median clip ratio, final accuracy, verdict code)
    computed over the trial's whole history, not its last raw result.
    """

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
        super()._try_log_hparams(trial, metrics)
