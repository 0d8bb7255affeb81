"""Trial names: the swept axes first, short and readable (``gain=1.0,depth=2,coef=0.5,rng_seed=0``).

One label names a trial everywhere: its folder, Tune's trial name (console, TensorBoard's run
list) and the ``trial`` column of ablation.csv.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Short names of the knobs the named sweeps vary; any other axis is shown under its own name.
SHORT_NAMES: Mapping[str, str] = {
    "value_head_gain": "gain",
    "value_head_depth": "depth",
    "value_coef": "coef",
    "critic_variant": "critic",
    "num_epochs": "epochs",
    "value_target_norm": "norm",
    "max_grad_norm": "clip",
    "critic_lr_scale": "critic_lr",
    "critic_trunk": "trunk",
    "truncation_bootstrap": "bootstrap",
}
# What Tune replaces in a trial folder name (ray/tune/experiment/trial.py _generate_dirname):
# the label applies the same replacement, so it IS the folder name.
_NOT_IN_FOLDER_NAMES = re.compile(r'[/()<>:"\\|?*]')


def short_name(axis: str) -> str:
    return SHORT_NAMES.get(axis, axis)


def label(values: Mapping[str, Any]) -> str:
    """``axis=value`` pairs in the given order, with short axis names: a valid folder name."""
    text = ",".join(f"{short_name(axis)}={value}" for axis, value in values.items())
    return _NOT_IN_FOLDER_NAMES.sub("_", text)
