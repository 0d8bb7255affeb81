"""A busy machine starves Ray's env runners (nice 15): an iteration waits for its episodes by
default, and a sample timeout that passes with no episode stops the run with one line instead of
training on nothing for hours ("env steps 0 | EV n/a")."""

import os
import subprocess
import sys

import pytest

from esper_rllib.run.config import resolve_knobs
from esper_rllib.run.profiles import PROFILES


def test_every_profile_waits_for_its_episodes():
    for profile in PROFILES:
        assert resolve_knobs(profile)["sample_timeout_s"] is None, profile


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_a_timeout_with_no_episodes_stops_the_run_with_one_line(tmp_path):
    # A remote env runner (the local one samples in the driver: no timeout applies); episodes
    # of 40 host epochs take far longer than the 1 s allowed.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "esper_rllib.cli", "train", "--profile", "quick",
         "--set", "sample_timeout_s=1", "--set", "num_env_runners=1", "--set", "n_train=512",
         "--iterations", "2",
         "--storage", str(tmp_path), "--name", "busy"],
        env=env, capture_output=True, text=True, timeout=360)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "iteration 1 sampled no episodes within sample_timeout_s=1 s" in out, out[-3000:]
    assert "env steps       0" not in out  # no empty iteration reported as trained
