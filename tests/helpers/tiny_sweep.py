"""Shared by the tuning tests: knobs for tiny but real trials, running `esper-rllib`, reading the
TensorBoard dashboard back."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def dashboard(events: Path) -> tuple[Any, set[str]]:
    """The custom-scalars layout in an event file and the file's scalar tags, both read with
    TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return layout, set(acc.Tags()["scalars"])


def unmatched_patterns(layout: Any, tags: set[str]) -> set[str]:
    """The charts' tag patterns that match no scalar tag (TensorBoard matches from the start)."""
    return {pattern for category in layout.category for chart in category.chart
            for pattern in chart.multiline.tag
            if not any(re.match(pattern, tag) for tag in tags)}


def never_defined(trial: Path) -> set[str]:
    """Our metrics that were NaN in every iteration of a trial (e.g. the entropy of a head that
    no sampled op used): TensorBoard gets no point for them."""
    from tuning.results import load_trial

    record = load_trial(trial)
    names = set().union(*record.metrics)
    return {n for n in names if all(math.isnan(v) for v in record.series(n))}
