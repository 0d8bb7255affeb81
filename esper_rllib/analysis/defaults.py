"""The analyses' defaults and seed blocks that the command-line parsers show, defined once as
pure data: the analyses (``evaluation``, ``signal``, ``render``) and the parsers both import
them from here, and this module imports nothing (``esper-rllib --help`` must not wait for torch
or Ray)."""

from __future__ import annotations

# Training envs are seeded seed x 10000 + runner offsets and go on from their own RNG: a block
# this far out is never a training episode's start (``evaluate --seeds``' default).
HELD_OUT_SEED = 500_000

# Episodes of the heuristic and WAIT-only references a report measures on a sweep's task.
REFERENCE_EPISODES = 2

EVALUATE_EPISODES = 4  # per trial and policy; each costs max_epochs env steps

# States the EV ceiling branches at by default, for a 95% interval of the Markov-state ceiling
# narrower than +-0.1 on `quick`: at 100 states it measured +-0.146 and its width falls as
# 1/sqrt(states) (docs/results/signal-honest-quick-aligned/), so 240 gives about +-0.094.
EV_STATES = 240
