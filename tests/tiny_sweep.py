"""Shared by the tuning tests: knobs for tiny but real trials, and running `esper-rllib`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A real env and module, shrunk so a trial takes seconds: 128 images, 3-epoch episodes.
TINY = {
    "n_train": 128, "n_val": 64, "max_epochs": 3, "episodes_per_batch": 2,
    "lstm_hidden": 8, "feature_dim": 8, "head_hidden": 8, "blueprint_head_hidden": (8,),
    "iterations": 2, "checkpoint_every": 1,
}


def tiny_args(**changes: object) -> list[str]:
    args = []
    for key, value in {**TINY, **changes}.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else value
        args += ["--set", f"{key}={text}"]
    return args


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("esper-rllib")), *args]


def env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=env(), capture_output=True, text=True,
                          timeout=timeout)
