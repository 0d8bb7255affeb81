"""Runs a user can trust (issue 36): one process writes a run folder (two runs started together
get folders of their own; a folder in use or taken is refused in one line), `train --restore`
continues a run in its own folder with its env streams, Ctrl-C prints this CLI's resume command,
refusals come before Ray starts and write nothing, and `train` talks inside its first
iteration. The tests without the `ray` marker prove that no Ray started (tests/conftest.py fails
a test that starts one without it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from esper_rllib.run.run_folder import RUN_FILE, check_checkpoint, find_run
from tuning.storage import claim_folder

ESPER = str(Path(sys.executable).parent / "esper-rllib")
# Probe 2: a real RLlib pipeline, 1-step episodes whose reward is the observation's signal, a
# uniform draw from the env's random stream: the batch's return mean is a fingerprint of the
# env seeds it played, whatever the policy did.
PROBE = ["--set", "env=esper/Probe2-v0", "--set", "episodes_per_batch=4"]


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def _esper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ESPER, *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([ESPER, *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _iterations(trial: Path) -> list[int]:
    return [json.loads(line)["training_iteration"]
            for line in (trial / "result.json").read_text().splitlines()]


def _return_means(trial: Path) -> list[float]:
    return [json.loads(line)["esper"]["return_mean"]
            for line in (trial / "result.json").read_text().splitlines()]


def _one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


# --- one process per run folder -----------------------------------------------------------

@pytest.mark.ray
def test_two_runs_started_together_get_folders_of_their_own(tmp_path):
    storage = tmp_path / "runs"
    runs = [_start("train", *PROBE, "--iterations", "1", "--storage", str(storage))
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folders = sorted(storage.iterdir())
    assert len(folders) == 2, folders  # e.g. train-<time> and train-<time>-2
    for folder in folders:
        (trial,) = [p for p in folder.iterdir() if p.is_dir()]
        assert _iterations(trial) == [1]
        assert len(list(trial.glob("events.out.tfevents.*"))) == 1
        assert [p.name for p in trial.glob("checkpoint_*")] == ["checkpoint_000000"]
    printed = {line for out in outputs for line in out.splitlines()
               if line.startswith("trial directory")}
    assert len(printed) == 2, outputs


def test_a_folder_another_process_holds_is_refused_in_one_line(tmp_path):
    # This test's process holds the folder as a running `train` or `ablate` would.
    held = claim_folder(tmp_path / "busy", "--name busy")
    try:
        for argv in (["train", *PROBE, "--name", "busy"],
                     ["ablate", *PROBE, "--seeds", "1", "--name", "busy"]):
            proc = _esper(*argv, "--storage", str(tmp_path))
            _one_line(proc, "--name busy", "in use by another esper-rllib process",
                      f"pid {os.getpid()}")
        assert list(held.path.iterdir()) == []  # nothing written into it
    finally:
        held.release()


def test_evaluate_and_record_outputs_in_use_are_refused_in_one_line(tmp_path, capsys):
    from tests.helpers.cli import run_main

    checkpoint = Path(__file__).parents[1] / "data" / "checkpoint"
    held = claim_folder(tmp_path / "out", "--out")
    try:
        for argv in (["evaluate", str(checkpoint), "--episodes", "2"],
                     ["record", *PROBE, "--episodes", "1"]):
            code, _, err = run_main([*argv, "--out", str(held.path)], capsys)
            assert code == 2 and "in use by another esper-rllib process" in err, err
            assert "\n" not in err
        assert list(held.path.iterdir()) == []
    finally:
        held.release()


def test_default_names_taken_in_the_same_second_get_a_suffix(tmp_path):
    from tuning.storage import claim_new_folder

    first = claim_new_folder(tmp_path, "train-20261208-010203")
    second = claim_new_folder(tmp_path, "train-20261208-010203")
    (tmp_path / "train-20261208-010203-3").mkdir()  # a run's folder, no one holds it
    (tmp_path / "train-20261208-010203-3" / "run.json").write_text("{}")
    third = claim_new_folder(tmp_path, "train-20261208-010203")
    assert [f.path.name for f in (first, second, third)] == [
        "train-20261208-010203", "train-20261208-010203-2", "train-20261208-010203-4"]
    for folder in (first, second, third):
        folder.release(remove_if_empty=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-20261208-010203-3"]


def test_a_folder_that_holds_a_run_is_never_written_into(tmp_path):
    taken = tmp_path / "taken"
    (taken / "rng_seed=0").mkdir(parents=True)
    (taken / "rng_seed=0" / "result.json").write_text("{}\n")
    before = sorted(p.relative_to(taken) for p in taken.rglob("*"))
    proc = _esper("train", *PROBE, "--storage", str(tmp_path), "--name", "taken")
    _one_line(proc, "--name taken", "already holds a run", "--restore")
    proc = _esper("ablate", *PROBE, "--seeds", "1", "--storage", str(tmp_path), "--name", "taken")
    _one_line(proc, "--name taken", "already holds files")
    assert sorted(p.relative_to(taken) for p in taken.rglob("*")) == before


# --- refused before Ray, writing nothing -----------------------------------------------------

@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--restore", "{tmp}/nope"], ["--restore", "no such checkpoint directory"]),
    (["train", "--gpus", "1"], ["gpus=1", "asks for 1 GPUs", "has 0", "--gpus G"]),

    (["ablate", "--seeds", "1", "--gpus-per-trial", "1"], ["asks for 1 GPUs", "has 0"]),
    (["train", "--storage", "/sys/runs"], ["--storage /sys/runs",
                                                    "cannot create folders"]),
    (["report", "{tmp}"], ["no trial folders"]),
])
def test_refusals_come_before_ray_and_write_nothing(tmp_path, argv, words):
    if "asks for 1 GPUs" in words and not _has_no_gpu():
        pytest.skip("asks this machine for a GPU it lacks")
    storage = tmp_path / "runs"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--storage" not in argv and argv[0] != "report":
        argv += ["--storage", str(storage)]
    start = time.monotonic()
    proc = _esper(*argv)
    took = time.monotonic() - start
    _one_line(proc, *words)
    assert not storage.exists()  # not even an empty storage folder
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # Without Ray (the marker guard) and so in seconds, not the half minute Ray took.
    print(f"{' '.join(argv[:2])}: refused in {took:.1f} s")


def _has_no_gpu() -> bool:
    from tuning.local_ray import local_resources

    return local_resources().get("GPU", 0) == 0


# --- a restore continues the run --------------------------------------------------------------

@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """A 2-iteration Probe 2 run with a checkpoint each iteration and a remote env runner (the
    envs live in another process than the trainer's, as on batch64)."""
    storage = tmp_path_factory.mktemp("probe")
    proc = _esper("train", *PROBE, "--set", "num_env_runners=1", "--iterations", "2",
                  "--checkpoint-every", "1", "--storage", str(storage), "--name", "run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "run"


@pytest.mark.ray
def test_a_restore_continues_the_run_in_its_own_folder(probe_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(probe_run, run)
    (trial,) = [p for p in run.iterdir() if p.is_dir()]
    before = (trial / "result.json").read_text()
    proc = _esper("train", "--restore", str(trial / "checkpoint_000001"), "--iterations", "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "iter   3/3 |" in proc.stdout
    # The same folder: nothing new beside it, one TensorBoard run (two event files in it),
    # the iteration count and the checkpoint numbers carried on, the history kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == sorted([RUN_FILE, trial.name])
    assert len(list(trial.glob("events.out.tfevents.*"))) == 2
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
        "checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    assert _iterations(trial) == [1, 2, 3]
    assert (trial / "result.json").read_text().startswith(before)
    # Its knobs are the run's (run.json), not the CLI's defaults.
    assert json.loads((trial / "params.json").read_text())["env"] == "envs:esper/Probe2-v0"


def _stored_run(root: Path, checkpoints: int) -> Path:
    """A `train` run's folder as the CLI writes it, its checkpoints copies of a real one (at
    iteration 1)."""
    import shutil

    trial = root / "run" / "rng_seed=0"
    for index in range(checkpoints):
        shutil.copytree(Path(__file__).parents[1] / "data" / "checkpoint",
                        trial / f"checkpoint_{index:06d}")
    (root / "run" / RUN_FILE).write_text(json.dumps(
        {"profile": "quick", "preset": None, "set": [], "options": {"iterations": 1}}))
    return trial


def test_only_a_runs_newest_checkpoint_continues_it_and_only_with_iterations_to_go(tmp_path,
                                                                                   capsys):
    from tests.helpers.cli import run_main

    trial = _stored_run(tmp_path, 2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_main(["train", "--restore", str(trial / "checkpoint_000000"),
                             "--iterations", "4"], capsys)
    assert code == 2 and "not the run's newest checkpoint" in err and "--name NEW" in err
    assert str(trial / "checkpoint_000001") in err and "\n" not in err
    code, _, err = run_main(["train", "--restore", str(trial / "checkpoint_000001")], capsys)
    assert code == 2 and "\n" not in err
    assert "holds 1 iterations, the run trains 1: nothing to continue" in err
    code, _, err = run_main(["train", "--restore", str(trial / "checkpoint_000001"),
                             "--preset", "seed_after", "--iterations", "4"], capsys)
    assert code == 2 and "--preset seed_after: the run of" in err and "with no --preset" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.ray
def test_a_restored_run_plays_the_env_seeds_an_uninterrupted_one_plays(probe_run, tmp_path):
    (trial,) = [p for p in probe_run.iterdir() if p.is_dir()]
    # Interrupted after iteration 1, started again from its checkpoint as a run of its own.
    proc = _esper("train", "--restore", str(trial / "checkpoint_000000"), "--iterations", "2",
                  "--storage", str(tmp_path), "--name", "again")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (again,) = [p for p in (tmp_path / "again").iterdir() if p.is_dir()]
    first, second = _return_means(trial)
    (resumed,) = _return_means(again)[-1:]
    print(f"uninterrupted: {first:.6f}, {second:.6f}; resumed at iteration 2: {resumed:.6f}")
    assert resumed != pytest.approx(first, abs=1e-4)  # not the run's first episodes again
    assert resumed == pytest.approx(second, abs=1e-6)  # the episodes iteration 2 played


# --- Ctrl-C -------------------------------------------------------------------------------------

class _Console:
    """A command's output, line by line with the time each arrived."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines, self.start = proc, [], time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, prefix: str, timeout: float = 240) -> float:
        deadline = time.monotonic() + timeout
        while True:
            hit = [t for t, line in self.lines if line.startswith(prefix)]
            if hit:
                return hit[0]
            text = "\n".join(line for _, line in self.lines)[-3000:]
            assert self.proc.poll() is None, f"ended before {prefix!r}:\n{text}"
            assert time.monotonic() < deadline, f"no line {prefix!r} in {timeout} s:\n{text}"
            time.sleep(0.05)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.mark.ray
def test_ctrl_c_prints_this_clis_resume_command_at_once(tmp_path):
    storage = tmp_path / "runs"
    console = _Console(_start("train", *PROBE, "--iterations", "100000", "--checkpoint-every",
                              "2", "--storage", str(storage), "--name", "stopped"))
    try:
        console.wait_for("iter   3/")
        sent = time.monotonic()
        console.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        told = console.wait_for("continue the run with: ", timeout=30)
        rc = console.proc.wait(timeout=60)
        ended = time.monotonic()
    finally:
        if console.proc.poll() is None:
            os.killpg(console.proc.pid, signal.SIGKILL)
    text = console.text()
    print(f"Ctrl-C output ({told - sent:.1f} s to the resume command, exit after "
          f"{ended - sent:.1f} s):\n" + text[text.index("interrupted"):])
    assert rc == 130
    assert told - sent < 5
    assert "Tuner.restore" not in text and "Traceback" not in text and "WARNING" not in text
    (line,) = [x for x in text.splitlines() if x.startswith("continue the run with: ")]
    checkpoint = Path(line.split("--restore ")[1])
    assert line == f"continue the run with: esper-rllib train --restore {checkpoint}"
    # The command works as printed: its checkpoint is whole and the run's newest, and the run
    # folder holds nothing a later run trips on (Tune's own resume files, a half checkpoint).
    restored = find_run(check_checkpoint(checkpoint), "--restore")
    assert restored is not None and restored.checkpoint == checkpoint
    assert sorted(p.name for p in (storage / "stopped").iterdir()) == sorted([RUN_FILE,
                                                                               "rng_seed=0"])
    assert [p.name for p in checkpoint.parent.glob("checkpoint_*")] == [checkpoint.name]
    assert not list(storage.glob(".*.lock"))


@pytest.mark.ray
def test_ctrl_c_of_a_sweep_prints_its_resume_command_at_once(tmp_path):
    console = _Console(_start("ablate", *PROBE, "--seeds", "2", "--max-concurrent", "1",
                              "--set", "iterations=100000", "--set", "checkpoint_every=5",
                              "--reference-episodes", "0", "--storage", str(tmp_path),
                              "--name", "sweep"))
    try:
        console.wait_for("gain=")  # the first trial result
        sent = time.monotonic()
        console.proc.send_signal(signal.SIGINT)
        told = console.wait_for("  esper-rllib ablate --resume", timeout=30)
        rc = console.proc.wait(timeout=120)
    finally:
        if console.proc.poll() is None:
            os.killpg(console.proc.pid, signal.SIGKILL)
    text = console.text()
    print(f"Ctrl-C output ({told - sent:.1f} s):\n" + text[text.index("interrupted"):])
    assert rc == 130 and told - sent < 5
    assert f"esper-rllib ablate --resume --storage {tmp_path} --name sweep" in text
    assert "Tuner.restore" not in text and "Traceback" not in text


# --- progress inside the first iteration ----------------------------------------------------

def test_the_first_iterations_progress_line():
    from esper_rllib.run.sampling_progress import sampling_line

    assert sampling_line("iter   1/8", (0, 160), (0, 4), 12.0, None) == (
        "iter   1/8: setting up (env runners build their envs and data) | 0:12")
    assert sampling_line("iter   1/8", (36, 160), (0, 4), 20.0, None) == (
        "iter   1/8: 36/160 env steps, 0/4 episodes sampled | 0:20, ETA ? to sample")
    # 40 env steps in the 30 s between two looks: 120 to go take 90 s.
    assert sampling_line("iter   1/8", (40, 160), (1, 4), 75.0, (30.0, 40)) == (
        "iter   1/8: 40/160 env steps, 1/4 episodes sampled | 1:15, ETA 1:30 to sample")
