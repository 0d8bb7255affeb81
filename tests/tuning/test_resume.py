"""An interrupted sweep, resumed with --resume, finishes every trial exactly once."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from esper_rllib.run.config import resolve_knobs
from tests.helpers.tiny_sweep import cli, env, run_cli, tiny_args
from tuning.plan import plan_sweep
from tuning.results import read_ablation_csv, read_results, trial_dirs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

ITERATIONS = 3
# 4 trials, one at a time, so some finish before the interrupt and some do not.
GRID = ["--grid", "value_head_gain=0.01", "--grid", "value_head_depth=2,4",
        "--grid", "value_coef=1.0", "--seeds", "2", "--max-concurrent", "1"]


def finished(trial: Path) -> bool:
    # Checkpoints are written every iteration straight into the trial folder.
    return (trial / f"checkpoint_{ITERATIONS - 1:06d}").is_dir()


def test_interrupted_sweep_resumes_every_trial_exactly_once(tmp_path):
    name = "resume-me"
    experiment = tmp_path / name
    args = ["ablate", "--storage", str(tmp_path), "--name", name, "--reference-episodes", "0",
            *GRID, *tiny_args(iterations=ITERATIONS)]
    first = subprocess.Popen(cli(*args), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while sum(finished(t) for t in trial_dirs(experiment)) < 2:
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # what Ctrl-C does
    output, _ = first.communicate(timeout=120)
    assert first.returncode != 0, output[-3000:]
    assert "--resume" in output

    done_before = {t.name: (t / "result.json").read_text()
                   for t in trial_dirs(experiment) if finished(t)}
    assert 2 <= len(done_before) < 4

    resumed = run_cli("ablate", "--resume", "--storage", str(tmp_path), "--name", name)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    trials = trial_dirs(experiment)
    assert len(trials) == 4  # no trial restarted under a new folder
    for trial in trials:
        iterations = [r["training_iteration"] for r in read_results(trial)]
        assert iterations == list(range(1, ITERATIONS + 1)), (trial.name, iterations)
    for name_, text in done_before.items():
        # A trial that had finished was not run again.
        assert (experiment / name_ / "result.json").read_text() == text
    rows = read_ablation_csv(experiment / "ablation.csv")
    assert sorted(r["trial"] for r in rows) == sorted(t.name for t in trials)
    assert all(int(r["iterations"]) == ITERATIONS for r in rows)
    assert sorted((float(r["value_head_depth"]), int(r["rng_seed"])) for r in rows) == [
        (2, 0), (2, 1), (4, 0), (4, 1)]
    assert json.loads((experiment / "sweep.json").read_text())["sweep"] == "value_head"


def test_a_sweep_saved_under_the_old_names_reads_under_the_new(tmp_path):
    # Before the rename the sweep was "seed" and so were its RNG axis and params.json key.
    from tuning.plan import SEED, SweepPlan
    from tuning.results import load_trial

    plan = plan_sweep("value_head", "quick", resolve_knobs, seeds=1)
    saved = json.loads(json.dumps(dataclasses.asdict(plan), default=str))
    saved["sweep"] = "seed"
    saved["axes"] = {("seed" if k == SEED else k): v for k, v in saved["axes"].items()}
    (tmp_path / "sweep.json").write_text(json.dumps(saved))
    loaded = SweepPlan.load(tmp_path)
    assert loaded.sweep == "value_head" and list(loaded.axes)[-1] == SEED
    assert loaded.cell_knobs(next(loaded.trials()))["value_head_layernorm"] is False
    (tmp_path / "ablation.csv").write_text("trial,seed,final_ev\nt,2,0.5\n")
    assert read_ablation_csv(tmp_path / "ablation.csv") == [
        {"trial": "t", SEED: "2", "final_ev": "0.5"}]
    trial = tmp_path / "t"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"seed": 4, "value_coef": 0.5}))
    (trial / "result.json").write_text("")
    assert load_trial(trial).params == {SEED: 4, "value_coef": 0.5}
