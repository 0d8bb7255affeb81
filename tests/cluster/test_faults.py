"""Fault tolerance through the real command line: an env runner killed mid-run, a sweep driver
killed mid-sweep and resumed, and a broken sweep state given to --resume. (Missing and truncated
`train --restore` checkpoints: tests/commands/test_train.py.)"""

import csv
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

from tests.helpers.ray_procs import command_line, descendants, kill_trees
from tuning.results import load_trial, read_results, trial_dirs
from tuning.saved_state import check_saved_state
from tuning.storage import StorageError

# Sweeps and runs through the real command line, killed and resumed.
pytestmark = pytest.mark.timeout(900)

ESPER = str(Path(sys.executable).parent / "esper-rllib")
# Probe5 is a tiny env with a real RLlib pipeline behind it: iterations take a fraction of a
# second, so a run long enough to kill something in its middle stays cheap.
PROBE = ["--set", "env=esper/Probe5-v0", "--set", "episodes_per_batch=16"]


class Run:
    """A command-line run in its own process group, its output collected line by line."""

    def __init__(self, args: list, cwd: Path, **env_vars: str) -> None:
        env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1", **env_vars)
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

    def actor_pids(self, class_suffix: str) -> list:
        """Pids of this run's Ray actors whose class name ends with ``class_suffix``. Ray titles
        an actor's process ray::<Class> (ray::<Class>.<method> while it runs one)."""
        titles = {pid: command_line(pid).split(" ")[0] for pid in descendants([self.proc.pid])}
        return [pid for pid, title in titles.items()
                if title.startswith("ray::") and title.split(".")[0].endswith(class_suffix)]

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


def trial_folders(experiment: Path) -> list:
    return sorted(p for p in experiment.iterdir() if p.is_dir()) if experiment.is_dir() else []


@pytest.mark.ray
def test_killed_env_runner_is_restarted_and_training_reaches_its_target(tmp_path):
    iterations = 20
    run = Run(["train", *PROBE, "--set", "num_env_runners=1",
               "--set", "env_runner_restart_delay_s=0", "--iterations", str(iterations),
               "--checkpoint-every", "0", "--storage", str(tmp_path), "--name", "kill"],
              cwd=tmp_path)
    try:
        run.wait_for_line(f"iter   1/{iterations} |")  # the first iteration done
        # RLlib's runner classes, and subclasses of them, are named *EnvRunner.
        victims = run.actor_pids("EnvRunner")
        assert len(victims) == 1, f"expected one env runner, found {victims}"
        os.kill(victims[0], signal.SIGKILL)  # as a crash or the OOM killer would
        rc = run.finish()
    finally:
        run.stop()
    assert rc == 0, run.output[-4000:]
    (trial,) = trial_folders(tmp_path / "kill")
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    # Every iteration up to the target was reported: the run did not stop at the failure.
    assert [r["training_iteration"] for r in rows] == list(range(1, iterations + 1))
    healthy = [r["fault_tolerance"]["num_healthy_workers"] for r in rows]
    restarts = [r["fault_tolerance"]["num_remote_worker_restarts"] for r in rows]
    print("num_healthy_workers:", healthy, "\nnum_remote_worker_restarts:", restarts)
    # RLlib's own counters show the failure and the restart: the runner was out of service for
    # at least one iteration, then came back, and the restart was counted once.
    assert healthy[0] == 1 and 0 in healthy and healthy[-1] == 1, healthy
    assert restarts[0] == 0 and restarts[-1] == 1, restarts
    back = restarts.index(1)
    steps = [r["num_env_steps_sampled_lifetime"] for r in rows]
    # Sampling (and so training) really resumed after the restart, on the restarted runner.
    assert all(b > a for a, b in zip(steps[back - 1:], steps[back:], strict=False)), steps


