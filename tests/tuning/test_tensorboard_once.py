"""TensorBoard once: each metric under one tag (no `ray/tune/**/esper` copy of `esper/*`), and
HParams with the run's profile, preset and every knob, integers written as integers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from esper_rllib.ppo import metric_names as mn
from esper_rllib.run.config import resolve_knobs
from tuning.plan import plan_sweep
from tuning.tensorboard import TensorBoardLogger


class _Trial:
    """What the logger reads of a Tune trial."""

    def __init__(self, path: Path, config: dict, evaluated_params: dict,
                 staging: Path | None = None) -> None:
        # Tune writes the event files into a staging folder (local_path) and syncs them to the
        # trial's folder in the storage (path), where sweep.json is.
        self.path, self.local_path = str(path), str(staging or path)
        self.config = config
        self.evaluated_params = evaluated_params

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


# A result as RLlib and our callbacks shape it: our metrics at the top, their inputs nested.
RESULT = {
    "training_iteration": 1, "timesteps_total": 160,
    mn.RESULT_KEY: {mn.EV: 0.25, mn.VALUE_LOSS: 0.5, mn.VERDICT: "undetermined"},
    "learners": {"default_policy": {mn.RESULT_KEY: {mn.EV: 0.25, mn.VALUE_LOSS: 0.5},
                                    "curr_entropy_coeff": 0.05}},
    "env_runners": {mn.RESULT_KEY: {"steps": 160, "reward_sum": 3.0},
                    "episode_return_mean": 1.5},
}


def _run(trial: _Trial, hparams: dict | None = None) -> tuple[set[str], dict]:
    logger = TensorBoardLogger(hparams=hparams)
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, RESULT)
    path = Path(trial.local_path)
    (path / "params.json").write_text(json.dumps(trial.config))
    (path / "result.json").write_text(json.dumps(RESULT) + "\n")
    logger.log_trial_end(trial)  # HParams are written when the trial ends
    (events,) = path.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    return set(acc.Tags()["scalars"]), dict(start.hparams)


def _shown(value) -> object:
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


def test_each_metric_once_and_a_train_runs_every_knob_in_hparams(tmp_path):
    knobs = resolve_knobs("batch64", "learning_agent")
    trial = _Trial(tmp_path / "learning_agent,rng_seed=0", {}, {})
    tags, hparams = _run(trial, {"profile": "batch64", "preset": "learning_agent", **knobs})
    assert {f"esper/{mn.EV}", f"esper/{mn.VALUE_LOSS}"} <= tags
    assert {"ray/tune/learners/default_policy/curr_entropy_coeff",
            "ray/tune/env_runners/episode_return_mean"} <= tags
    assert [t for t in tags if "/esper/" in t or t.endswith("/esper")] == []
    shown = {k: _shown(v) for k, v in hparams.items()}
    assert set(knobs) <= set(shown)
    assert (shown["profile"], shown["preset"], shown["feature_norm"], shown["reward"]) \
        == ("batch64", "learning_agent", "robust", "shaped")
    # Integers as written (TensorBoard prints numbers as 64.000); floats stay numbers.
    assert (shown["episodes_per_batch"], shown["critic_feature_bins"], shown["rng_seed"]) \
        == ("64", "8", "0")
    assert shown["critic_dropout"] == pytest.approx(0.2) and shown["lr"] == pytest.approx(1e-3)
    assert shown["blueprint_head_hidden"] == "64,32" and shown["data_dir"] == "none"


def test_a_sweep_trials_hparams_hold_its_profile_and_its_presets_knobs(tmp_path):
    plan = plan_sweep("learn", "batch64", resolve_knobs, seeds=1)
    plan.save(tmp_path)
    params = [p for p in plan.trials() if p["preset"] == "critic_fix"][0]
    trial = _Trial(tmp_path / plan.trial_label(params), params,
                   {"preset": "critic_fix", "rng_seed": 0},
                   staging=tmp_path / "staging" / "driver_artifacts" / plan.trial_label(params))
    _, hparams = _run(trial)
    shown = {k: _shown(v) for k, v in hparams.items()}
    assert (shown["profile"], shown["preset"], shown["critic_feature_bins"],
            shown["episodes_per_batch"], shown["value_head_depth"]) \
        == ("batch64", "critic_fix", "8", "64", "2")
    assert shown["critic_dropout"] == pytest.approx(0.2)
