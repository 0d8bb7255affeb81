"""The seed document's two runs (its failure analysis of the reference PPO run) as knob values,
defined once: the broken run's value head and value_coef, and the fix (a deeper head with
LayerNorm and a small output gain, value_coef 1.0).

Pure data for every layer that names them: the model's presets (the value-head keys), the run's
presets (all four), the sweeps' base (``tuning.sweeps``, which may import it, see
``tests/test_layout.py``) and the report's named cells.

The seed document: docs/seed-document.md."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

BROKEN_RUN: Mapping[str, Any] = MappingProxyType({
    "value_head_depth": 2, "value_head_layernorm": False, "value_head_gain": 1.0,
    "value_coef": 0.5,
})
FIX: Mapping[str, Any] = MappingProxyType({
    "value_head_depth": 4, "value_head_layernorm": True, "value_head_gain": 0.01,
    "value_coef": 1.0,
})
