"""A real sweep of tiny trials through `esper-rllib ablate`: its console, trial folders named by
their axes, one ablation.csv row per trial with the right axes, the report with every cell, and
TensorBoard's HParams data and dashboard in the event files.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from esper_rllib.analysis import evaluation
from esper_rllib.analysis.evaluation import last_checkpoint
from esper_rllib.cli import main
from tests.helpers.tiny_sweep import (
    dashboard,
    never_defined,
    run_cli,
    tiny_args,
    unmatched_patterns,
)
from tuning.results import HPARAMS_METRICS, read_ablation_csv, trial_dirs
from tuning.tensorboard import SUMMARY_TAG, tag_pattern

# Every test reads one real sweep (the module's fixture), run through `esper-rllib ablate`.
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

AXES = ("value_head_gain", "value_head_depth", "value_coef")
GRID = set(itertools.product((1.0, 0.01), (2, 4), (0.5, 1.0)))
BROKEN, FIX = (1.0, 2, 0.5), (0.01, 4, 1.0)
EVALUATION = "evaluation/evaluation.json"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str]:
    storage = tmp_path_factory.mktemp("sweeps")
    done = run_cli("ablate", "--sweep", "value_head", "--seeds", "1", "--storage", str(storage),
                   "--name", "tiny", "--reference-episodes", "1", "--evaluate-episodes", "2",
                   *tiny_args())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return storage / "tiny", done.stdout + done.stderr


def _events(trial: Path) -> EventAccumulator:
    (path,) = trial.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_ablation_csv_has_one_row_per_trial_with_the_axes(sweep):
    experiment, stdout = sweep
    rows = read_ablation_csv(experiment / "ablation.csv")
    assert len(rows) == 8 == len(trial_dirs(experiment))
    cells = {(float(r["value_head_gain"]), int(r["value_head_depth"]), float(r["value_coef"]))
             for r in rows}
    assert cells == GRID
    for row in rows:
        assert row["rng_seed"] == "0" and row["iterations"] == "2"
        # LayerNorm follows the depth, as in the seed document's presets.
        assert row["value_head_layernorm"] == str(row["value_head_depth"] == "4")
        assert row["verdict"] in ("failure", "weak", "strong", "undetermined")
        assert not math.isnan(float(row["initial_value_loss"]))
        assert not math.isnan(float(row["best_ev"]))
    assert f"tensorboard --logdir {experiment}" in stdout


def test_trial_folders_are_named_by_their_axes(sweep):
    experiment, _ = sweep
    names = {t.name for t in trial_dirs(experiment)}
    assert names == {f"gain={g},depth={d},coef={c},rng_seed=0" for g, d, c in GRID}
    # ablation.csv names each trial the same way.
    assert {r["trial"] for r in read_ablation_csv(experiment / "ablation.csv")} == names


def test_console_shows_one_line_per_trial_result_and_no_ray_chatter(sweep):
    experiment, output = sweep
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("cell "))
    for field in ("seed", "iter", "EV", "verdict", "time", "ETA"):
        assert field in lines[header]
    results = lines[header + 1:header + 1 + 2 * len(GRID)]
    for g, d, c in GRID:  # each trial: iteration 1 then 2, with its seed, EV and verdict
        cell = f"gain={g},depth={d},coef={c} "
        mine = [line.split() for line in results if line.startswith(cell)]
        assert [row[1:3] for row in mine] == [["0", "1/2"], ["0", "2/2"]], results
        assert all(row[4] in ("failure", "weak", "strong", "undetermined") for row in mine)
    assert results[-1].endswith("| 16/16, ETA 0:00")
    assert lines[header + 1 + 2 * len(GRID)].startswith("8 of 8 trials finished, 0 failed")
    for noise in ("on the new API stack", "DeprecationWarning", "RLModule(config=",
                  "Install gputil", "Checkpoint successfully created", "Trial status",
                  "SeedMorphogenesis"):
        assert noise not in output, noise
    assert f"tensorboard --logdir {experiment}" in output


def test_trials_see_our_knob_names_and_the_derived_layernorm_in_the_module(sweep):
    experiment, _ = sweep
    for trial in trial_dirs(experiment):
        params = json.loads((trial / "params.json").read_text())
        assert {*AXES, "rng_seed", "n_train", "max_epochs"} <= set(params)
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        model = last["config"]["_model_config"]
        assert model["value_head_layernorm"] == (params["value_head_depth"] == 4)
        assert model["value_head_gain"] == params["value_head_gain"]


def test_report_renders_every_cell_with_plots_and_references(sweep):
    experiment, _ = sweep
    report = (experiment / "report.md").read_text()
    cell_rows = [line for line in report.splitlines()
                 if line.startswith("| ") and line.count("|") > 10 and "seeds" not in line]
    assert len(cell_rows) == 8
    for gain, depth, coef in GRID:
        assert any(line.startswith(f"| {gain} | {depth} | {coef} | 1 |") for line in cell_rows)
    assert "the broken run" in report and "the seed document's fix" in report
    assert "| heuristic |" in report and "| WAIT-only |" in report
    for axis in AXES:
        assert f"| {axis} |" in report  # a main-effect row per axis
    for name in ("explained_variance", "value_loss", "clip_ratio"):
        png = experiment / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name}.png)" in report


def test_event_files_hold_hparams_of_the_axes_against_summary_metrics(sweep):
    experiment, _ = sweep
    rows = {r["trial"]: r for r in read_ablation_csv(experiment / "ablation.csv")}
    for trial in trial_dirs(experiment):
        acc = _events(trial)
        content = acc.PluginTagToContent("hparams")
        assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                "_hparams_/session_end_info"}
        experiment_info = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/experiment"]).experiment
        # The axes, the profile and every knob the trial ran with.
        assert {*AXES, "rng_seed", "profile", "episodes_per_batch"} <= {
            h.name for h in experiment_info.hparam_infos}
        assert [m.name.tag for m in experiment_info.metric_infos] == [
            SUMMARY_TAG.format(m) for m in HPARAMS_METRICS]
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]).session_start_info
        row = rows[trial.name]
        for axis in AXES:  # integers as text: TensorBoard prints numbers as 2.0000
            shown = start.hparams[axis]
            assert float(shown.string_value or shown.number_value) == pytest.approx(
                float(row[axis]))
        # The metric columns are read from scalars of the same tags; their values are the
        # trial's summary (the same numbers as ablation.csv), at the last env step.
        for metric in HPARAMS_METRICS:
            (event,) = acc.Scalars(SUMMARY_TAG.format(metric))
            expected = float(row[metric])
            assert event.step == int(row["env_steps"])
            assert (math.isnan(expected) and math.isnan(event.value)) or \
                event.value == pytest.approx(expected, rel=1e-5, abs=1e-6)
        # Every iteration's metrics against env steps, once each, under a short top-level tag
        # (not also as Tune's ray/tune/esper/<name>).
        steps = [e.step for e in acc.Scalars("esper/explained_variance")]
        assert len(steps) == 2 and steps[-1] == int(row["env_steps"]) and steps[0] < steps[1]
        assert not [t for t in acc.Tags()["scalars"] if t.startswith("ray/tune/esper/")]


def test_event_files_hold_the_dashboard_and_every_tag_it_draws(sweep):
    experiment, _ = sweep
    for trial in trial_dirs(experiment):
        (events,) = trial.glob("events.out.tfevents.*")
        layout, tags = dashboard(events)
        assert [c.title for c in layout.category] == ["Collapse", "Policy"]
        charts = {chart.title: list(chart.multiline.tag)
                  for c in layout.category for chart in c.chart}
        assert charts["explained variance before / after the update"] == [
            "esper/explained_variance$", "esper/explained_variance_post$"]
        # A chart's metric is missing only in iterations where it had no value (a head that
        # no sampled op used); a metric that does not exist at all would fail here.
        allowed = {tag_pattern(m) for m in never_defined(trial)}
        assert unmatched_patterns(layout, tags) <= allowed


def _cell(trial: Path) -> tuple:
    params = json.loads((trial / "params.json").read_text())
    return tuple(params[a] for a in AXES)


def test_report_evaluates_the_last_checkpoints_of_the_broken_fixed_and_best_cells(sweep):
    experiment, _ = sweep
    report = (experiment / "report.md").read_text()
    (best_row,) = [line for line in report.splitlines() if line.endswith("the best final EV |")
                   and line.startswith("| ")]
    gain, depth, coef = (c.strip() for c in best_row.split("|")[1:4])
    best = (float(gain), int(depth), float(coef))
    evaluated = {}
    for trial in trial_dirs(experiment):
        path = trial / EVALUATION
        assert path.is_file() == (_cell(trial) in {BROKEN, FIX, best}), trial.name
        if path.is_file():
            evaluated[_cell(trial)] = result = json.loads(path.read_text())
            assert result["meta"]["checkpoint"].endswith(last_checkpoint(trial).name)
            assert last_checkpoint(trial).name == "checkpoint_000001"  # the last of two
            assert result["meta"]["seeds"] == [500_000, 500_001]
            assert result["meta"]["env_config"]["n_train"] == 128  # the sweep's own env
    # The scripted policies' episodes are the same for every trial.
    scripted = [{k: v["episodes"] for k, v in r["policies"].items() if k != "trained"}
                for r in evaluated.values()]
    assert all(s == scripted[0] for s in scripted)
    table = report.split("## Trained policies against WAIT, the heuristic and the oracle")[1]
    trained = evaluated[BROKEN]["policies"]["trained"]["episodes"]
    mean = sum(e["final_acc"] for e in trained) / len(trained)
    (row,) = [line for line in table.splitlines() if line.startswith("| trained: the broken run")]
    assert f"| 1 x 2 | {mean:.2f} [" in row
    for name in ("| WAIT | 2 |", "| heuristic | 2 |", "| oracle ("):
        assert name in table


def test_evaluations_of_one_experiment_play_the_scripted_policies_once(sweep, monkeypatch,
                                                                      tmp_path):
    """Once per process, and once per machine: a later process (a sweep's next slice) reads the
    scripted episodes from the cache, the same to the digit."""
    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path))
    experiment, _ = sweep
    played = []
    real = evaluation.play_policies

    def recording(make_env, policies, **kwargs):
        played.extend(policies)
        return real(make_env, policies, **kwargs)

    monkeypatch.setattr(evaluation, "play_policies", recording)
    scripted = evaluation.ScriptedEpisodes()
    first, second = (evaluation.evaluate(last_checkpoint(trial), episodes=2, greedy=True,
                                               first_seed=7, scripted=scripted)
                     for trial in trial_dirs(experiment)[:2])
    assert sorted(played) == sorted(["trained", "trained", "wait", "random", "heuristic",
                                     "oracle", "oracle_hold"])
    assert first["policies"]["wait"] == second["policies"]["wait"]
    assert first["meta"]["seeds"] == second["meta"]["seeds"] == [7, 8]
    played.clear()
    later = evaluation.evaluate(last_checkpoint(trial_dirs(experiment)[0]), episodes=2,
                                greedy=True, first_seed=7,
                                scripted=evaluation.ScriptedEpisodes())
    assert played == ["trained"]
    for name in ("wait", "random", "heuristic", "oracle"):
        assert later["policies"][name] == first["policies"][name]
    assert len(list((tmp_path / "scripted").glob("*.pkl"))) == 1


def test_report_command_rewrites_the_report_and_postmortem_prints_the_tables(sweep, capsys):
    experiment, _ = sweep
    (experiment / "report.md").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in experiment.glob(f"*/{EVALUATION}")}
    assert main(["report", str(experiment), "--evaluate-episodes", "2", "--signal-seeds",
                 "2"]) == 0
    report = (experiment / "report.md").read_text()
    assert stamps and stamps == {p: p.stat().st_mtime_ns for p in stamps}  # reused
    # No signal.json was there: measured on the sweep's env and read.
    assert json.loads((experiment / "signal.json").read_text())["meta"]["max_epochs"] == 3
    assert f"(`{experiment / 'signal.json'}`, reward" in report
    # A unique part of a trial's name picks it.
    assert main(["report", str(experiment), "--postmortem", "gain=0.01,depth=4,coef=0.5"]) == 0
    out = capsys.readouterr().out
    for heading in ("PPO update progression", "Operation distribution", "Advantage statistics",
                    "KL divergence", "Reward distribution", "Collapse flags and verdict"):
        assert heading in out
    assert "| 1 |" in out and "| 2 |" in out  # iterations 1 and 2 (nearest to 1, 5, 10, ...)
