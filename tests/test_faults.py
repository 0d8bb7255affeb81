"""Fault tolerance through the real command line: an env runner killed mid-run, a sweep driver
killed mid-sweep and resumed, and broken checkpoints given to --restore / --resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ray_procs import command_line, descendants, kill_trees

ESPER = str(Path(sys.executable).parent / "esper-rllib")
# Probe5 is a tiny env with a real RLlib pipeline behind it: iterations take a fraction of a
# second, so a run long enough to kill something in its middle stays cheap.
PROBE = ["--set", "env=esper/Probe5-v0", "--set", "episodes_per_batch=16"]


class Run:
    """A command-line run in its own process group, its output collected line by line."""

    def __init__(self, args: list, cwd: Path) -> None:
        env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1")
        env.pop("RAY_ADDRESS", None)  # each run starts its own local Ray, like a user's would
        self.proc = subprocess.Popen([ESPER, *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.lines: list = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line starting {prefix!r}:\n{self.output[-4000:]}")
            time.sleep(0.05)

    def actor_pids(self, class_name: str) -> list:
        """Pids of this run's Ray actors of one class (Ray titles them ray::<Class> when idle,
        ray::<Class>.<method> while running one)."""
        title = f"ray::{class_name}"
        return [pid for pid in descendants([self.proc.pid])
                if command_line(pid).split(" ")[0].split(".")[0] == title]

    def finish(self, timeout: float = 300.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        self._reader.join(timeout=10)
        return rc

    def stop(self) -> None:
        """Kill whatever of this run is left (its local Ray cluster included)."""
        kill_trees([self.proc])


def results(trial_dir: Path) -> list:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def env_runner_killed(tmp_path_factory):
    """`esper-rllib train` with one remote env runner, SIGKILLed after the first iteration."""
    storage = tmp_path_factory.mktemp("train_kill")
    iterations = 20
    run = Run(["train", *PROBE, "--set", "num_env_runners=1",
               "--set", "env_runner_restart_delay_s=0", "--iterations", str(iterations),
               "--checkpoint-every", "0", "--storage", str(storage), "--name", "kill"],
              cwd=storage)
    try:
        run.wait_for_line("iter   1 ")
        victims = run.actor_pids("SingleAgentEnvRunner")
        assert len(victims) == 1, f"expected one env runner, found {victims}"
        os.kill(victims[0], signal.SIGKILL)
        rc = run.finish()
    finally:
        run.stop()
    trial_dirs = sorted((storage / "kill").glob("PPO_*"))
    return {"rc": rc, "output": run.output, "iterations": iterations, "storage": storage,
            "trial_dir": trial_dirs[0] if trial_dirs else None, "victim": victims[0]}


def test_killed_env_runner_is_restarted_and_training_reaches_its_target(env_runner_killed):
    run = env_runner_killed
    assert run["rc"] == 0, run["output"][-4000:]
    rows = results(run["trial_dir"])
    # Every iteration up to the target was reported: the run did not stop at the failure.
    assert [r["training_iteration"] for r in rows] == list(range(1, run["iterations"] + 1))
    healthy = [r["fault_tolerance"]["num_healthy_workers"] for r in rows]
    restarts = [r["fault_tolerance"]["num_remote_worker_restarts"] for r in rows]
    # RLlib's own counters show the failure and the restart: the runner was out of service for
    # at least one iteration, then came back, and the restart was counted once.
    assert healthy[0] == 1 and 0 in healthy and healthy[-1] == 1, healthy
    assert restarts[0] == 0 and restarts[-1] == 1, restarts
    back = restarts.index(1)
    steps = [r["num_env_steps_sampled_lifetime"] for r in rows]
    # Sampling (and so training) really resumed after the restart, on the restarted runner.
    assert steps[-1] > steps[back - 1], steps
    assert all(b > a for a, b in zip(steps[back - 1:], steps[back:], strict=False)), steps


def _checkpoint(env_runner_killed) -> Path:
    checkpoints = sorted(env_runner_killed["trial_dir"].glob("checkpoint_*"))
    assert checkpoints, "the run wrote no checkpoint at its end"
    return checkpoints[-1]


def _restore(checkpoint: Path, storage: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.run([ESPER, "train", *PROBE, "--iterations", "1", "--restore",
                           str(checkpoint), "--storage", str(storage), "--name", "restored"],
                          env=env, capture_output=True, text=True, timeout=120)


def _assert_one_clear_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert all(w in lines[0] for w in words), lines[0]


def test_missing_checkpoint_gives_one_clear_error(tmp_path):
    proc = _restore(tmp_path / "checkpoint_000009", tmp_path / "runs")
    _assert_one_clear_error(proc, "--restore", "checkpoint_000009")
    assert not (tmp_path / "runs" / "restored").exists()


def test_truncated_checkpoint_gives_one_clear_error(env_runner_killed, tmp_path):
    broken = tmp_path / "checkpoint_000000"
    shutil.copytree(_checkpoint(env_runner_killed), broken)
    state = broken / "learner_group" / "learner" / "rl_module" / "default_policy"
    module_state = state / "module_state.pkl"
    # A copy cut short, as after a full disk or an interrupted upload.
    module_state.write_bytes(module_state.read_bytes()[: module_state.stat().st_size // 2])
    proc = _restore(broken, tmp_path / "runs")
    _assert_one_clear_error(proc, "--restore", "module_state.pkl")
    assert not (tmp_path / "runs" / "restored").exists()


def test_checkpoint_missing_a_file_gives_one_clear_error(env_runner_killed, tmp_path):
    broken = tmp_path / "checkpoint_000000"
    shutil.copytree(_checkpoint(env_runner_killed), broken)
    (broken / "algorithm_state.pkl").unlink()
    proc = _restore(broken, tmp_path / "runs")
    _assert_one_clear_error(proc, "--restore", "algorithm_state.pkl")
