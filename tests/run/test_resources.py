"""Resources as users meet them (issue 26): the batch64 profile samples on both cores of a 2-core
machine; asking for more CPUs or GPUs than the Ray cluster has is one line and exit 2 before
anything starts (train, ablate, record, critic-fit); Ctrl-C in `train` exits 130 with its
checkpoint; the `learn` sweep plans its cells from presets; `make bench`'s sampling benchmark
runs to its end.

The seed document: docs/seed-document.md."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esper_rllib.cli import main
from esper_rllib.run.config import PRESETS, build_ppo_config, resolve_knobs
from esper_rllib.run.preflight import asked_resources
from tests.helpers import REPO
from tests.helpers.tiny_sweep import cli, env, tiny_args
from tuning.plan import plan_sweep

# More CPUs than any machine running the tests has (Ray counts at most os.cpu_count()).
TOO_MANY = (os.cpu_count() or 1) + 1
# Before the resource preflight these runs waited forever for the CPUs they asked for.
HANGS_TODAY = pytest.mark.timeout(300)


def test_batch64_is_quicks_env_at_the_seed_documents_batch_on_two_cpus():
    knobs = resolve_knobs("batch64", "seed_after")
    quick = resolve_knobs("quick")
    for name in ("task", "n_train", "max_epochs", "lstm_hidden", "reward"):
        assert knobs[name] == quick[name], name
    assert knobs["episodes_per_batch"] == 64 and knobs["iterations"] >= 16
    assert knobs["episodes_per_batch"] * knobs["iterations"] >= 1024
    assert (knobs["num_epochs"], knobs["minibatches"], knobs["lr"]) == (4, 4, 3e-4)
    assert knobs["checkpoint_every"] >= 1
    # Two env runners, each one stacked env of half the batch.
    assert (knobs["num_env_runners"], knobs["num_envs_per_env_runner"],
            knobs["gym_env_vectorize_mode"]) == (2, 32, "vector_entry_point")
    # ... on 2 CPUs: the trainer reserves none while the runners sample (today it asked for a
    # third and waited for it forever on a 2-CPU machine).
    config = build_ppo_config(knobs)
    assert asked_resources(config) == {"CPU": 2.0, "GPU": 0.0}
    # Sampling in the trainer (quick) keeps its one CPU.
    assert asked_resources(build_ppo_config(quick)) == {"CPU": 1.0, "GPU": 0.0}


def _last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.mark.ray
@HANGS_TODAY
def test_train_asking_for_more_cpus_than_the_cluster_has_is_one_line(tmp_path, capsys):
    # Otherwise the trial waits forever, with Ray's "insufficient resources" warning a minute.
    n = TOO_MANY
    code = main(["train", *tiny_args(num_env_runners=n, episodes_per_batch=n),
                 "--storage", str(tmp_path)])
    line = _last_line(capsys)
    assert code == 2, line
    assert line.startswith(f"esper-rllib train: error: num_env_runners={n}: the run asks for "
                           f"{n} CPUs, the Ray cluster has ")
    assert "allowed: num_env_runners <= " in line


@pytest.mark.ray
@HANGS_TODAY
def test_ablate_asking_for_more_cpus_than_the_cluster_has_is_one_line(tmp_path, capsys):
    n = TOO_MANY
    code = main(["ablate", "--sweep", "value_head", "--grid", "value_head_gain=1.0",
                 "--grid", "value_head_depth=2", "--grid", "value_coef=0.5", "--seeds", "1",
                 *tiny_args(num_env_runners=n, episodes_per_batch=n),
                 "--storage", str(tmp_path), "--name", "too-many"])
    line = _last_line(capsys)
    assert code == 2, line
    assert line.startswith(f"esper-rllib ablate: error: num_env_runners={n}: each trial asks "
                           f"for {n} CPUs, the Ray cluster has ")
    assert not (tmp_path / "too-many").exists()  # nothing started


@pytest.fixture
def one_cpu_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.ray
@HANGS_TODAY
def test_record_asking_for_more_workers_than_cpus_is_one_line(tmp_path, capsys, one_cpu_ray):
    # Today the second worker waits forever for a CPU the first one holds.
    out = tmp_path / "rec"
    code = main(["record", "--policy", "random", "--episodes", "2", "--workers", "2",
                 *tiny_args(), "--out", str(out)])
    line = _last_line(capsys)
    assert code == 2, line
    assert line == ("esper-rllib record: error: --workers 2: record (2 workers, 1 CPU each) "
                    "asks for 2 CPUs, the Ray cluster has 1; allowed: --workers up to the "
                    "cluster's CPUs, or leave it out (a worker per CPU)")


@pytest.mark.ray
@HANGS_TODAY
def test_critic_fit_on_a_ray_without_cpus_is_one_line(tmp_path, capsys):
    import ray

    from esper_rllib.offline.record import plan_recording, record
    from esper_rllib.run.config import parse_set

    data, out = tmp_path / "rec", tmp_path / "fit"
    ray.init(num_cpus=1, include_dashboard=False)
    try:  # a recording made on a Ray with a CPU ...
        record(plan_recording("quick", parse_set(tiny_args(max_epochs=2)[1::2]), "random", 8,
                              0), data)
    finally:
        ray.shutdown()
    ray.init(num_cpus=0, include_dashboard=False)
    try:  # ... fitted on one without: today each trial waits forever for a CPU
        code = main(["critic-fit", str(data), "--steps", "2", "--seeds", "1",
                     "--train-episodes", "all", "--out", str(out)])
    finally:
        ray.shutdown()
    line = _last_line(capsys)
    assert code == 2, line
    assert line.startswith("esper-rllib critic-fit: error: critic-fit: each trial asks for 1 "
                           "CPUs, the Ray cluster has 0; ")
    assert not out.exists()


@pytest.mark.ray
def test_interrupted_train_exits_130_with_its_checkpoint(tmp_path):
    proc = subprocess.Popen(cli("train", *tiny_args(iterations=200), "--storage", str(tmp_path),
                                "--name", "stop-me"),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("stop-me/*/checkpoint_000001")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C does
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    (line,) = [x for x in output.splitlines() if x.startswith("interrupted in iteration")]
    path = line.split("): ")[1]  # "...; last checkpoint (iteration N): PATH"
    assert Path(path).is_dir() and Path(path).name.startswith("checkpoint_"), line
    assert f"continue the run with: esper-rllib train --restore {path}" in output


def test_learn_sweep_sets_each_cell_from_its_preset():
    # Any presets as the axis: here the seed document's two heads.
    plan = plan_sweep("learn", "batch64", resolve_knobs, seeds=3,
                      grid={"preset": ["seed_before", "seed_after"]})
    assert plan.n_trials == 6 and plan.cell_axes == ["preset"] and plan.labels == ["preset"]
    trials = list(plan.trials())
    for trial in trials:
        knobs = plan.cell_knobs(trial)
        preset = PRESETS[trial["preset"]]
        assert {k: knobs[k] for k in preset} == preset
        assert "preset" not in knobs
        # What a trial runs is in ablation.csv's columns; its params hold none of it.
        assert all(k not in plan.param_space() for k in preset)
        assert {k: plan.columns(trial)[k] for k in preset} == preset
        resolve_knobs("batch64", overrides=knobs)  # a valid trial
    assert plan.base["episodes_per_batch"] == 64 and plan.base["num_env_runners"] == 2


def test_learn_sweep_sets_the_critic_fix_cell_from_the_preset():
    plan = plan_sweep("learn", "batch64", resolve_knobs, seeds=3)
    assert plan.axes["preset"] == ["seed_after", "critic_fix"] and plan.n_trials == 6
    fix = next(plan.cell_knobs(t) for t in plan.trials() if t["preset"] == "critic_fix")
    assert {k: fix[k] for k in PRESETS["critic_fix"]} == PRESETS["critic_fix"]


def test_a_sweep_whose_preset_axis_names_an_unknown_preset_is_one_line():
    with pytest.raises(ValueError) as err:
        plan_sweep("learn", "batch64", resolve_knobs, seeds=3,
                   grid={"preset": ["seed_after", "critic_fixx"]})
    assert str(err.value).startswith("sweep learn, axis preset: unknown preset 'critic_fixx'")
    assert "\n" not in str(err.value)


def test_learn_reports_evaluate_every_cell_on_32_held_out_seeds(tmp_path):
    from esper_rllib.analysis.evaluation import sweep_evaluate_episodes
    from esper_rllib.analysis.sweep import Sweep

    plan = plan_sweep("learn", "batch64", resolve_knobs, seeds=1,
                      grid={"preset": ["seed_before", "seed_after"]})
    assert sweep_evaluate_episodes(Sweep(tmp_path, plan, ["preset"], [], [])) == 32
    seed = plan_sweep("value_head", "quick", resolve_knobs, seeds=1)
    assert sweep_evaluate_episodes(Sweep(tmp_path, seed, seed.cell_axes, [], [])) == 0


def test_sampling_benchmark_runs_to_its_end():
    # `make bench` runs it on the stacked quick env; its replay diverged from the runner's.
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_sampling.py"), "--profile", "quick",
         "--n-train", "256", "--max-epochs", "6", "--steps", "6", "--rounds", "1"],
        env=env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("ratio=")
