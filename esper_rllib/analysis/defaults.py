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


def check_counts(reference_episodes: int, evaluate_episodes: int, signal_seeds: int = 0) -> None:
    """ConfigError naming the flag when a count of the report's episodes is not allowed (here,
    not beside the report, so that a bad flag is refused before the report's imports)."""
    from esper_rllib.knob import ConfigError

    if reference_episodes < 0:
        raise ConfigError(f"--reference-episodes {reference_episodes}: allowed: >= 0")
    # evaluate and signal need two episodes per policy for a spread.
    for flag, value in (("--evaluate-episodes", evaluate_episodes),
                        ("--signal-seeds", signal_seeds)):
        if value < 0 or value == 1:
            raise ConfigError(f"{flag} {value}: allowed: 0 (off) or an int >= 2")
