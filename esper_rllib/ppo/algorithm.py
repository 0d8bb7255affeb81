"""``EsperPPO``: RLlib's PPO whose checkpoints also keep the envs' reward scale.

A `running_std` reward (the `shaped` reward's default) is divided by a running std that lives in
each env (``SeedMorphogenesisEnv.reward_scale``) and spans the run. RLlib 2.60 checkpoints the
local env runner's connector states only (``Algorithm.get_state``); the remote env runners'
envs, where sampling happens, would restart from a scale of 1 on ``train --restore`` or when
Tune restores a failed trial, so the first batch after a restore would be scaled up to 10x. The
checkpoint keeps one scale pooled over every env of every runner (they all see the same reward
distribution); a restore gives it to every env, so a restore onto a different number of runners
works too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ray.rllib.algorithms.ppo import PPO

from envs.rewards import RunningStd

# The algorithm state's key for the pooled reward scale: (count, mean, m2).
REWARD_SCALE_STATE = "esper_reward_scale"


def env_reward_scales(runner: Any) -> list[RunningStd]:
    """The reward scale of each env an env runner samples from (none without envs)."""
    vector = getattr(runner, "env", None)
    if vector is None:
        return []
    subs = getattr(vector.unwrapped, "envs", [])
    return [scale for env in subs
            if isinstance(scale := getattr(env.unwrapped, "reward_scale", None), RunningStd)]


def _runner_states(runner: Any) -> list[tuple[int, float, float]]:
    return [scale.state() for scale in env_reward_scales(runner)]


def _set_runner_states(state: tuple[int, float, float]) -> Any:
    def apply(runner: Any) -> None:
        for scale in env_reward_scales(runner):
            scale.set_state(state)

    return apply


class EsperPPO(PPO):
    def get_state(self, components: str | Collection[str] | None = None, *,
                  not_components: str | Collection[str] | None = None,
                  **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if components is None and self.env_runner_group is not None:
            per_runner = self.env_runner_group.foreach_env_runner(
                _runner_states, local_env_runner=True)
            state[REWARD_SCALE_STATE] = RunningStd.pooled(
                [s for states in per_runner for s in states])
        return state

    def set_state(self, state: dict[str, Any]) -> Any:
        scale = state.get(REWARD_SCALE_STATE)
        if scale is not None and self.env_runner_group is not None:
            self.env_runner_group.foreach_env_runner(
                _set_runner_states(tuple(scale)), local_env_runner=True)
        return super().set_state(state)
