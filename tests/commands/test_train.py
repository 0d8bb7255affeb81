"""`esper-rllib train` end to end in a subprocess, and the CLI's handling of bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from envs.datasets import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES
from esper_rllib.cli import main
from esper_rllib.ppo import metric_names as mn
from tests.helpers.cli import run_main
from tests.helpers.tiny_sweep import dashboard, never_defined, unmatched_patterns
from tuning.tensorboard import tag_pattern

TINY = ["--set", "n_train=256", "--set", "n_val=128", "--set", "max_epochs=4",
        "--set", "episodes_per_batch=2", "--set", "lstm_hidden=16", "--set", "feature_dim=16",
        "--set", "head_hidden=16", "--set", "blueprint_head_hidden=16"]


def _cli(*args, timeout=600):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "esper_rllib.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    proc = _cli("train", "--profile", "quick", "--preset", "seed_before", *TINY,
                "--iterations", "2", "--checkpoint-every", "1", "--storage", str(storage),
                "--name", "tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (trial,) = [p for p in (storage / "tiny").iterdir() if p.is_dir()]
    return proc.stdout + proc.stderr, storage, trial


@pytest.mark.ray
def test_train_prints_one_progress_line_per_iteration_and_the_verdict(trained):
    stdout, storage, trial = trained
    lines = [line for line in stdout.splitlines() if line.startswith("iter ")]
    ends = [line for line in lines if " | env steps " in line]
    assert [line[:11] for line in ends] == ["iter   1/2 ", "iter   2/2 "]
    for field in ("env steps", "EV", "value loss", "clip ratio", "kl", "verdict", "ETA"):
        assert field in ends[0]
    # Inside the first iteration, before its line: what it does (sampling_progress).
    assert lines[0].startswith("iter   1/2: ") and lines[0] not in ends, lines
    assert "final verdict:" in stdout
    assert re.search(r"\(over 2 iterations; a verdict needs 8 iterations\); final EV [+-]\S+, "
                     r"against the return-to-go [+-]\S+$", stdout, re.M), stdout
    assert f"tensorboard --logdir {storage / 'tiny'}" in stdout
    assert f"{Path(sys.executable).parent / 'tensorboard'} --logdir" in stdout
    # The trial folder (TensorBoard's run name) is the preset and the seed, not Tune's default.
    assert trial.name == "seed_before,rng_seed=0"


@pytest.mark.ray
def test_console_holds_our_lines_only(trained):
    stdout, _, _ = trained
    # Nothing but the progress lines and the closing summary: no Ray, RLlib or Tune chatter
    # (Tune's tables, the new-API-stack notice, deprecations, checkpoint paths).
    ours = [line for line in stdout.strip().splitlines() if not line.startswith("iter   1/2: ")]
    assert len(ours) == 1 + 2 + 4, stdout
    assert stdout.startswith("value head: depth 2, LayerNorm off, gain 1, value_coef 0.5 "
                             "(preset seed_before)")


@pytest.mark.ray
def test_event_files_hold_every_metric_against_env_steps(trained):
    _, _, trial = trained
    (events,) = trial.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # TensorBoard drops NaN: the trailing EVs are NaN until warm-up ends (after these 2
    # iterations), and PopArt's statistics and the value phase's are NaN with them off.
    expected = set(mn.ALL_METRICS) - {"ev_trailing", "ev_return_trailing",
                                      *mn.OPTIONAL_LEARNER_METRICS}
    missing = [m for m in expected if f"{mn.RESULT_KEY}/{m}" not in tags]
    assert not missing
    # Each of our metrics once: not also as Tune's ray/tune/esper/<name>.
    assert not [t for t in tags if t.startswith(f"ray/tune/{mn.RESULT_KEY}/")]
    # The x axis is env steps: 2 episodes x 4 epochs per iteration.
    steps = [e.step for e in acc.Scalars(f"{mn.RESULT_KEY}/{mn.VALUE_LOSS}")]
    assert steps == [8, 16]
    # HParams: the profile, the preset and every knob against summary metrics.
    hparams = acc.PluginTagToContent("hparams")
    assert set(hparams) == {"_hparams_/experiment", "_hparams_/session_start_info",
                            "_hparams_/session_end_info"}
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["value_head_depth"].string_value == "2"  # integers as integers
    assert start.hparams["value_coef"].number_value == 0.5
    assert start.hparams["preset"].string_value == "seed_before"
    # The dashboard draws the short tags.
    layout, tags = dashboard(events)
    assert [c.title for c in layout.category] == ["Collapse", "Policy"]
    assert unmatched_patterns(layout, tags) <= {tag_pattern(m) for m in never_defined(trial)}


@pytest.mark.ray
def test_final_result_carries_the_verdict_and_checkpoints_exist(trained):
    _, _, trial = trained
    results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert len(results) == 2
    assert results[-1][mn.RESULT_KEY][mn.VERDICT] in (*mn.VERDICTS, "undetermined")
    # Every iteration (--checkpoint-every 1), the last one doubling as the final checkpoint.
    checkpoints = sorted(p.name for p in trial.glob("checkpoint_*"))
    assert checkpoints == ["checkpoint_000000", "checkpoint_000001"]
    assert (trial / "checkpoint_000001" / "rllib_checkpoint.json").is_file()


@pytest.mark.ray
def test_one_gradient_step_per_batch_as_the_reference(trained):
    # The learner batch also holds one bootstrap step per episode; a minibatch size counted in
    # env steps would silently split the batch into two gradient steps.
    _, _, trial = trained
    results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert [r[mn.RESULT_KEY]["gradient_steps"] for r in results] == [1, 1]


@pytest.mark.ray
def test_restore_continues_from_a_checkpoint(trained, tmp_path):
    _, _, trial = trained
    checkpoint = trial / "checkpoint_000001"
    # --name: a new run from the run's checkpoint, with the run's knobs (its run.json).
    proc = _cli("train", "--iterations", "3", "--restore", str(checkpoint), "--storage",
                str(tmp_path), "--name", "resumed")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The restored iteration and env-step counters go on from the checkpoint's 2 and 16.
    (line,) = [line for line in proc.stdout.splitlines() if " | env steps " in line]
    assert line.startswith("iter   3/3 |") and "env steps      24" in line


@pytest.mark.ray
def test_missing_or_truncated_checkpoint_is_one_clear_error(trained, tmp_path, capsys):
    assert main(["train", "--restore", str(tmp_path / "nope"), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such checkpoint directory" in err and "\n" not in err

    _, _, trial = trained
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(trial / "checkpoint_000001"), str(broken)], check=True)
    state = broken / "learner_group" / "learner" / "state.pkl"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert main(["train", "--restore", str(broken), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "learner_group/learner/state.pkl is unreadable" in err and "\n" not in err

    (broken / "algorithm_state.pkl").unlink()
    assert main(["train", "--restore", str(broken), "--storage", str(tmp_path)]) == 2
    assert "missing algorithm_state.pkl" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--set", "lstm_size=64"], "unknown key 'lstm_size'; did you mean 'lstm_hidden'"),
    (["train", "--set", "critic=q"], "critic='q': not allowed; allowed: q_op | v"),
    (["train", "--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    (["train", "--iterations", "0"], "iterations=0: not allowed; allowed: int >= 1"),
    (["train", "--iterations", "x"], "argument --iterations: invalid int value: 'x'"),
    (["check-env", "--set", "n_train=-1"], "n_train=-1: not allowed"),
    (["heuristic", "--seeds", "0"], "--seeds 0: allowed: an int >= 1"),
    (["fly"], "argument COMMAND: invalid choice: 'fly'"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, message, capsys):
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert message in err and "\n" not in err


@pytest.mark.parametrize("command", ["train", "heuristic", "check-env", "knobs"])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: esper-rllib {command}" in capsys.readouterr().out


def test_unwritable_storage_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--storage", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--storage {blocker / 'sub'}: {blocker} is a file, not a folder" in err
    assert "\n" not in err


def test_knobs_lists_every_knob(capsys):
    from esper_rllib.run.config import KNOBS

    assert main(["knobs"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KNOBS)


@pytest.mark.ray
def test_a_failing_run_is_one_line_and_exit_code_1(tmp_path):
    # The CIFAR-10 files are there (the driver's check passes) but unreadable: the env fails
    # inside the trial.
    data = tmp_path / "junk-cifar"
    data.mkdir()
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        (data / name).write_bytes(b"not a pickle")
    proc = _cli("train", *TINY, "--set", "task=cifar_impaired", "--set", f"data_dir={data}",
                "--set", "n_train=512", "--iterations", "1", "--storage", str(tmp_path),
                "--name", "bad")
    assert proc.returncode == 1, proc.stderr[-3000:]
    # The workers' tracebacks stream above it; the one line is whole and the last thing printed.
    lines = proc.stderr.splitlines()
    assert [x for x in lines if "esper-rllib train:" in x] == lines[-1:], proc.stderr[-3000:]
    line = lines[-1]
    assert line.startswith("esper-rllib train: training failed:")
    assert "malformed CIFAR-10 file" in line
    assert "full log:" in line


def test_a_cifar_task_without_data_is_caught_before_ray_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ESPER_DATA_DIR", raising=False)
    storage = tmp_path / "runs"
    assert main(["train", "--set", "task=cifar_impaired", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esper-rllib train: error: data_dir=None (task cifar_impaired): "
                          "no CIFAR-10 directory") and "\n" not in err
    assert "$ESPER_DATA_DIR" in err and "data_batch_1" in err  # what is allowed
    assert not storage.exists()  # nothing written


@pytest.mark.ray
def test_asking_for_gpus_a_local_machine_lacks_is_one_clear_error(tmp_path, capsys):
    # Otherwise the trial would wait forever for a GPU bundle (this machine has none).
    assert main(["train", "--gpus", "1", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("esper-rllib train: error: gpus=1, gpus_per_env_runner=0: the run "
                          "asks for 1 GPUs, the Ray cluster has 0; ") and "--gpus G" in err


ENV_TINY = ["--set", "max_epochs=2", "--set", "n_train=128", "--set", "n_val=64"]


def test_check_env_passes_gymnasiums_checker_and_times_steps(capsys):
    assert main(["check-env", *ENV_TINY, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "gymnasium check_env: passed" in out
    assert "action space: MultiDiscrete([ 6  3 13  4  3  3  4  5])" in out
    assert "step time: mean" in out and out.count("-> reward") == 2


def test_heuristic_prints_each_seed_and_the_mean_per_policy(capsys):
    assert main(["heuristic", *ENV_TINY, "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for policy in ("heuristic", "wait"):
        assert sum(line.startswith(f"{policy:<9} seed ") for line in lines) == 2
        (mean,) = [line for line in lines if line.startswith(f"{policy:<9} mean over 2 seeds")]
        assert "%" in mean


@pytest.mark.ray
def test_evaluate_plays_the_checkpoint_on_its_env_next_to_the_scripted_policies(trained,
                                                                                tmp_path):
    _, _, trial = trained
    checkpoint = str(trial / "checkpoint_000001")
    args = ["evaluate", checkpoint, "--episodes", "2", "--greedy", "--oracle", "conv_light@r0c1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    # Again in a process of its own, as a user runs it: its console holds no RLlib notice about
    # building a module from its checkpoint.
    proc = _cli(*args, "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RLModule(config=" not in proc.stdout + proc.stderr
    first, second = (json.loads((tmp_path / out / "evaluation.json").read_text())
                     for out in ("a", "b"))
    assert first["meta"]["env_config"]["n_train"] == 256, "the env the run trained on"
    assert first["meta"]["seeds"] == [500_000, 500_001], "held-out seeds"
    assert set(first["policies"]) == {"trained", "wait", "random", "heuristic", "oracle",
                                      "oracle_hold"}
    trained_policy = first["policies"]["trained"]
    assert len(trained_policy["episodes"]) == 2
    assert sum(trained_policy["op_mix"].values()) == pytest.approx(1.0)
    assert trained_policy == second["policies"]["trained"], "greedy evaluation is reproducible"
    assert "| trained |" in (tmp_path / "a" / "evaluation.md").read_text()


def test_evaluate_rejects_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--episodes", "2"]) == 2
    assert "checkpoint" in capsys.readouterr().err
