"""What ``esper-rllib record`` accepts, defined once as pure data: the behaviour policies it
plays besides a checkpoint (``behaviour``) and the most episodes one recording holds. The
recorder (``record``) and the command's parser both import them from here; this module imports
nothing (``esper-rllib --help`` must not wait for torch or Ray)."""

from __future__ import annotations

SCRIPTED = ("random", "heuristic")
POLICY_CHOICES = ("initial", *SCRIPTED)

# Env seeds of one recording: a block of this many from its base (``record.RECORD_SEED_BASE``
# + seed x SEED_STRIDE), so one recording holds at most SEED_STRIDE episodes.
SEED_STRIDE = 10_000