@pytest.mark.ray
def test_killed_trial_is_retried_from_its_last_checkpoint(tmp_path):
    """FailureConfig: a trial whose process dies (a node lost, an OOM kill) is restarted by Tune
    from its last checkpoint, and the sweep still ends with every iteration once."""
    iterations = 8
    run = Run(["ablate", "--sweep", "value_head", "--grid", "value_head_gain=1.0", "--grid",
               "value_head_depth=2", "--grid", "value_coef=1.0", "--seeds", "1", *PROBE,
               "--set", f"iterations={iterations}", "--set", "checkpoint_every=1",
               "--reference-episodes", "0", "--storage", str(tmp_path), "--name", "retry"],
              cwd=tmp_path)
    experiment = tmp_path / "retry"
    try:
        deadline = time.monotonic() + 300
        while not any(len(list(t.glob("checkpoint_*"))) >= 2 for t in trial_folders(experiment)):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.output[-3000:]
            time.sleep(0.02)
        # The trainable (the sweep's PPO subclass) runs the learner in its own actor process.
        victims = run.actor_pids("PPO")
        assert len(victims) == 1, f"expected one trial process, found {victims}"
        os.kill(victims[0], signal.SIGKILL)
        rc = run.finish()
    finally:
        run.stop()
    assert rc == 0, run.output[-4000:]
    # The console says which trial failed and why, once, then goes on with its retry.
    failed = [line for line in run.lines
              if line.startswith("gain=1.0,depth=2,coef=1.0 ") and " FAILED " in line]
    assert len(failed) == 1 and "full error: " in failed[0], run.output[-4000:]
    print("console:", failed[0])
    (trial,) = trial_dirs(experiment)
    rows = read_results(trial)
    assert load_trial(trial).iterations == list(range(1, iterations + 1))
    restored = [r["training_iteration"] for r in rows
                if r["iterations_since_restore"] < r["training_iteration"]]
    print("after the kill the trial went on from iteration", restored[:1], "pids:",
          sorted({r["pid"] for r in rows}))
    # Retried in a new process, from a checkpoint (not from scratch).
    assert victims[0] not in {r["pid"] for r in rows[-1:]}
    assert restored and restored[0] > 1, [(r["training_iteration"],
                                           r["iterations_since_restore"]) for r in rows]


SWEEP_ITERATIONS = 8
# Four one-cell-at-a-time trials, a checkpoint every iteration: when the driver dies, some trials
# have finished, one is usually half-way, the rest have not started.
SWEEP = ["ablate", "--sweep", "value_head", "--grid", "value_head_gain=1.0", "--grid",
         "value_head_depth=2", "--grid", "value_coef=0.5,1.0", "--seeds", "2",
         "--max-concurrent", "1", *PROBE, "--set", f"iterations={SWEEP_ITERATIONS}",
         "--set", "checkpoint_every=1", "--reference-episodes", "0"]


def iterations_done(experiment: Path) -> dict:
    """Trial folder name -> training iterations in its result.json, as written."""
    return {r.parent.name: [row["training_iteration"] for row in read_results(r.parent)]
            for r in experiment.glob("*/result.json")}


def sweep_on_disk(experiment: Path) -> dict:
    """Trial folder name -> (checkpoints written, result.json lines). The trial writes its
    checkpoints itself; the driver syncs result lines to storage with its saved sweep state."""
    state = {}
    for trial in trial_folders(experiment):
        result = trial / "result.json"
        lines = len(result.read_text().splitlines()) if result.is_file() else 0
        state[trial.name] = (len(list(trial.glob("checkpoint_*"))), lines)
    return state


def state_is_whole(experiment: Path) -> bool:
    """Whether the saved sweep state parses right now. Tune copies it to storage in the
    background without an atomic rename, so a kill during that copy leaves it cut short: then
    --resume refuses with one clear error (test below). Here the driver is killed outside
    that window, as almost every real crash is."""
    try:
        check_saved_state(str(experiment))
        return True
    except (StorageError, OSError):
        return False


@pytest.fixture(scope="module")
def driver_killed(tmp_path_factory):
    """An ablate sweep whose driver is SIGKILLed once >= 1 trial has finished (all its results
    written), ideally while another is half-way; returns what was on disk at that moment."""
    storage = tmp_path_factory.mktemp("sweep_kill")
    experiment = storage / "killed"
    run = Run([*SWEEP, "--storage", str(storage), "--name", "killed"], cwd=storage)
    strays: set = set()
    try:
        deadline = time.monotonic() + 400
        while True:
            state = sweep_on_disk(experiment)
            finished = [t for t, (_, lines) in state.items() if lines == SWEEP_ITERATIONS]
            halfway = [t for t, (ckpts, lines) in state.items()
                       if ckpts and lines < SWEEP_ITERATIONS]
            if finished and (halfway or len(finished) >= 2) and state_is_whole(experiment):
                break
            assert run.proc.poll() is None, "the sweep ended before it could be killed:\n" + \
                run.output[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.02)
        # Its Ray's processes, noted while they are still its descendants: once the driver is
        # dead they are init's children, and a trial actor left alive would go on writing into
        # the sweep folder while --resume runs.
        strays = descendants([run.proc.pid])
        run.proc.send_signal(signal.SIGKILL)  # the driver only: no chance to save anything
        run.proc.wait(timeout=30)
    finally:
        left = kill_trees([run.proc], also=strays)  # then whatever it left behind
    assert not left, f"processes of the killed sweep still alive: {sorted(left)}"
    before = {t.name: (t / "result.json").read_text() if (t / "result.json").is_file() else ""
              for t in trial_folders(experiment)}
    pristine = storage / "pristine"
    shutil.copytree(experiment, pristine)
    return {"storage": storage, "experiment": experiment, "pristine": pristine,
            "state": sweep_on_disk(experiment), "before": before}


