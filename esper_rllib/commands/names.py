"""The names and defaults the argument parsers show, without importing the modules that define
them (those import torch or Ray, and ``esper-rllib --help`` must not wait for either).

Each is a copy of its definition's value; ``tests/test_cli_help.py`` checks that they agree.
"""

from __future__ import annotations

# run.config.PROFILES and PRESETS (their keys, in order).
PROFILES = ("quick", "batch64", "standard", "seed")
DEFAULT_PROFILE = "quick"
PRESETS = ("seed_before", "seed_after")

# offline.behaviour.POLICY_CHOICES: the behaviour policies `record` plays besides a checkpoint.
RECORD_POLICIES = ("initial", "random", "heuristic")
# offline.record.SEED_STRIDE: the most episodes one recording holds (its env seeds' block).
RECORD_MAX_EPISODES = 10_000

# analysis.evaluation: the report's reference and evaluation episodes, the first held-out seed.
REFERENCE_EPISODES = 2
EVALUATE_EPISODES = 4
HELD_OUT_SEED = 500_000

# analysis.signal.EV_STATES: the states the EV ceiling branches at (`signal --ev-states`).
EV_STATES = 100