# A resume of the 4-trial sweep takes 25-80 s on the loaded 2-core machine; one hung once in CI
# (600 s) and was not reproduced in 14 runs with varied kill points (issue 36).
RESUME_S = 300


def _ablate_resume(storage: Path, name: str) -> subprocess.CompletedProcess:
    """`ablate --resume`, bounded: past RESUME_S one line says so, with where each of its
    processes waits (py-spy's stacks) for the next time it hangs."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    argv = [ESPER, "ablate", "--resume", "--storage", str(storage), "--name", name]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=storage, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=RESUME_S)
    except subprocess.TimeoutExpired:
        tree = descendants([proc.pid])
        stacks = _stacks([proc.pid, *sorted(tree)])
        kill_trees([proc], also=tree)
        out, err = proc.communicate()
        raise AssertionError(f"ablate --resume still running after {RESUME_S} s; its stderr's "
                             f"end and where each of its processes waited:\n{err[-3000:]}\n"
                             f"{stacks}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _stacks(pids: list) -> str:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.is_file():
        return "(no py-spy beside this Python: no stacks)"
    dumps = [subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                            text=True, timeout=60) for pid in pids]
    return "\n".join(f"--- pid {pid} {command_line(pid)[:120]}\n{d.stdout[-4000:]}"
                     for pid, d in zip(pids, dumps, strict=True))


@pytest.mark.ray
def test_sweep_driver_killed_then_resumed_finishes_every_trial_exactly_once(driver_killed):
    killed = driver_killed
    experiment = killed["experiment"]
    print("(checkpoints, result lines) per trial at the kill:", killed["state"])
    resumed = _ablate_resume(killed["storage"], "killed")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    final = iterations_done(experiment)
    print("iterations in result.json after --resume:", final)
    assert len(final) == 4, sorted(final)  # no trial lost, none started twice in a new folder
    everything = list(range(1, SWEEP_ITERATIONS + 1))
    for trial, its in final.items():
        before = killed["before"].get(trial)
        if before is None:  # not started at the kill: ran once, after the resume
            assert its == everything, (trial, its)
            continue
        # Started before the kill: it goes on from the last checkpoint Tune's saved sweep state
        # knew of (or from scratch if none) and may repeat the iterations since; what
        # ablation.csv and the report read holds each iteration once (the latest).
        assert load_trial(experiment / trial).iterations == everything, (trial, its)
        rows = read_results(experiment / trial)
        went_on = next((r["training_iteration"] for r in rows
                        if r["iterations_since_restore"] < r["training_iteration"]), 1)
        now = (experiment / trial / "result.json").read_text()
        print(f"trial {killed['state'][trial]} at the kill:", "untouched" if now == before else
              f"went on from iteration {went_on}, {len(its) - len(set(its))} repeated")
        # Nothing reported before the checkpoint it went on from was lost.
        kept = [line for line in before.splitlines()
                if json.loads(line)["training_iteration"] < went_on]
        assert now.splitlines()[: len(kept)] == kept, trial
    with open(experiment / "ablation.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in table) == sorted(final)
    assert all(int(r["iterations"]) == SWEEP_ITERATIONS for r in table)


def _assert_one_clear_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]  # one line, no traceback
    assert all(w in lines[0] for w in words), lines[0]


def test_resume_of_a_missing_sweep_is_one_clear_error(tmp_path):
    proc = _ablate_resume(tmp_path, "never-ran")
    _assert_one_clear_error(proc, "--resume", "never-ran")


@pytest.mark.parametrize("saved", ["experiment_state-*.json", "tuner.pkl"])
@pytest.mark.ray
def test_resume_with_truncated_sweep_state_is_one_clear_error(driver_killed, tmp_path, saved):
    broken = tmp_path / "broken"
    shutil.copytree(driver_killed["pristine"], broken)
    (state,) = broken.glob(saved)
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # cut short
    proc = _ablate_resume(tmp_path, "broken")
    _assert_one_clear_error(proc, "--resume", state.name, "truncated or corrupt")
    # Nothing was run or written into the broken sweep.
    assert sorted(p.name for p in broken.iterdir()) == sorted(
        p.name for p in driver_killed["pristine"].iterdir())
